//! What a local target must be before anything is read: a file path whose folder exists (or is
//! ours to create: the default `exports/`), not a folder; a dataset path that holds no file and
//! no folder export-events did not write. Checked first, so a bad `--output` changes nothing.

use std::path::Path;

use crate::error::UsageError;
use crate::store::api::{Given, Kind, DATASET_MARKER, MANIFEST_SUFFIX};

/// Refuses `path` as a target of `kind`, named by the user as `given` says.
pub fn check(path: &Path, kind: Kind, given: &Given) -> Result<(), UsageError> {
    let flag = given.flag;
    let folder = path.parent().unwrap_or(Path::new("/"));
    if let (Some(text), Kind::File | Kind::Dataset) = (&given.text, kind) {
        if kind == Kind::File && path.is_dir() {
            return Err(UsageError(format!(
                "{flag} {text} is a folder: give a file path, such as {}",
                Path::new(text).join(&given.default_name).display()
            )));
        }
        if !folder.is_dir() {
            return Err(UsageError(format!(
                "{flag} {text}: folder {} does not exist; create it first or choose another path",
                folder.display()
            )));
        }
    }
    match kind {
        Kind::Dataset => check_dataset(path),
        Kind::File | Kind::Folder => Ok(()),
    }
}

/// Refuses a dataset path that holds a file, or a folder export-events did not write (it has
/// neither a manifest beside it nor the marker inside that every dataset of ours has).
fn check_dataset(path: &Path) -> Result<(), UsageError> {
    if path.is_file() {
        return Err(UsageError(format!(
            "--output {} is a file: a partitioned export writes a folder; choose another path",
            path.display()
        )));
    }
    let manifest = format!("{}{MANIFEST_SUFFIX}", path.display());
    let marked = std::fs::symlink_metadata(path.join(DATASET_MARKER)).is_ok_and(|m| m.is_file());
    let ours = marked || Path::new(&manifest).is_file();
    let empty = std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none());
    if path.is_dir() && !ours && !empty {
        return Err(UsageError(format!(
            "--output {} is a folder export-events did not write (no {manifest} beside it): \
             choose another path, or empty it",
            path.display(),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(text: Option<&str>) -> Given {
        Given {
            flag: "--output",
            text: text.map(str::to_owned),
            default_name: "d.csv".into(),
        }
    }

    #[test]
    fn a_file_target_needs_an_existing_folder_and_is_no_folder() {
        let dir = tempfile::tempdir().unwrap();
        check(
            &dir.path().join("out.csv"),
            Kind::File,
            &given(Some("out.csv")),
        )
        .unwrap();
        let err = check(
            &dir.path().join("missing/out.csv"),
            Kind::File,
            &given(Some("missing/out.csv")),
        )
        .unwrap_err();
        assert!(err.0.contains("does not exist"), "{err}");
        let err = check(dir.path(), Kind::File, &given(Some("."))).unwrap_err();
        assert!(err.0.contains("is a folder"), "{err}");
        // The default's folder is the tool's to create.
        check(&dir.path().join("exports/x.csv"), Kind::File, &given(None)).unwrap();
    }

    #[test]
    fn a_dataset_replaces_only_a_folder_of_ours() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("x.csv");
        std::fs::create_dir(&data).unwrap();
        check(&data, Kind::Dataset, &given(None)).unwrap();
        std::fs::write(data.join("precious"), "p").unwrap();
        let err = check(&data, Kind::Dataset, &given(None)).unwrap_err();
        assert!(err.0.contains("did not write"), "{err}");
        std::fs::write(data.join(DATASET_MARKER), "t").unwrap();
        check(&data, Kind::Dataset, &given(None)).unwrap();
    }
}
