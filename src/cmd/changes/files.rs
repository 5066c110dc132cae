//! Change files: one per batch of whole transactions (in each format asked for), named by the
//! LSN range they cover (`changes_<from>_<to>.csv`, 16 hex digits each, so names sort in commit
//! order and a rerun after a crash rewrites the same file). Columns: the model's change columns
//! (`lsn`, `commit_time`, `xid`, `op`, then the event's). Rows are gathered into Arrow batches
//! and written through the export's own sinks, atomically; nothing here encodes CSV or Parquet.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::decode::Changes;
use super::pgoutput::Lsn;
use super::rows::Rows;
use crate::error::UsageError;
use crate::model::Zone;
use crate::sink::format::{Encoding, Format};
use crate::sink::{self, object, Sink, Staged, Target};

/// What happened to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// One value of a change row, typed by its column's [`Kind`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int64(i64),
    /// Microseconds since the Unix epoch.
    Timestamp(i64),
    Text(String),
    Bool(bool),
}

/// The path of the file for changes in `[from, to)` in `format`, named for its encoding
/// (`.csv.gz` when gzip-compressed).
pub fn path(folder: &Path, from: Lsn, to: Lsn, format: &Format, encoding: &Encoding) -> PathBuf {
    folder.join(format!(
        "changes_{:016X}_{:016X}.{}",
        from.0,
        to.0,
        format.file_extension(encoding)
    ))
}

/// `.name` for a file `name`.
fn hidden(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}"))
}

/// The marker of a change files folder: which feed writes there.
const OWNER: &str = ".export-events-changes.json";

/// Claims `folder` for the feed `scope`, or refuses it when another feed (another server,
/// database or slot) writes there: its files would be taken for this feed's, and removed as
/// unconfirmed by the LSNs of another slot. A folder without the marker (new, or written by an
/// earlier version) is claimed.
pub fn claim(folder: &Target, scope: &str) -> Result<()> {
    let marker = folder.at(folder.path.join(OWNER));
    let text = match &folder.remote {
        Some(bucket) => match bucket.exists(&marker.key())? {
            true => Some(String::from_utf8_lossy(&bucket.read(&marker.key())?).into_owned()),
            false => None,
        },
        None => match std::fs::symlink_metadata(&marker.path) {
            Ok(meta) if meta.is_file() => Some(
                std::fs::read_to_string(&marker.path)
                    .with_context(|| format!("reading {}", marker.path.display()))?,
            ),
            Ok(_) => anyhow::bail!(UsageError(format!(
                "{} is not a file export-events wrote: remove it, or choose another --output",
                marker.path.display()
            ))),
            Err(_) => None,
        },
    };
    let owner = text.as_deref().map(|t| {
        serde_json::from_str::<serde_json::Value>(t)
            .ok()
            .and_then(|v| v.get("source").and_then(|s| s.as_str()).map(str::to_owned))
            .unwrap_or_default()
    });
    match owner {
        Some(owner) if owner == scope => Ok(()),
        Some(owner) => anyhow::bail!(UsageError(format!(
            "{} holds the change files of another feed ({owner:?}; this one is {scope:?}: \
             server-database-slot): give each database and slot its own --output",
            folder.shown()
        ))),
        None => {
            let text = serde_json::json!({ "source": scope });
            sink::replace(&marker, format!("{text:#}\n").as_bytes())
        }
    }
}

/// Removes the files (and partial files) of runs that wrote changes from `from` on but were
/// interrupted before the server had their confirmation: the slot is still at `from`, so the
/// files written next hold those changes again (maybe cut into other batches, under other
/// names). Confirmations go out asynchronously, so that can be several files: every file whose
/// range starts at or after `from` goes. The caller holds the slot's lock, so no other run is
/// writing them.
pub fn remove_unconfirmed(folder: &Target, from: Lsn) -> Result<()> {
    let unconfirmed = |name: &str| {
        let name = name.strip_prefix('.').unwrap_or(name);
        name.strip_prefix("changes_")
            .and_then(|rest| rest.get(..16))
            .and_then(|start| u64::from_str_radix(start, 16).ok())
            .is_some_and(|start| start >= from.0)
    };
    if let Some(bucket) = &folder.remote {
        for key in bucket.list(&folder.key())? {
            if unconfirmed(key.rsplit('/').next().unwrap_or_default()) {
                bucket.delete(&key)?;
            }
        }
        object::recover(bucket, &folder.shown())?;
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(&folder.path) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if unconfirmed(&entry.file_name().to_string_lossy()) {
            let path = entry.path();
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// The change files of one batch of transactions, being written as the changes stream in:
/// memory stays flat whatever the size of a transaction. Their names, which need the end LSN,
/// are given at [`Self::finish`].
pub struct ChangeFiles {
    sinks: Vec<(Box<dyn Sink>, &'static Format)>,
    gathered: Rows,
    folder: Target,
    encoding: Encoding,
    from: Lsn,
    rows: u64,
}

impl ChangeFiles {
    /// Starts the files of the changes from `from`, one per format.
    pub fn create(
        folder: &Target,
        from: Lsn,
        formats: &[&'static Format],
        encoding: &Encoding,
        mode: u32,
        zone: Zone,
    ) -> Result<Self> {
        let gathered = Rows::new(zone);
        let schema = gathered.schema();
        let sinks = formats
            .iter()
            .map(|format| {
                // A provisional name: the temporary file starts with `.changes_<from>_`, which
                // `remove_unconfirmed` knows. In object storage, where the upload's key is
                // fixed, it is that hidden name, copied to the final one at the end.
                let provisional = path(&folder.path, from, Lsn(0), format, encoding);
                let target = match &folder.remote {
                    Some(_) => folder.at(hidden(&provisional)),
                    None => Target::resolve(Some(&provisional), "", Path::new("/"))?,
                }
                .with_mode(mode);
                Ok((format.open(&target, schema.clone(), encoding)?, *format))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            sinks,
            gathered,
            folder: folder.clone(),
            encoding: *encoding,
            from,
            rows: 0,
        })
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(batch) = self.gathered.take()? {
            for (sink, _) in &mut self.sinks {
                sink.write_batch(&batch)?;
            }
        }
        Ok(())
    }

    /// Completes the files as the changes up to `to`, durably and together; none (and an empty
    /// list) when no change was pushed.
    pub fn finish(mut self, to: Lsn) -> Result<Vec<PathBuf>> {
        if self.rows == 0 {
            return Ok(Vec::new());
        }
        self.flush()?;
        let mut files = Vec::with_capacity(self.sinks.len());
        let mut paths = Vec::with_capacity(self.sinks.len());
        for (sink, format) in self.sinks {
            let path = path(&self.folder.path, self.from, to, format, &self.encoding);
            let Staged::File(mut file) = sink.close()? else {
                anyhow::bail!("a change file is a file");
            };
            file.retarget(&path);
            files.push(Staged::File(file));
            paths.push(self.folder.at(path).shown().into());
        }
        sink::commit_all(files)?;
        crate::cancel::committed();
        Ok(paths)
    }
}

impl Changes for ChangeFiles {
    fn push(&mut self, row: &[Value]) -> Result<()> {
        self.gathered.push(row)?;
        self.rows += 1;
        if self.gathered.full() {
            self.flush()?;
        }
        Ok(())
    }

    fn rows(&self) -> u64 {
        self.rows
    }
}
