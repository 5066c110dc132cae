//! Where a name the user (or a catalog) gave is: the one place a store is chosen. `s3://bucket/
//! key` is in that bucket's store; anything else is a path of the local store, relative to the
//! working directory, `.` and `..` resolved as written (symlinks untouched, as Python's
//! `os.path.abspath` does).

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::api::Store;
use super::local::LocalStore;
use super::location::Location;
use super::s3;
use crate::error::UsageError;

/// The local file system's store.
pub fn local_store() -> Arc<dyn Store> {
    static LOCAL: OnceLock<Arc<LocalStore>> = OnceLock::new();
    LOCAL.get_or_init(|| Arc::new(LocalStore)).clone()
}

/// The local path `path` (absolute) as a location.
pub fn local(path: &Path) -> Location {
    Location::new(local_store(), path.display().to_string())
}

/// Where the file (or folder of files) `text` names: an object, or a path under `cwd`.
pub fn locate(text: &str, cwd: &Path) -> Result<Location, UsageError> {
    match s3::parse(text, false) {
        Some(found) => found.map(|(store, key)| Location::new(store, key)),
        None => Ok(local(&normalize(&cwd.join(text)))),
    }
}

/// Where the folder `text` names, a bucket's prefix or a folder under `cwd` (a warehouse):
/// another scheme is refused.
pub fn locate_folder(text: &str, cwd: &Path) -> Result<Location, UsageError> {
    if let Some(found) = s3::parse(text, true) {
        return found.map(|(store, key)| Location::new(store, key));
    }
    if text.split_once("://").is_some() {
        return Err(UsageError(format!(
            "{text}: give a local folder (such as exports/lake) or s3://bucket/prefix"
        )));
    }
    Ok(local(&normalize(&cwd.join(text))))
}

/// Where a path a catalog recorded is: `s3://bucket/key`, `file:///path` or `/path`.
pub fn of_recorded(path: &str) -> Result<Location, UsageError> {
    if let Some(found) = s3::parse(path, true) {
        return found.map(|(store, key)| Location::new(store, key));
    }
    let local_path = path
        .strip_prefix("file://")
        .or_else(|| path.strip_prefix("file:"))
        .unwrap_or(path);
    Ok(local(Path::new(local_path)))
}

/// `path` without `.` and `..` components, symlinks untouched.
pub fn normalize(path: &Path) -> PathBuf {
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
    fn names_are_paths_under_the_working_directory_or_objects() {
        let cwd = Path::new("/w/./x/..");
        assert_eq!(
            locate("exports/events_export.csv", cwd).unwrap().key(),
            "/w/exports/events_export.csv"
        );
        assert_eq!(locate("/abs/x.csv", cwd).unwrap().key(), "/abs/x.csv");
        let object = locate("s3://lake/iot/x.csv", cwd).unwrap();
        assert_eq!(object.shown(), "s3://lake/iot/x.csv");
        assert_eq!(object.folder().shown(), "s3://lake/iot");
        assert!(locate("s3://lake/", cwd).is_err());
        let err = locate_folder("gs://b/w", cwd).unwrap_err().0;
        assert!(err.contains("give a local folder"), "{err}");
        assert_eq!(locate_folder("s3://lake", cwd).unwrap().key(), "");
        assert_eq!(of_recorded("file:///wh/t").unwrap().key(), "/wh/t");
    }
}
