//! Paths read back from files: journals, manifests, state files, upload journals and slot files
//! live in folders other people and jobs also write (a shared exports folder, a restored backup),
//! so what they name is untrusted input. Everything the tool renames, deletes or hashes on their
//! word goes through here first: a name must be relative and normalised (no `..`, no root, no
//! empty or `.` part), stay inside the folder it is read against, and never pass through a
//! symlink; where trust rests on who wrote a file, its owner must be this process's user.
//!
//! Pure but for `lstat`, and imports nothing of the project's.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};

/// Why a name read back from a file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// `name` (as written in a file) as a path, if it is relative and normalised: it cannot leave
/// whatever it is joined to (a folder, or an object storage prefix).
pub fn relative(name: &str) -> Result<&Path, Refused> {
    let refuse = |why: &str| Refused(format!("{name:?} {why}"));
    if name.is_empty() || name.contains('\0') {
        return Err(refuse("is not a file name"));
    }
    let relative = Path::new(name);
    // `Path::components` hides `a//b` and a trailing `/`; the text itself must be normal.
    let odd = name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..");
    if odd
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(refuse("is not a plain relative path inside the output"));
    }
    Ok(relative)
}

/// `name` (as written in a file) joined to `base`, if it is a relative, normalised path that
/// stays inside `base` and passes through no symlink below `base`.
pub fn inside(base: &Path, name: &str) -> Result<PathBuf, Refused> {
    let refuse = |why: &str| Refused(format!("{name:?} {why}"));
    let relative = relative(name)?;
    let mut path = base.to_owned();
    for part in relative.components() {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(refuse("passes through a symlink"))
            }
            Ok(_) => {}
            // Nothing further exists below a missing part.
            Err(_) => return Ok(base.join(relative)),
        }
    }
    Ok(path)
}

/// `name` as one plain file name (no folder part) in `folder`, through [`inside`].
pub fn file_in(folder: &Path, name: &str) -> Result<PathBuf, Refused> {
    if name.contains('/') {
        return Err(Refused(format!(
            "{name:?} is not a file name in {}",
            folder.display()
        )));
    }
    inside(folder, name)
}

/// An absolute `path` read back from a file, if it lies directly in `folder` (lexically, as
/// written) and is no symlink: a file an earlier run of the same output named.
pub fn absolute_in(folder: &Path, path: &str) -> Result<PathBuf, Refused> {
    let as_path = Path::new(path);
    match (as_path.parent(), as_path.file_name()) {
        (Some(parent), Some(name)) if parent == folder && as_path.is_absolute() => {
            file_in(folder, &name.to_string_lossy())
        }
        _ => Err(Refused(format!(
            "{path:?} is not a file in {}",
            folder.display()
        ))),
    }
}

/// Refuses a file that another user owns: a journal or state file planted in a shared folder.
pub fn owned_by_us(path: &Path) -> Result<(), Refused> {
    let meta =
        std::fs::symlink_metadata(path).map_err(|e| Refused(format!("{}: {e}", path.display())))?;
    if meta.file_type().is_symlink() {
        return Err(Refused(format!("{} is a symlink", path.display())));
    }
    // SAFETY: geteuid cannot fail and has no side effects.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(Refused(format!(
            "{} belongs to user {}, not to this run's user {me}",
            path.display(),
            meta.uid()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_names_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        assert_eq!(inside(base, "a.csv").unwrap(), base.join("a.csv"));
        assert_eq!(
            inside(base, "x.parquet/date=2026-02-01/part-0.parquet").unwrap(),
            base.join("x.parquet/date=2026-02-01/part-0.parquet")
        );
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "./a",
            "a//b",
            "a/",
            "a/./b",
            "..",
            "a\0b",
        ] {
            assert!(inside(base, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn symlinks_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("file")).unwrap();
        let err = inside(dir.path(), "link/x.csv").unwrap_err();
        assert!(err.0.contains("symlink"), "{err}");
        assert!(inside(dir.path(), "file").is_err());
        assert!(file_in(dir.path(), "a/b").is_err());
    }

    #[test]
    fn absolute_paths_must_be_directly_in_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path();
        let ok = folder.join("events_1.csv");
        assert_eq!(absolute_in(folder, &ok.to_string_lossy()).unwrap(), ok);
        for bad in ["/tmp", "events_1.csv", "/etc/cron.d/x"] {
            assert!(absolute_in(folder, bad).is_err(), "{bad}");
        }
        let above = format!("{}/../victim", folder.display());
        assert!(absolute_in(folder, &above).is_err());
    }

    #[test]
    fn files_of_this_user_are_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("j");
        std::fs::write(&file, "x").unwrap();
        owned_by_us(&file).unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("l")).unwrap();
        assert!(owned_by_us(&dir.path().join("l")).is_err());
    }

    proptest::proptest! {
        /// Whatever a hostile file says, the answer is a path inside the base or a refusal.
        #[test]
        fn never_escapes(name in "[a-z./\\\\]{0,12}") {
            let base = Path::new("/nonexistent-base");
            if let Ok(path) = inside(base, &name) {
                proptest::prop_assert!(path.starts_with(base) && path != base);
                proptest::prop_assert!(!path.components().any(|c| c == Component::ParentDir));
            }
        }
    }
}
