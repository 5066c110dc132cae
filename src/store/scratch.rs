//! What a run keeps on this machine outside its outputs, and the sweep of what killed runs left
//! there.
//!
//! - The state folder (`$XDG_STATE_HOME/export-events`, or `~/.local/state/export-events`):
//!   the locks and upload notes of object storage outputs, the pending records of tables whose
//!   warehouse is not a local folder, a feed's last confirmation.
//! - Per process, in `$TMPDIR`: DuckDB's spill folder (`export-events-<pid>-XXXXXX.spill`, 0700) and the
//!   spools of outputs that are not local files (`.export-events-<pid>-<name>.XXXXXX.tmp`).
//!   Both are removed when the run ends; a run killed with SIGKILL cannot, and each can hold
//!   gigabytes, so every run first removes those of processes that are gone: named so, this
//!   user's, with no process of that id alive (a live run's, or one whose id was reused, stay).

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use anyhow::Context as _;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use super::hash::hex;

const PREFIX: &str = "export-events-";
const SPILL: &str = ".spill";

/// The machine's state folder of export-events, `name` inside it.
fn state_folder() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("export-events").join("uploads")
}

/// The file of this machine's state for the thing named `name` (a URL, a slot), of kind `what`
/// (`lock`, `upload`, `table`): `{hash}.{what}` in the state folder.
pub fn state_file(name: &str, what: &str) -> PathBuf {
    let hash = hex(&Sha256::digest(name.as_bytes()));
    state_folder().join(format!("{}.{what}", &hash[..32]))
}

/// Every file of kind `what` in the state folder.
pub fn state_files(what: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(state_folder()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == what))
        .collect()
}

/// The folder the state files are in, created (owner-only) when missing.
pub fn create_state_folder() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let folder = state_folder();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&folder)?;
    Ok(folder)
}

/// A new DuckDB spill folder of this process, `export-events-<pid>-XXXXXX.spill` in `$TMPDIR`:
/// owner-only, with a random part, made new (never one that was there before), removed when
/// dropped.
pub fn duckdb_spill() -> anyhow::Result<tempfile::TempDir> {
    let folder = std::env::temp_dir();
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .suffix(SPILL)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&folder)
        .map_err(|e| crate::store::file::full_disk_writing(e, "a spill folder"))
        .with_context(|| format!("creating a spill folder in {}", folder.display()))
}

/// This process's spool path for an output named `name` that is not a local file: its spool
/// files are hidden temporaries beside it in `$TMPDIR`.
pub fn process_spool(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{PREFIX}{}-{name}", std::process::id()))
}

/// Removes the spill folders and spools of runs that are gone (best effort: what cannot be
/// removed stays).
pub fn sweep_dead() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.uid() != uid || meta.file_type().is_symlink() || !gone(pid) {
            continue;
        }
        let _ = match meta.is_dir() {
            true => std::fs::remove_dir_all(entry.path()),
            false => std::fs::remove_file(entry.path()),
        };
    }
}

/// The process a scratch name in `$TMPDIR` belongs to: `export-events-<pid>-XXXXXX.spill` (or
/// `export-events-<pid>.spill`, as earlier versions named it), or a spool's temporary
/// `.export-events-<pid>-<name>.XXXXXX.tmp`.
fn owner_pid(name: &str) -> Option<libc::pid_t> {
    let digits = match name.strip_prefix('.') {
        Some(hidden) => {
            hidden
                .strip_prefix(PREFIX)?
                .strip_suffix(".tmp")?
                .split_once('-')?
                .0
        }
        None => {
            let rest = name.strip_prefix(PREFIX)?.strip_suffix(SPILL)?;
            rest.split_once('-').map_or(rest, |(pid, _)| pid)
        }
    };
    digits.parse::<libc::pid_t>().ok().filter(|pid| *pid > 0)
}

/// Whether no process `pid` exists.
pub fn gone(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    !alive && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_carry_their_process() {
        assert_eq!(owner_pid("export-events-42.spill"), Some(42));
        assert_eq!(owner_pid("export-events-42-a1B2c3.spill"), Some(42));
        assert_eq!(owner_pid(".export-events-42-x.csv.AbC123.tmp"), Some(42));
        assert_eq!(owner_pid(".export-events-42.spill"), None);
        assert_eq!(owner_pid("export-events-0.spill"), None);
        assert_eq!(owner_pid("export-events-x.spill"), None);
        assert_eq!(owner_pid(".other-42-x.tmp"), None);
        let spool = process_spool("x.csv");
        let name = spool.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            owner_pid(&format!(".{name}.AbC123.tmp")),
            Some(std::process::id() as libc::pid_t)
        );
    }
}
