//! The manifest every export writes last, `<output>.manifest.json`: what was exported, from
//! where, as of which snapshot, and per file its path, rows, timestamp range, size and SHA-256.
//! It is committed with the files (last in the same journaled commit) after the previous
//! manifest is removed, so a manifest never stands beside files it does not describe: a consumer
//! can wait for it as a `_SUCCESS` marker. `export-events verify` checks files against it.

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{AtomicFile, Location, Target, Written};

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
    pub fn duckdb(path: &std::path::Path) -> Self {
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

impl Manifest {
    /// A manifest of `files` (at their final keys), written beside `output`.
    pub fn new(
        output: &Location,
        source: Source,
        since: Option<DateTime<Utc>>,
        snapshot: Option<String>,
        partition_by: Option<String>,
        rows: u64,
        files: &[Written],
    ) -> Self {
        let folder = format!("{}/", output.folder_key().trim_end_matches('/'));
        let files = files
            .iter()
            .map(|f| FileEntry {
                path: f.key.strip_prefix(&folder).unwrap_or(&f.key).to_owned(),
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

    /// The manifest as a file ready to be committed last, beside `output`.
    pub fn stage(&self, output: &Target) -> Result<AtomicFile> {
        let mut file = output.at(output.at.manifest()).create_file()?;
        serde_json::to_writer_pretty(&mut file, self).context("writing the manifest")?;
        std::io::Write::write_all(&mut file, b"\n")?;
        Ok(file)
    }

    /// Reads the manifest at `at`, refusing what is not one.
    pub fn read(at: &Location) -> Result<Self> {
        let shown = at.shown();
        let text = at
            .store()
            .get(at.key())
            .with_context(|| format!("reading manifest {shown}"))?
            .with_context(|| format!("manifest {shown} not found"))?;
        Self::parse(&String::from_utf8_lossy(&text), &shown)
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

    /// The keys of its files, each inside the manifest's folder: a manifest naming `../x`, an
    /// absolute path or (in a folder) a path through a symlink is refused (manifests are read
    /// back from shared places; nothing outside the output is ever hashed or deleted on their
    /// word).
    pub fn file_keys(&self, manifest: &Location) -> Result<Vec<String>> {
        let folder = manifest.folder();
        self.files
            .iter()
            .map(|f| {
                folder.store().confine(folder.key(), &f.path).map_err(|e| {
                    crate::error::UsageError(format!(
                        "manifest {} names {e}: refusing it",
                        manifest.shown()
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

/// Removes the manifest of `output`, before a commit that replaces what it describes (an
/// object store may end uploads to a key it deletes: before the new one is started).
pub fn remove_old(output: &Location) -> Result<()> {
    let manifest = output.manifest();
    manifest
        .store()
        .delete(manifest.key())
        .with_context(|| format!("removing the old manifest {}", manifest.shown()))
}
