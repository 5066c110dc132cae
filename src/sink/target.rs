//! Where an output goes: an absolute path whose folder exists, or is ours to create (the
//! default `exports/`), with the permissions its files get (owner-only unless `--mode` says
//! otherwise: events can hold personal data). Checked before anything is read, so a bad
//! `--output` changes nothing. An `s3://bucket/key` output is an object storage target: its
//! path is the key (as `/key`), and its bucket says where it goes.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::object::{self, Bucket};
use crate::error::UsageError;

/// Where an output goes: an absolute path whose folder exists (or is ours to create).
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    create_folder: bool,
    /// Permissions of the files written here (folders the tool creates get the same, plus
    /// execute where read is allowed).
    pub mode: u32,
    /// The bucket of an object storage target.
    pub remote: Option<Arc<Bucket>>,
}

/// Files are owner-only unless `--mode` says otherwise.
pub const DEFAULT_MODE: u32 = 0o600;

impl Target {
    /// Whether writing may create the folder (a default path), or it must exist.
    pub fn create_folder(&self) -> bool {
        self.create_folder
    }

    /// A file at `path` in a folder the tool owns (a dataset's): the folder is created as needed.
    pub fn owned(path: PathBuf, mode: u32) -> Self {
        Self {
            path,
            create_folder: true,
            mode,
            remote: None,
        }
    }

    /// Another file at `path` where this one goes (same storage, same permissions), in a folder
    /// the tool owns: a manifest, a part of a dataset.
    pub fn at(&self, path: PathBuf) -> Self {
        Self {
            path,
            create_folder: true,
            mode: self.mode,
            remote: self.remote.clone(),
        }
    }

    /// The object key of a remote target (its path without the leading `/`).
    pub fn key(&self) -> String {
        key_of(&self.path)
    }

    /// How the target is shown to users: its path, or its `s3://` URL.
    pub fn shown(&self) -> String {
        match &self.remote {
            Some(bucket) => bucket.url(&self.key()),
            None => self.path.display().to_string(),
        }
    }

    /// An `s3://bucket/key` output as a target, when `output` is one.
    fn remote(output: &Path) -> Option<Result<Self, UsageError>> {
        let parsed = object::parse(&output.to_string_lossy())?;
        Some(parsed.and_then(|(bucket, key)| {
            Ok(Self {
                path: Path::new("/").join(key),
                create_folder: true,
                mode: DEFAULT_MODE,
                remote: Some(Bucket::open(&bucket)?),
            })
        }))
    }

    /// The same target with files of permissions `mode`.
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// The permissions of folders the tool creates for files of `mode`: execute (search) where
    /// read is allowed.
    pub fn folder_mode(&self) -> u32 {
        self.mode | ((self.mode & 0o444) >> 2)
    }

    /// Creates `folder` (and its parents) with [`Self::folder_mode`] where missing.
    pub fn create_dir_all(&self, folder: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(self.folder_mode())
            .create(folder)
    }
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
                mode: DEFAULT_MODE,
                remote: None,
            });
        };
        if let Some(remote) = Self::remote(output) {
            return remote;
        }
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
            mode: DEFAULT_MODE,
            remote: None,
        })
    }
}

impl Target {
    /// A folder of files the tool names itself (change files): `output` or `default` under
    /// `cwd`, or an `s3://bucket/prefix`.
    pub fn folder(output: Option<&Path>, default: &str, cwd: &Path) -> Result<Self, UsageError> {
        if let Some(remote) = output.and_then(Self::remote) {
            return remote;
        }
        Ok(Self {
            path: normalize(&cwd.join(output.unwrap_or(Path::new(default)))),
            create_folder: true,
            mode: DEFAULT_MODE,
            remote: None,
        })
    }

    /// A dataset folder: `--output PATH` (its parent must exist) or `default` under `cwd`. An
    /// existing folder there is replaced only if export-events wrote it (its manifest is beside
    /// it) or it is empty; nothing else is ever removed.
    pub fn resolve_dataset(
        output: Option<&Path>,
        default: &str,
        cwd: &Path,
    ) -> Result<Self, UsageError> {
        if let Some(remote) = output.and_then(Self::remote) {
            return remote;
        }
        let target = match output {
            Some(output) => {
                let path = normalize(&cwd.join(output));
                let folder = path.parent().unwrap_or(Path::new("/"));
                if !folder.is_dir() {
                    return Err(UsageError(format!(
                        "--output {}: folder {} does not exist; create it first or choose \
                         another path",
                        output.display(),
                        folder.display()
                    )));
                }
                Self {
                    path,
                    create_folder: false,
                    mode: DEFAULT_MODE,
                    remote: None,
                }
            }
            None => Self {
                path: normalize(&cwd.join(default)),
                create_folder: true,
                mode: DEFAULT_MODE,
                remote: None,
            },
        };
        Self::check_dataset(&target.path)?;
        Ok(target)
    }

    /// Refuses a dataset path that holds a file, or a folder export-events did not write (it
    /// has neither a manifest beside it nor the marker inside that every dataset of ours has).
    pub fn check_dataset(path: &Path) -> Result<(), UsageError> {
        if path.is_file() {
            return Err(UsageError(format!(
                "--output {} is a file: a partitioned export writes a folder; choose another path",
                path.display()
            )));
        }
        let marked =
            std::fs::symlink_metadata(path.join(super::DATASET_MARKER)).is_ok_and(|m| m.is_file());
        let ours = marked || crate::sink::manifest::path_of(path).is_file();
        let empty = std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none());
        if path.is_dir() && !ours && !empty {
            return Err(UsageError(format!(
                "--output {} is a folder export-events did not write (no {} beside it): \
                 choose another path, or empty it",
                path.display(),
                crate::sink::manifest::path_of(path).display()
            )));
        }
        Ok(())
    }

    /// The file beside this one with the same stem and extension `ext` (several formats);
    /// `own` is this file's extension as its format names it (`csv.gz`), when it has it.
    pub fn sibling(&self, own: &str, ext: &str) -> Result<Self, UsageError> {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = match name.strip_suffix(&format!(".{own}")) {
            Some(stem) if !stem.is_empty() => self.path.with_file_name(format!("{stem}.{ext}")),
            _ => self.path.with_extension(ext),
        };
        if path == self.path {
            return Err(UsageError(format!(
                "--output {} would be written twice: with several formats it names the first \
                 format's file (the .{ext} file goes beside it)",
                self.path.display()
            )));
        }
        Ok(Self {
            path,
            create_folder: self.create_folder,
            mode: self.mode,
            remote: self.remote.clone(),
        })
    }
}

/// The object key of a remote target's path.
pub fn key_of(path: &Path) -> String {
    path.to_string_lossy().trim_start_matches('/').to_owned()
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
    fn siblings_replace_the_whole_extension_of_the_first_format() {
        let t = Target::resolve(None, "exports/x.csv.gz", Path::new("/w")).unwrap();
        let p = t.sibling("csv.gz", "parquet").unwrap();
        assert_eq!(p.path, Path::new("/w/exports/x.parquet"));
        let other = t.sibling("csv", "parquet").unwrap();
        assert_eq!(other.path, Path::new("/w/exports/x.csv.parquet"));
        assert_eq!(t.with_mode(0o640).folder_mode(), 0o750);
    }

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
}
