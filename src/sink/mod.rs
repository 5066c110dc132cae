//! Output files that appear whole or not at all, and the [`Sink`] each format implements.
//!
//! An [`AtomicFile`] is written beside its target under a hidden temporary name, fsynced, and
//! renamed over the target only when complete; dropping it unfinished removes the temporary file.
//! [`commit_all`] puts several files in place together (CSV and Parquet: both or neither).
//! SIGINT/SIGTERM remove every pending temporary file before the process exits, so an interrupted
//! run leaves the previous output as it was and nothing beside it.

pub mod csv;
pub mod parquet;
pub mod text;
pub mod threaded;

use arrow::record_batch::RecordBatch;

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, Once};

use anyhow::{Context as _, Result};
use tempfile::NamedTempFile;

use crate::error::UsageError;

/// Temporary files not yet renamed into place, removed on SIGINT/SIGTERM.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Exit status after SIGINT/SIGTERM (128 + SIGINT, what shells report for Ctrl-C).
const INTERRUPTED: i32 = 130;

/// Makes SIGINT and SIGTERM remove pending temporary files, then exit with status 130.
pub fn remove_partial_files_on_signal() -> Result<()> {
    static INSTALL: Once = Once::new();
    let mut outcome = Ok(());
    INSTALL.call_once(|| {
        outcome = ctrlc::set_handler(|| {
            let pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
            for path in pending.iter() {
                let _ = std::fs::remove_file(path);
            }
            eprintln!("error: interrupted; no output file was changed");
            std::process::exit(INTERRUPTED);
        });
    });
    outcome.context("installing the SIGINT/SIGTERM handler")
}

/// Where an output goes: an absolute path whose folder exists (or is ours to create).
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    create_folder: bool,
}

impl Target {
    /// `--output PATH` (its folder must exist), or `default` under `cwd` (folder created on write).
    pub fn resolve(output: Option<&Path>, default: &str, cwd: &Path) -> Result<Self, UsageError> {
        Self::resolve_flag("--output", output, default, cwd)
    }

    /// As [`Self::resolve`], for the file of option `flag`.
    pub fn resolve_flag(
        flag: &str,
        output: Option<&Path>,
        default: &str,
        cwd: &Path,
    ) -> Result<Self, UsageError> {
        let Some(output) = output else {
            return Ok(Self {
                path: normalize(&cwd.join(default)),
                create_folder: true,
            });
        };
        let path = normalize(&cwd.join(output));
        if path.is_dir() {
            return Err(UsageError(format!(
                "{flag} {} is a folder: give a file path, such as {}",
                output.display(),
                Path::new(output)
                    .join(Path::new(default).file_name().unwrap_or_default())
                    .display()
            )));
        }
        let folder = path.parent().unwrap_or(Path::new("/"));
        if !folder.is_dir() {
            return Err(UsageError(format!(
                "{flag} {}: folder {} does not exist; create it first or choose another path",
                output.display(),
                folder.display()
            )));
        }
        Ok(Self {
            path,
            create_folder: false,
        })
    }
}

impl Target {
    /// The file beside this one with the same stem and extension `ext` (`--format both`).
    pub fn sibling(&self, ext: &str) -> Result<Self, UsageError> {
        let path = self.path.with_extension(ext);
        if path == self.path {
            return Err(UsageError(format!(
                "--output {} would be written twice: with --format both it names the CSV file \
                 (the .{ext} file goes beside it)",
                self.path.display()
            )));
        }
        Ok(Self {
            path,
            create_folder: self.create_folder,
        })
    }
}

/// A file being written under a temporary name beside its target.
pub struct AtomicFile {
    temp: NamedTempFile,
    target: PathBuf,
    _pending: Pending,
}

/// Registers a temporary file for removal on a signal while it lives (fields drop in order, so
/// an unfinished [`AtomicFile`] removes its file first, then leaves the registry).
struct Pending(PathBuf);

impl Pending {
    fn register(path: &Path) -> Self {
        lock_pending().push(path.to_owned());
        Self(path.to_owned())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        lock_pending().retain(|p| p != &self.0);
    }
}

impl AtomicFile {
    /// Starts writing `target`; nothing at `target` changes until [`Self::commit`].
    pub fn create(target: &Target) -> Result<Self> {
        let folder = target.path.parent().unwrap_or(Path::new("/"));
        if target.create_folder {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("creating folder {}", folder.display()))?;
        }
        let name = target
            .path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        // A new file gets the permissions Python's open() gave (0666 less the umask); a replaced
        // one keeps its own.
        let permissions = std::fs::metadata(&target.path)
            .map(|m| m.permissions())
            .unwrap_or_else(|_| Permissions::from_mode(0o666));
        let temp = tempfile::Builder::new()
            .prefix(&temp_prefix(&name))
            .suffix(TEMP_SUFFIX)
            .permissions(permissions)
            .tempfile_in(folder)
            .with_context(|| format!("creating a file in {}", folder.display()))?;
        let pending = Pending::register(temp.path());
        Ok(Self {
            temp,
            target: target.path.clone(),
            _pending: pending,
        })
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
            .with_context(|| format!("writing {}", self.target.display()))
    }
}

