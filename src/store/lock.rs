//! One run at a time per output: an exclusive lock on a hidden file beside what the run writes
//! (an export's file, an incremental state, a change feed's slot), holding the holder's pid.
//!
//! The lock is `flock`'s, so the kernel releases it when its holder dies, even by SIGKILL. The
//! file is removed when the run ends; a run that finds the path replaced after locking (because
//! the holder removed it meanwhile) locks again, so two runs never both believe they hold it.
//! While it is held, the holder may clean up what killed runs left for the same output. Folders
//! a lock had to create (a default `exports/`) are removed with it when they are left empty: a run
//! refused after its lock was taken leaves nothing behind.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

/// A held lock; released (and its file removed) on drop.
pub struct RunLock {
    file: File,
    path: PathBuf,
    /// The folders taking the lock created, innermost first.
    created: Vec<PathBuf>,
}

/// Whether to wait for the holder or refuse at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    No,
    /// Wait, saying so on stderr unless quiet.
    Yes {
        quiet: bool,
    },
}

impl RunLock {
    /// Locks `path` for the run; `what` names what is locked in messages ("slot nightly").
    pub fn acquire(path: &Path, what: &str, wait: Wait) -> Result<Self> {
        let created: Vec<PathBuf> = path
            .ancestors()
            .skip(1)
            .take_while(|folder| !folder.as_os_str().is_empty() && !folder.exists())
            .map(Path::to_owned)
            .collect();
        loop {
            if let Some(folder) = path.parent() {
                use std::os::unix::fs::DirBuilderExt as _;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(folder)
                    .with_context(|| format!("creating folder {}", folder.display()))?;
            }
            // Never through a symlink planted at the lock's name.
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path);
            let mut file = match opened {
                // The holder it waited behind removed the folder it had made: make it again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                opened => {
                    opened.with_context(|| format!("creating lock file {}", path.display()))?
                }
            };
            if file.try_lock().is_err() {
                let holder = holder(&mut file);
                match wait {
                    Wait::No => bail!(
                        "{what} is in use by another export-events run ({holder}; lock {}): wait \
                         for it to finish, or pass --wait",
                        path.display()
                    ),
                    Wait::Yes { quiet } => {
                        if !quiet {
                            eprintln!(
                                "export-events: waiting for the other run using {what} ({holder})"
                            );
                        }
                        // Polled, not a blocking lock(): SIGINT/SIGTERM must end the wait.
                        while file.try_lock().is_err() {
                            if crate::cancel::requested() {
                                return Err(crate::cancel::Interrupted.into());
                            }
                            std::thread::sleep(std::time::Duration::from_millis(50));
                        }
                    }
                }
            }
            // The holder we waited for may have removed the file: lock the current one instead.
            if !same_file(&file, path) {
                continue;
            }
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| write!(file, "{}", std::process::id()))
                .with_context(|| format!("writing lock file {}", path.display()))?;
            return Ok(Self {
                file,
                path: path.to_owned(),
                created,
            });
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked, so a waiter sees it gone and locks a new file.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
        // Only folders left empty go (a run that wrote its files keeps them).
        for folder in &self.created {
            if std::fs::remove_dir(folder).is_err() {
                break;
            }
        }
    }
}

/// `pid N` of the run holding the lock, as it wrote it.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim().parse::<u32>() {
        Ok(pid) => format!("pid {pid}"),
        Err(_) => "pid unknown".into(),
    }
}

fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_gets_it_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".out.csv.lock");
        let first = RunLock::acquire(&path, "out.csv", Wait::No).unwrap();
        let err = RunLock::acquire(&path, "out.csv", Wait::No)
            .err()
            .unwrap()
            .to_string();
        let pid = std::process::id();
        assert!(
            err.starts_with(&format!(
                "out.csv is in use by another export-events run (pid {pid}"
            )),
            "{err}"
        );
        drop(first);
        assert!(!path.exists(), "removed on release");
        let _second = RunLock::acquire(&path, "out.csv", Wait::No).unwrap();
    }

    #[test]
    fn a_folder_made_for_the_lock_goes_with_it_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exports/deeper/.x.lock");
        drop(RunLock::acquire(&path, "x", Wait::No).unwrap());
        assert!(!dir.path().join("exports").exists(), "nothing left");
        let kept = RunLock::acquire(&path, "x", Wait::No).unwrap();
        std::fs::write(dir.path().join("exports/deeper/x"), "written").unwrap();
        drop(kept);
        assert!(
            dir.path().join("exports/deeper/x").exists(),
            "a folder in use stays"
        );
    }

    #[test]
    fn a_waiter_gets_the_lock_when_the_holder_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".x.lock");
        let first = RunLock::acquire(&path, "x", Wait::No).unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || RunLock::acquire(&path, "x", Wait::Yes { quiet: true }))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(first);
        let second = waiter.join().unwrap().unwrap();
        assert!(same_file(&second.file, &path), "holds the file at the path");
    }
}
