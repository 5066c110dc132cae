//! The manifest every export writes last, `<output>.manifest.json`: what was exported, from
//! where, as of which snapshot, and per file its path, rows, timestamp range, size and SHA-256.
//! It is committed with the files (last in the same journaled commit) after the previous
//! manifest is removed, so a manifest never stands beside files it does not describe: a consumer
//! can wait for it as a `_SUCCESS` marker. `export-events verify` checks files against it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::file::Written;
use super::{AtomicFile, Target};

/// What the file says it is.
pub const KIND: &str = "export-events manifest";
/// The format this version writes.
pub const VERSION: u32 = 1;

/// An export's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: String,
    pub version: u32,
    /// `export-events 0.1.0`.
    pub tool: String,
    pub created_at: String,
    pub source: Source,
    /// The `--since` instant, when there was one.
    pub since: Option<String>,
    /// PostgreSQL's snapshot the export read (`pg_current_snapshot()`), when it is known.
    pub snapshot: Option<String>,
    /// `day`, `month` or `rule` for a partitioned dataset.
    pub partition_by: Option<String>,
    /// Rows in each format's files (every format holds the same rows).
    pub rows: u64,
    pub files: Vec<FileEntry>,
}

/// Where the rows came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// `postgres` or `duckdb`.
    pub kind: String,
    pub system_identifier: Option<String>,
    pub database: Option<String>,
    pub database_oid: Option<u32>,
    pub events_oid: Option<u32>,
    /// A DuckDB file's path.
    pub path: Option<String>,
}

impl Source {
    /// A DuckDB file.
    pub fn duckdb(path: &Path) -> Self {
        Self {
            kind: "duckdb".into(),
            system_identifier: None,
            database: None,
            database_oid: None,
            events_oid: None,
            path: Some(path.display().to_string()),
        }
    }
}

/// One file of the export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the manifest's folder.
    pub path: String,
    pub rows: u64,
    pub min_timestamp: Option<String>,
    pub max_timestamp: Option<String>,
    pub bytes: u64,
    pub sha256: String,
}

/// The manifest of the output at `output`: `<output>.manifest.json`.
pub fn path_of(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".manifest.json");
    PathBuf::from(name)
}

impl Manifest {
    /// A manifest of `files` (their final paths), written beside `output`.
    pub fn new(
        output: &Path,
        source: Source,
        since: Option<DateTime<Utc>>,
        snapshot: Option<String>,
        partition_by: Option<String>,
        rows: u64,
        files: &[Written],
    ) -> Self {
        let folder = output.parent().unwrap_or(Path::new("/"));
        let files = files
            .iter()
            .map(|f| FileEntry {
                path: f
                    .path
                    .strip_prefix(folder)
                    .unwrap_or(&f.path)
                    .display()
                    .to_string(),
                rows: f.rows,
                min_timestamp: f.range.map(|(min, _)| instant(min)),
                max_timestamp: f.range.map(|(_, max)| instant(max)),
                bytes: f.bytes,
                sha256: f.sha256.clone(),
            })
            .collect();
        Self {
            kind: KIND.into(),
            version: VERSION,
            tool: format!("export-events {}", env!("CARGO_PKG_VERSION")),
            created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            source,
            since: since.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true)),
            snapshot,
            partition_by,
            rows,
            files,
        }
    }

    /// The manifest as a file ready to be committed last, at `path_of(output)`.
    pub fn stage(&self, output: &Target) -> Result<AtomicFile> {
        let target = output.at(path_of(&output.path));
        let mut file = AtomicFile::create(&target)?;
        serde_json::to_writer_pretty(&mut file, self).context("writing the manifest")?;
        std::io::Write::write_all(&mut file, b"\n")?;
        Ok(file)
    }

    /// Reads a manifest, refusing what is not one.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// A manifest's text, read from `name`, refusing what is not one.
    pub fn parse(text: &str, name: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).with_context(|| format!("{name} is not JSON"))?;
        if value.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
            bail!(crate::error::UsageError(format!(
                "{name} is not an export-events manifest (no \"kind\": \"{KIND}\")"
            )));
        }
        serde_json::from_value(value).with_context(|| format!("reading {name}"))
    }

    /// The paths of its files, each inside the manifest's folder: a manifest naming `../x`, an
    /// absolute path or a path through a symlink is refused (manifests are read back from
    /// shared folders; nothing outside the output is ever hashed or deleted on their word).
    pub fn file_paths(&self, manifest: &Path) -> Result<Vec<PathBuf>> {
        let folder = manifest.parent().unwrap_or(Path::new("/"));
        self.confined(manifest, |name| crate::confine::inside(folder, name))
    }

    /// As [`Self::file_paths`] for a manifest in object storage (`manifest` is its key as a
    /// path): keys under the manifest's prefix.
    pub fn file_keys(&self, manifest: &Path) -> Result<Vec<PathBuf>> {
        let folder = manifest.parent().unwrap_or(Path::new("/"));
        self.confined(manifest, |name| {
            crate::confine::relative(name).map(|r| folder.join(r))
        })
    }

    fn confined(
        &self,
        manifest: &Path,
        place: impl Fn(&str) -> Result<PathBuf, crate::confine::Refused>,
    ) -> Result<Vec<PathBuf>> {
        self.files
            .iter()
            .map(|f| {
                place(&f.path).map_err(|e| {
                    crate::error::UsageError(format!(
                        "manifest {} names {e}: refusing it",
                        manifest.display()
                    ))
                    .into()
                })
            })
            .collect()
    }
}

/// An instant as RFC 3339 in UTC with microseconds.
fn instant(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
        .unwrap_or_else(|| if micros > 0 { "infinity" } else { "-infinity" }.into())
}

/// Removes the manifest of `output`, before a commit that replaces what it describes.
pub fn remove_old(output: &Target) -> Result<()> {
    let path = path_of(&output.path);
    if let Some(bucket) = &output.remote {
        return bucket.delete(&super::target::key_of(&path));
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing the old manifest {}", path.display()))
        }
        _ => Ok(()),
    }
}
