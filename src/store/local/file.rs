//! A file of a local folder being written: a hidden temporary beside its target with the
//! target's permissions (owner-only by default), never through a symlink planted in its place,
//! renamed over the target at commit. A full disk is reported as such, naming the file.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use tempfile::NamedTempFile;

use super::names::beside;
use crate::store::api::Options;
use crate::store::file::{full_disk_writing, Body};

/// Every this many bytes, the kernel is asked to start writing the file back (without waiting),
/// so the fsync before the rename has little left to do: with 8 MB, the fsync of a slice's 8 MB
/// CSV took 5.3 ms, with 1 MB 0.6 ms; a 740 MB export runs as fast either way.
const WRITE_BACK: u64 = 1 << 20;

/// The bytes of a local file until its commit.
pub struct LocalBody {
    temp: NamedTempFile,
    target: PathBuf,
    /// Bytes written so far, and how many of them the kernel was asked to write back.
    written: u64,
    flushed: u64,
}

impl LocalBody {
    /// Starts a temporary file beside `target`.
    pub fn create(target: &Path, options: &Options) -> Result<Self> {
        let folder = folder_of(target, options)?;
        let mode = std::os::unix::fs::PermissionsExt::from_mode(options.mode);
        let temp = beside(target, |b| b.permissions(mode).tempfile_in(folder))
            .map_err(|e| io_error(e, target))
            .with_context(|| format!("creating a file in {}", folder.display()))?;
        // The umask may have taken bits away from an explicit --mode: set it exactly.
        temp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(options.mode))
            .with_context(|| format!("setting the permissions of {}", target.display()))?;
        Ok(Self {
            temp,
            target: target.to_owned(),
            written: 0,
            flushed: 0,
        })
    }

    /// Starts the write-back of what was written since the last call, once there is enough.
    fn start_write_back(&mut self) {
        if self.written - self.flushed < WRITE_BACK {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            // SAFETY: a valid descriptor and range; the call only schedules I/O. Failure is
            // harmless: the fsync at commit writes everything anyway.
            unsafe {
                libc::sync_file_range(
                    self.temp.as_file().as_raw_fd(),
                    self.flushed as libc::off64_t,
                    (self.written - self.flushed) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.flushed = self.written;
    }
}

impl Write for LocalBody {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .temp
            .write(buf)
            .map_err(|e| io_error(e, &self.target))?;
        self.written += n as u64;
        self.start_write_back();
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush().map_err(|e| io_error(e, &self.target))
    }
}

impl Body for LocalBody {
    fn sync(&mut self) -> io::Result<()> {
        self.temp
            .flush()
            .and_then(|()| self.temp.as_file().sync_all())
            .map_err(|e| io_error(e, &self.target))
    }

    fn staged_name(&self) -> Option<String> {
        self.temp
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    }

    fn put_in_place(self: Box<Self>, key: &str) -> io::Result<()> {
        self.temp
            .persist(key)
            .map(drop)
            .map_err(|e| io_error(e.error, Path::new(key)))
    }
}

/// The folder `target` goes in, created (with the files' folder mode) when the tool owns it.
pub fn folder_of<'a>(target: &'a Path, options: &Options) -> Result<&'a Path> {
    let folder = target.parent().unwrap_or(Path::new("/"));
    if options.create_folder {
        create_folder(folder, options.mode)
            .with_context(|| format!("creating folder {}", folder.display()))?;
    }
    Ok(folder)
}

/// Creates `folder` (and its parents) where missing, with the folder permissions of files of
/// `mode`: execute (search) where read is allowed.
pub fn create_folder(folder: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(folder_mode(mode))
        .create(folder)
}

/// The permissions of folders the tool creates for files of `mode`.
pub fn folder_mode(mode: u32) -> u32 {
    mode | ((mode & 0o444) >> 2)
}

/// `e`, saying which file could not be written when the disk is full.
pub fn io_error(e: io::Error, target: &Path) -> io::Error {
    full_disk_writing(e, &target.display().to_string())
}

/// Creates `path` for writing, failing if anything (a symlink included) is already there.
pub fn create_new(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// A rename is durable once its folder is synced (best effort where unsupported).
pub fn sync_folder(folder: &Path) {
    let _ = File::open(folder).and_then(|f| f.sync_all());
}

#[cfg(test)]
mod tests {
    #[test]
    fn folders_get_execute_where_files_get_read() {
        assert_eq!(super::folder_mode(0o640), 0o750);
        assert_eq!(super::folder_mode(0o600), 0o700);
    }
}
