//! How a local folder names what a run keeps beside an output `NAME` until its commit, so that
//! the next run can tell whose each hidden file is: temporaries `.NAME.XXXXXX.tmp` (a staged
//! file or dataset, a spool, a spill), `.NAME.previous.XXXXXX.tmp` (the file a commit replaces,
//! kept until it succeeds), the commit journal `.NAME.commit` and the lock `.NAME.lock`.

use std::io;
use std::path::{Path, PathBuf};

/// Temporary files are `.{name}.XXXXXX.tmp` beside the target `name` (`XXXXXX` random).
pub const TEMP_SUFFIX: &str = ".tmp";
pub const TEMP_RANDOM: usize = 6;

/// Names temporary files and folders beside `target` as recovery knows them
/// (`.{name}.XXXXXX.tmp`), created O_CREAT | O_EXCL: a symlink planted at the name is never
/// followed. `use_it` gets the builder (for a file or a folder).
pub fn beside<T>(
    target: &Path,
    use_it: impl FnOnce(&mut tempfile::Builder) -> io::Result<T>,
) -> io::Result<T> {
    let prefix = temp_prefix(target);
    let mut builder = tempfile::Builder::new();
    builder
        .prefix(&prefix)
        .suffix(TEMP_SUFFIX)
        .rand_bytes(TEMP_RANDOM);
    use_it(&mut builder)
}

/// Whether `file` is a temporary file of `target` (and not of a target whose name merely
/// starts the same way, as `x.csv` starts `x.csv.gz`).
pub fn is_temporary_of(file: &str, target: &Path) -> bool {
    let name = file_name(target);
    file.strip_prefix('.')
        .and_then(temporary_stem)
        .is_some_and(|stem| stem == name || stem.strip_suffix(".previous") == Some(&name))
}

/// `NAME` of a temporary's name without its leading dot, `NAME.XXXXXX.tmp` (for a file kept
/// until a commit succeeds, `NAME` ends with `.previous`): the one reader of that format.
fn temporary_stem(hidden: &str) -> Option<&str> {
    let (stem, random) = hidden.strip_suffix(TEMP_SUFFIX)?.rsplit_once('.')?;
    let valid = random.len() == TEMP_RANDOM && random.bytes().all(|b| b.is_ascii_alphanumeric());
    valid.then_some(stem)
}

/// The target a hidden file beside it belongs to, from its name without the leading dot: a
/// temporary (`NAME.XXXXXX.tmp`, `NAME.previous.XXXXXX.tmp`), a commit journal
/// (`NAME.commit`) or a lock (`NAME.lock`).
pub fn target_of_hidden(hidden: &str) -> Option<&str> {
    if let Some(name) = hidden
        .strip_suffix(".commit")
        .or_else(|| hidden.strip_suffix(".lock"))
    {
        return Some(name);
    }
    temporary_stem(hidden).map(|stem| stem.strip_suffix(".previous").unwrap_or(stem))
}

/// `.{name}.`, the start of every temporary of `target`.
pub fn temp_prefix(target: &Path) -> String {
    format!(".{}.", file_name(target))
}

/// The lock file of an output: `.name.lock` beside it (`name.lock` for a hidden `name`, such as
/// the incremental state's `.export-events-state.json`).
pub fn lock_of(target: &Path) -> PathBuf {
    let name = file_name(target);
    match name.starts_with('.') {
        true => target.with_file_name(format!("{name}.lock")),
        false => target.with_file_name(format!(".{name}.lock")),
    }
}

/// The commit journal of a group commit whose first output is `target`: `.name.commit`.
pub fn journal_of(target: &Path) -> PathBuf {
    target.with_file_name(format!(".{}.commit", file_name(target)))
}

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_files_name_their_target() {
        assert_eq!(target_of_hidden("x.csv.abc123.tmp"), Some("x.csv"));
        assert_eq!(target_of_hidden("x.csv.previous.abc123.tmp"), Some("x.csv"));
        assert_eq!(
            target_of_hidden("x.csv.manifest.json.Ab9xYz.tmp"),
            Some("x.csv.manifest.json")
        );
        assert_eq!(target_of_hidden("x.csv.commit"), Some("x.csv"));
        assert_eq!(target_of_hidden("x.csv.lock"), Some("x.csv"));
        assert_eq!(target_of_hidden("x.csv.toolong7.tmp"), None);
        assert_eq!(target_of_hidden("export-events-dataset"), None);
        assert!(is_temporary_of(".x.csv.abc123.tmp", Path::new("/o/x.csv")));
        assert!(!is_temporary_of(
            ".x.csv.gz.abc123.tmp",
            Path::new("/o/x.csv")
        ));
    }

    #[test]
    fn lock_files_are_hidden_beside_their_output() {
        assert_eq!(
            lock_of(Path::new("/w/exports/events_export.csv")),
            Path::new("/w/exports/.events_export.csv.lock")
        );
        assert_eq!(
            lock_of(Path::new("/w/exports/.export-events-state.json")),
            Path::new("/w/exports/.export-events-state.json.lock")
        );
    }
}
