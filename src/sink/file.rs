//! Files that appear whole or not at all.
//!
//! An [`AtomicFile`] is written beside its target under a hidden temporary name, fsynced, and
//! renamed over the target only when complete; dropping it unfinished removes the temporary file.
//! [`commit_all`] puts several files in place together (CSV and Parquet: both or neither): their
//! renames are recorded in a journal first, so that a run killed between two renames (SIGKILL;
//! signals wait for the commit) is completed by the next run on the same output ([`recover`]).
//! A full disk is reported as such, naming the file.

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use tempfile::NamedTempFile;

use super::target::Target;
use crate::fault;

/// A file being written under a temporary name beside its target.
pub struct AtomicFile {
    temp: NamedTempFile,
    target: PathBuf,
    /// Bytes written so far, and how many of them the kernel was asked to write back.
    written: u64,
    flushed: u64,
}

/// Every this many bytes, the kernel is asked to start writing the file back (without waiting),
/// so the fsync before the rename has little left to do.
const WRITE_BACK: u64 = 8 << 20;

impl AtomicFile {
    /// Starts writing `target`; nothing at `target` changes until [`commit_all`].
    pub fn create(target: &Target) -> Result<Self> {
        let folder = target.path.parent().unwrap_or(Path::new("/"));
        if target.create_folder() {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("creating folder {}", folder.display()))?;
        }
        // A new file gets the permissions Python's open() gave (0666 less the umask); a replaced
        // one keeps its own.
        let permissions = std::fs::metadata(&target.path)
            .map(|m| m.permissions())
            .unwrap_or_else(|_| Permissions::from_mode(0o666));
        let temp = tempfile::Builder::new()
            .prefix(&temp_prefix(&target.path))
            .suffix(TEMP_SUFFIX)
            .rand_bytes(TEMP_RANDOM)
            .permissions(permissions)
            .tempfile_in(folder)
            .map_err(|e| io_error(e, &target.path))
            .with_context(|| format!("creating a file in {}", folder.display()))?;
        Ok(Self {
            temp,
            target: target.path.clone(),
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

    /// Puts the finished file at `target` instead (a name known only at the end), in the same
    /// folder as the temporary file.
    pub fn retarget(&mut self, target: &Path) {
        self.target = target.to_owned();
    }

    fn sync(&mut self) -> Result<()> {
        self.temp
            .flush()
            .and_then(|()| self.temp.as_file().sync_all())
            .map_err(|e| io_error(e, &self.target))
            .with_context(|| format!("writing {}", self.target.display()))
    }
}

impl Write for AtomicFile {
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

/// `e`, saying which file could not be written when the disk is full.
fn io_error(e: io::Error, target: &Path) -> io::Error {
    if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC) {
        return io::Error::new(
            io::ErrorKind::StorageFull,
            format!("no space left on device writing {}", target.display()),
        );
    }
    e
}

/// Temporary files are `.{name}.XXXXXX.tmp` beside the target `name` (`XXXXXX` random).
const TEMP_SUFFIX: &str = ".tmp";
const TEMP_RANDOM: usize = 6;

/// Whether `file` is a temporary file of `target` (and not of a target whose name merely
/// starts the same way, as `x.csv` starts `x.csv.gz`).
fn is_temporary_of(file: &str, target: &Path) -> bool {
    let random = file
        .strip_prefix(&temp_prefix(target))
        .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX))
        .map(|rest| rest.strip_prefix("previous.").unwrap_or(rest));
    random.is_some_and(|r| r.len() == TEMP_RANDOM && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn temp_prefix(target: &Path) -> String {
    format!(".{}.", file_name(target))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Makes `target` whole again after a killed run, for the holder of its lock (no other process
/// writes it): completes a commit that was interrupted between its renames (the journal names
/// finished, fsynced files), then removes temporary files. Returns how many it removed.
pub fn recover(target: &Path) -> Result<usize> {
    Journal::complete(target)?;
    let Some(folder) = target.parent() else {
        return Ok(0);
    };
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if is_temporary_of(&entry.file_name().to_string_lossy(), target) {
            let path = entry.path();
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Syncs every file, then renames each over its target; when a rename fails, the targets
/// already replaced get their previous contents back, so either all change or none does. A
/// signal cannot stop it half-way ([`crate::cancel`]); a SIGKILL can, and the journal lets the
/// next run on the same output finish it.
pub fn commit_all(mut files: Vec<AtomicFile>) -> Result<()> {
    for file in &mut files {
        file.sync()?;
    }
    let journal = if files.len() > 1 {
        Some(Journal::write(&files)?)
    } else {
        None
    };
    let previous = files
        .iter()
        .map(|f| Previous::keep(&f.target))
        .collect::<Result<Vec<_>>>()?;
    for (done, file) in files.into_iter().enumerate() {
        if done == 1 {
            fault::point("commit.between-renames");
        }
        let target = file.target.clone();
        if let Err(e) = file.temp.persist(&target) {
            previous[..done].iter().for_each(Previous::restore);
            if let Some(journal) = &journal {
                journal.remove();
            }
            return Err(io_error(e.error, &target))
                .with_context(|| format!("moving the finished file to {}", target.display()));
        }
    }
    for folder in previous.iter().filter_map(|p| p.target.parent()) {
        sync_folder(folder);
    }
    if let Some(journal) = journal {
        journal.remove();
    }
    Ok(())
}

/// A rename is durable once its folder is synced (best effort where unsupported).
fn sync_folder(folder: &Path) {
    let _ = File::open(folder).and_then(|f| f.sync_all());
}

/// The renames of a group commit, written (and synced) before the first one:
/// `.{first target}.commit` beside the first target, JSON pairs `[temporary, target]`.
struct Journal {
    path: PathBuf,
}

impl Journal {
    fn path(target: &Path) -> PathBuf {
        target.with_file_name(format!(".{}.commit", file_name(target)))
    }

    fn write(files: &[AtomicFile]) -> Result<Self> {
        let pairs: Vec<(&Path, &Path)> = files
            .iter()
            .map(|f| (f.temp.path(), f.target.as_path()))
            .collect();
        let path = Self::path(&files[0].target);
        let text = serde_json::to_vec(&pairs)?;
        let write = || -> io::Result<()> {
            let mut file = File::create(&path)?;
            file.write_all(&text)?;
            file.sync_all()
        };
        write()
            .map_err(|e| io_error(e, &path))
            .with_context(|| format!("writing {}", path.display()))?;
        if let Some(folder) = path.parent() {
            sync_folder(folder);
        }
        Ok(Self { path })
    }

    /// Finishes the commit a killed run left in the journal of `target`, if any.
    fn complete(target: &Path) -> Result<()> {
        let path = Self::path(target);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        // A journal cut short was never acted on: no rename had started.
        if let Ok(pairs) = serde_json::from_slice::<Vec<(PathBuf, PathBuf)>>(&text) {
            for (temp, target) in pairs.iter().filter(|(temp, _)| temp.exists()) {
                std::fs::rename(temp, target).with_context(|| {
                    format!("completing the interrupted commit of {}", target.display())
                })?;
                if let Some(folder) = target.parent() {
                    sync_folder(folder);
                }
            }
        }
        Self { path }.remove();
        Ok(())
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The file a commit is about to replace, kept (as a hard link, `.{name}.previous.XXXXXX.tmp`)
/// until the commit succeeds.
struct Previous {
    target: PathBuf,
    kept: Option<tempfile::TempPath>,
}

impl Previous {
    fn keep(target: &Path) -> Result<Self> {
        let kept = if target.is_file() {
            let folder = target.parent().unwrap_or(Path::new("/"));
            let link = tempfile::Builder::new()
                .prefix(&format!("{}previous.", temp_prefix(target)))
                .suffix(TEMP_SUFFIX)
                .rand_bytes(TEMP_RANDOM)
                .make_in(folder, |p| std::fs::hard_link(target, p))
                .with_context(|| {
                    format!(
                        "keeping {} until the new file is in place",
                        target.display()
                    )
                })?;
            Some(link.into_temp_path())
        } else {
            None
        };
        Ok(Self {
            target: target.to_owned(),
            kept,
        })
    }

    fn restore(&self) {
        let _ = match &self.kept {
            Some(kept) => std::fs::rename(kept, &self.target),
            None => std::fs::remove_file(&self.target),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_removes_the_temporaries_of_its_target_only() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::resolve(Some(Path::new("a.csv")), "d.csv", dir.path()).unwrap();
        let mut left = AtomicFile::create(&target).unwrap();
        left.write_all(b"partial").unwrap();
        let partial = left.temp.path().to_owned();
        std::mem::forget(left); // as if the process had been killed
        let other = dir.path().join(".b.csv.x.tmp");
        std::fs::write(&other, "other").unwrap();
        let longer = dir.path().join(".a.csv.gz.abcdef.tmp");
        std::fs::write(&longer, "another target's").unwrap();
        assert_eq!(recover(&target.path).unwrap(), 1);
        assert!(!partial.exists() && other.exists() && longer.exists());
    }

    #[test]
    fn nothing_appears_until_commit_and_an_abandoned_file_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::resolve(Some(Path::new("a.csv")), "d.csv", dir.path()).unwrap();
        std::fs::write(&target.path, "old").unwrap();
        let mut file = AtomicFile::create(&target).unwrap();
        file.write_all(b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target.path).unwrap(), "old");
        drop(file);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut file = AtomicFile::create(&target).unwrap();
        file.write_all(b"new").unwrap();
        commit_all(vec![file]).unwrap();
        assert_eq!(std::fs::read_to_string(&target.path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_commit_killed_between_renames_is_completed_by_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let target =
            |name: &str| Target::resolve(Some(Path::new(name)), "d.csv", dir.path()).unwrap();
        let (a, b) = (target("a.csv"), target("a.parquet"));
        std::fs::write(&a.path, "old a").unwrap();
        std::fs::write(&b.path, "old b").unwrap();
        let mut files = vec![
            AtomicFile::create(&a).unwrap(),
            AtomicFile::create(&b).unwrap(),
        ];
        files[0].write_all(b"new a").unwrap();
        files[1].write_all(b"new b").unwrap();
        files.iter_mut().for_each(|f| f.sync().unwrap());
        // What commit_all does up to its first rename, then a SIGKILL.
        let journal = Journal::write(&files).unwrap();
        let mut files = files.into_iter();
        files.next().unwrap().temp.persist(&a.path).unwrap();
        let unrenamed = files.next().unwrap().temp.into_temp_path().keep().unwrap();
        assert_eq!(std::fs::read_to_string(&a.path).unwrap(), "new a");
        assert_eq!(std::fs::read_to_string(&b.path).unwrap(), "old b");
        assert!(journal.path.exists() && unrenamed.exists());
        recover(&a.path).unwrap();
        assert_eq!(std::fs::read_to_string(&b.path).unwrap(), "new b");
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a.csv", "a.parquet"]);
    }
}
