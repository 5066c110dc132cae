//! A dataset in a local folder: written under a hidden temporary name beside its target, every
//! part put in place inside it as it is finished (unsynced), the whole folder made durable at
//! once and swapped in at commit (`renameat2(RENAME_EXCHANGE)` when it replaces one: readers see
//! the old folder or the new, never a mix), the old one removed after.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

#[cfg(not(target_os = "linux"))]
use super::file::sync_folder;
use super::file::{create_new, folder_mode, folder_of};
use super::names::beside;
use crate::store::api::{Options, StagedDir, DATASET_MARKER as MARKER};
use crate::store::file::{AtomicFile, Written};

/// A dataset folder being written under a temporary name beside its target.
pub struct AtomicDir {
    path: PathBuf,
    target: String,
    token: String,
    files: Vec<Written>,
    /// Removes the folder unless it was put in place.
    cleanup: Option<tempfile::TempDir>,
}

impl AtomicDir {
    /// Starts a dataset for `target`; nothing at `target` changes until it is committed.
    pub fn create(target: &Path, options: &Options) -> Result<Self> {
        let folder = folder_of(target, options)?;
        let mode = std::os::unix::fs::PermissionsExt::from_mode(folder_mode(options.mode));
        let dir = beside(target, |b| b.permissions(mode).tempdir_in(folder))
            .with_context(|| format!("creating a folder in {}", folder.display()))?;
        let token = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::io::Write::write_all(&mut create_new(&dir.path().join(MARKER))?, token.as_bytes())?;
        Ok(Self {
            path: dir.path().to_owned(),
            target: target.display().to_string(),
            token,
            files: Vec::new(),
            cleanup: Some(dir),
        })
    }

    /// Finishes the commit of the staged folder `temp` (token `token`) to `target` that a
    /// killed run left half-done.
    pub fn complete(temp: &Path, target: &Path, token: &str) -> std::io::Result<()> {
        let staged = |dir: &Path| std::fs::read_to_string(dir.join(MARKER)).ok();
        if staged(temp).as_deref() == Some(token) {
            swap_in(temp, target)?;
        }
        if temp.exists() {
            std::fs::remove_dir_all(temp)?;
        }
        Ok(())
    }
}

impl StagedDir for AtomicDir {
    fn target(&self) -> &str {
        &self.target
    }

    fn part_key(&self, relative: &str) -> String {
        self.path.join(relative).display().to_string()
    }

    /// Puts the part at its name inside the dataset, unsynced: the whole dataset is made
    /// durable at once before it is swapped in.
    fn add(&mut self, file: AtomicFile) -> Result<()> {
        let record = file.written();
        let shown = file.shown().to_owned();
        file.put_in_place()
            .with_context(|| format!("writing {shown}"))?;
        self.files.push(record);
        Ok(())
    }

    /// Makes the whole folder durable, its files and its entries, at once: one `syncfs` of its
    /// file system instead of an fsync per part (hundreds of them for a year of days).
    fn sync(&mut self) -> Result<()> {
        let folder = std::fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            // SAFETY: a valid descriptor; syncfs only writes back.
            if unsafe { libc::syncfs(folder.as_raw_fd()) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("writing {}", self.target));
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            for file in &self.files {
                std::fs::File::open(&file.key)?.sync_all()?;
            }
            sync_folder(&self.path);
        }
        drop(folder);
        Ok(())
    }

    fn records(&self) -> Vec<Written> {
        let staged = self.path.display().to_string();
        self.files
            .iter()
            .map(|f| {
                let mut f = f.clone();
                if let Some(relative) = f.key.strip_prefix(&staged) {
                    f.key = format!("{}{relative}", self.target);
                }
                f
            })
            .collect()
    }

    fn staged(&self) -> Option<(String, String)> {
        let name = self.path.file_name()?.to_string_lossy().into_owned();
        Some((name, self.token.clone()))
    }

    /// A swap with the dataset it replaces, which is then removed.
    fn put_in_place(mut self: Box<Self>) -> std::io::Result<()> {
        let kept = self.cleanup.take().map(tempfile::TempDir::keep);
        swap_in(&self.path, Path::new(&self.target))?;
        if self.path.exists() {
            std::fs::remove_dir_all(&self.path)?;
        }
        drop(kept);
        Ok(())
    }
}

/// `rename` when nothing is at `target`; else an atomic exchange, leaving the old folder at
/// `temp`.
fn swap_in(temp: &Path, target: &Path) -> std::io::Result<()> {
    if !target.exists() {
        return std::fs::rename(temp, target);
    }
    use std::os::unix::ffi::OsStrExt as _;
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (from, to) = (c(temp)?, c(target)?);
    // SAFETY: valid NUL-terminated paths; renameat2 only renames.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
