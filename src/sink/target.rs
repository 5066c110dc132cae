//! Where an output goes: an absolute path whose folder exists, or is ours to create (the
//! default `exports/`). Checked before anything is read, so a bad `--output` changes nothing.

use std::path::{Component, Path, PathBuf};

use crate::error::UsageError;

/// Where an output goes: an absolute path whose folder exists (or is ours to create).
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    create_folder: bool,
}

impl Target {
    /// Whether writing may create the folder (a default path), or it must exist.
    pub fn create_folder(&self) -> bool {
        self.create_folder
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
    /// The file beside this one with the same stem and extension `ext` (several formats).
    pub fn sibling(&self, ext: &str) -> Result<Self, UsageError> {
        let path = self.path.with_extension(ext);
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
        })
    }
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
}
