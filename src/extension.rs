//! DuckDB's `postgres` extension: where it lives, how it is loaded fast, and how to install it.
//!
//! DuckDB checks an extension's signature on every `LOAD`; for the 41 MB postgres extension that
//! costs about 90 ms, most of the time of a small `--since` export. So after a signed load
//! succeeds, the file's identity (device, inode, size and change time, which users cannot set
//! back) is recorded beside it; while the file keeps that identity, later runs load that same
//! file with the check off. Reinstalling, copying or editing the file changes its identity, and
//! the next run checks the signature again. The record lives in DuckDB's own extension folder:
//! whoever could forge it could replace the extension itself.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// The DuckDB release the crate bundles, whose extension folder we use.
pub const DUCKDB_VERSION: &str = "v1.5.5";
/// The extension's file name (`LOAD postgres` finds it under this name).
const FILE: &str = "postgres_scanner.duckdb_extension";
/// Beside the extension: the identity it had when its signature was last checked.
const RECORD_SUFFIX: &str = ".export-events-verified";

/// The extension file DuckDB loads by default, when this platform has a known name.
pub fn default_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(
        Path::new(&home)
            .join(".duckdb/extensions")
            .join(DUCKDB_VERSION)
            .join(platform()?)
            .join(FILE),
    )
}

/// DuckDB's name for this platform.
pub fn platform() -> Option<&'static str> {
    Some(match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => "linux_amd64",
        ("linux", "aarch64") => "linux_arm64",
        ("macos", "x86_64") => "osx_amd64",
        ("macos", "aarch64") => "osx_arm64",
        _ => return None,
    })
}

/// The identity of a file: changes whenever its content can have changed.
fn identity(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{} {} {} {} {}",
        m.dev(),
        m.ino(),
        m.size(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

fn record_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(RECORD_SUFFIX);
    PathBuf::from(name)
}

/// Whether `path` is the very file whose signature a previous run checked.
pub fn verified(path: &Path) -> bool {
    let recorded = std::fs::read_to_string(record_path(path)).ok();
    identity(path).is_some_and(|id| recorded.as_deref().map(str::trim) == Some(id.as_str()))
}

/// What a signed load needs before it runs: the file's identity, to record afterwards.
pub struct Check {
    path: PathBuf,
    before: Option<String>,
}

impl Check {
    pub fn start(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            before: identity(path),
        }
    }

    /// The file being checked.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// After DuckDB loaded the file with its signature checked: records its identity, unless
    /// the file changed meanwhile. Best effort: a read-only folder only costs the fast path.
    pub fn passed(self) {
        let Some(before) = self.before else { return };
        if identity(&self.path).as_ref() != Some(&before) {
            return;
        }
        let record = record_path(&self.path);
        let Some(folder) = record.parent() else {
            return;
        };
        if let Ok(mut temp) = tempfile::NamedTempFile::new_in(folder) {
            use std::io::Write as _;
            if writeln!(temp, "{before}").is_ok() {
                let _ = temp.persist(&record);
            }
        }
    }
}

/// How to install the extension where nothing can download it.
pub fn install_hint() -> String {
    format!(
        "install it offline with `scripts/setup` from the export-events checkout, which copies \
         {FILE} from the PyPI wheel duckdb-extension-postgres-scanner=={} into \
         ~/.duckdb/extensions/{DUCKDB_VERSION}/{}/",
        &DUCKDB_VERSION[1..],
        platform().unwrap_or("<platform>"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_holds_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, b"extension").unwrap();
        assert!(!verified(&path), "never checked");
        Check::start(&path).passed();
        assert!(verified(&path));
        // File times tick with the kernel's coarse clock: let one tick pass.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"tampered!").unwrap();
        assert!(!verified(&path), "a changed file must be checked again");
    }

    #[test]
    fn a_file_replaced_during_the_check_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, b"extension").unwrap();
        let check = Check::start(&path);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"other").unwrap();
        check.passed();
        assert!(!verified(&path));
    }

    #[test]
    fn the_default_path_is_duckdbs() {
        let path = default_path().unwrap();
        assert!(path.ends_with(format!("{DUCKDB_VERSION}/linux_amd64/{FILE}")));
    }
}
