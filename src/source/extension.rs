//! DuckDB's `postgres` extension: where DuckDB keeps it and how to install it offline.
//!
//! DuckDB checks the extension's signature on every `LOAD` (about 90 ms for the 41 MB file).
//! That check is what stands between a writable extension folder and native code running with
//! database credentials, so it always runs: export-events never turns it off.

use std::path::{Path, PathBuf};

/// The DuckDB release the crate bundles, whose extension folder we use.
pub const DUCKDB_VERSION: &str = "v1.5.5";
/// The extension's file name (`LOAD postgres` finds it under this name).
const FILE: &str = "postgres_scanner.duckdb_extension";

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
    fn the_default_path_is_duckdbs() {
        let path = default_path().unwrap();
        assert!(path.ends_with(format!("{DUCKDB_VERSION}/linux_amd64/{FILE}")));
    }
}
