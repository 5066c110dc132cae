//! DuckDB's private temporary folder, where sorting a DuckDB-file source spills: one per
//! process, `$TMPDIR/export-events-<pid>.spill`. DuckDB removes it when the run ends, but a run
//! killed with SIGKILL cannot, and each such folder can hold hundreds of megabytes. So every run
//! that makes one first removes those of processes that are gone: named so, this user's, and
//! with no process of that id alive (a live run's folder, or one whose id was reused, stays).

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

const PREFIX: &str = "export-events-";
const SUFFIX: &str = ".spill";

/// This process's folder (not created here: DuckDB creates it when it first spills).
pub fn folder() -> PathBuf {
    std::env::temp_dir().join(format!("{PREFIX}{}{SUFFIX}", std::process::id()))
}

/// Removes the folders of runs that are gone (best effort: what cannot be removed stays).
pub fn sweep() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX)?.strip_suffix(SUFFIX))
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
            .filter(|pid| *pid > 0)
        else {
            continue;
        };
        let ours = std::fs::symlink_metadata(entry.path())
            .is_ok_and(|meta| meta.is_dir() && meta.uid() == uid);
        if ours && gone(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether no process `pid` exists.
fn gone(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    !alive && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}