/// Temporary files are `.{name}.XXXXXX.tmp` beside the target `name`.
const TEMP_SUFFIX: &str = ".tmp";

fn temp_prefix(name: &str) -> String {
    format!(".{name}.")
}

/// Removes the temporary files a killed process (SIGKILL, power loss) left for `target`; only
/// for callers that know no other process is writing it. Returns how many there were.
pub fn remove_abandoned_temporaries(target: &Path) -> Result<usize> {
    let (Some(folder), Some(name)) = (target.parent(), target.file_name()) else {
        return Ok(0);
    };
    let prefix = temp_prefix(&name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&prefix) && file.ends_with(TEMP_SUFFIX) {
            let path = entry.path();
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Syncs every file, then renames each over its target; when a rename fails, the targets
/// already replaced get their previous contents back, so either all change or none does.
pub fn commit_all(mut files: Vec<AtomicFile>) -> Result<()> {
    for file in &mut files {
        file.sync()?;
    }
    let previous = files
        .iter()
        .map(|f| Previous::keep(&f.target))
        .collect::<Result<Vec<_>>>()?;
    for (done, file) in files.into_iter().enumerate() {
        let target = file.target.clone();
        if let Err(e) = file.temp.persist(&target) {
            previous[..done].iter().for_each(Previous::restore);
            return Err(e.error)
                .with_context(|| format!("moving the finished file to {}", target.display()));
        }
    }
    for folder in previous.iter().filter_map(|p| p.target.parent()) {
        // A rename is durable once its folder is synced (best effort where unsupported).
        let _ = File::open(folder).and_then(|f| f.sync_all());
    }
    Ok(())
}

/// The file a commit is about to replace, kept (as a hard link) until the commit succeeds.
struct Previous {
    target: PathBuf,
    kept: Option<(tempfile::TempPath, Pending)>,
}

impl Previous {
    fn keep(target: &Path) -> Result<Self> {
        let kept = if target.is_file() {
            let folder = target.parent().unwrap_or(Path::new("/"));
            let link = tempfile::Builder::new()
                .prefix(".previous.")
                .make_in(folder, |p| std::fs::hard_link(target, p))
                .with_context(|| {
                    format!(
                        "keeping {} until the new file is in place",
                        target.display()
                    )
                })?;
            let pending = Pending::register(link.path());
            Some((link.into_temp_path(), pending))
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
            Some((kept, _)) => std::fs::rename(kept, &self.target),
            None => std::fs::remove_file(&self.target),
        };
    }
}

/// An output format: takes the export's batches in order, then hands back its finished file.
/// Each runs on a thread of its own ([`threaded::Writers`]).
pub trait Sink: Send {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Finishes the encoding; the file is complete but not yet in place.
    fn close(self: Box<Self>) -> Result<AtomicFile>;
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

fn lock_pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// `path` without `.` and `..` components (as Python's `os.path.abspath`), symlinks untouched.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_target_is_under_the_working_directory() {
        let target =
            Target::resolve(None, "exports/events_export.csv", Path::new("/w/./x/..")).unwrap();
        assert_eq!(target.path, Path::new("/w/exports/events_export.csv"));
        assert!(target.create_folder);
    }

    #[test]
    fn custom_target_needs_an_existing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let ok = Target::resolve(Some(Path::new("out.csv")), "d.csv", dir.path()).unwrap();
        assert_eq!(ok.path, dir.path().join("out.csv"));
        let err =
            Target::resolve(Some(Path::new("missing/out.csv")), "d.csv", dir.path()).unwrap_err();
        assert!(err.0.contains("does not exist"), "{err}");
        let err = Target::resolve(Some(Path::new(".")), "d.csv", dir.path()).unwrap_err();
        assert!(err.0.contains("is a folder"), "{err}");
    }

    #[test]
    fn abandoned_temporaries_of_one_target_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::resolve(Some(Path::new("a.csv")), "d.csv", dir.path()).unwrap();
        let mut left = AtomicFile::create(&target).unwrap();
        left.write_all(b"partial").unwrap();
        let partial = left.temp.path().to_owned();
        std::mem::forget(left); // as if the process had been killed
        let other = dir.path().join(".b.csv.x.tmp");
        std::fs::write(&other, "other").unwrap();
        assert_eq!(remove_abandoned_temporaries(&target.path).unwrap(), 1);
        assert!(!partial.exists() && other.exists());
        lock_pending().clear();
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
        assert!(lock_pending().is_empty());
    }
}
