//! Change files: one per batch of whole transactions, named by the LSN range they cover
//! (`changes_<from>_<to>.csv`, 16 hex digits each, so names sort in commit order and a rerun
//! after a crash rewrites the same file). Columns: `lsn` (of the transaction's commit),
//! `commit_time`, `xid`, `op`, then the export's event columns. CSV as the export writes it;
//! Parquet typed. Written atomically through the export's sinks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

use super::pgoutput::Lsn;
use crate::cli::ChangeFormat;
use crate::sink::text::{boolean, push_timestamp};
use crate::sink::{self, AtomicFile, Target};

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

/// One change of one event, with the event's columns as the export has them (a delete carries
/// what REPLICA IDENTITY sends: the id by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub lsn: Lsn,
    /// Microseconds since the Unix epoch.
    pub commit_time: i64,
    pub xid: u32,
    pub op: Op,
    pub id: i64,
    pub timestamp: Option<i64>,
    pub rule: Option<String>,
    pub acknowledged: Option<bool>,
    pub telemetry: Option<i64>,
    pub device: Option<i64>,
}

/// The columns of a change file: where and what, then the export's columns.
fn columns() -> impl Iterator<Item = &'static str> {
    ["lsn", "commit_time", "xid", "op"]
        .into_iter()
        .chain(crate::query::COLUMNS)
}

/// The path of the file for changes in `[from, to)`.
pub fn path(folder: &Path, from: Lsn, to: Lsn, format: ChangeFormat) -> PathBuf {
    let ext = match format {
        ChangeFormat::Csv => "csv",
        ChangeFormat::Parquet => "parquet",
    };
    folder.join(format!("changes_{:016X}_{:016X}.{ext}", from.0, to.0))
}

/// Removes the files (and partial files) of a run that wrote changes from `from` but was
/// interrupted before confirming them: the slot is still at `from`, so the file written next
/// holds those changes again (and maybe more, under another name).
pub fn remove_unconfirmed(folder: &Path, from: Lsn) -> Result<()> {
    let prefix = format!("changes_{:016X}_", from.0);
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.strip_prefix('.').unwrap_or(&name).starts_with(&prefix) {
            let path = entry.path();
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Writes `changes` to `path`, durably, replacing what a crashed run left there.
pub fn write(path: &Path, changes: &[Change], format: ChangeFormat) -> Result<()> {
    let target = Target::resolve(Some(path), "", Path::new("/"))?;
    let mut file = AtomicFile::create(&target)?;
    match format {
        ChangeFormat::Csv => write_csv(&mut file, changes),
        ChangeFormat::Parquet => write_parquet(&mut file, changes),
    }
    .with_context(|| format!("writing {}", path.display()))?;
    sink::commit_all(vec![file])
}

fn write_csv(file: &mut AtomicFile, changes: &[Change]) -> Result<()> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(std::io::BufWriter::new(file));
    w.write_record(columns())?;
    let mut time = Vec::new();
    let mut stamp = Vec::new();
    for c in changes {
        time.clear();
        push_timestamp(&mut time, c.commit_time);
        stamp.clear();
        if let Some(t) = c.timestamp {
            push_timestamp(&mut stamp, t);
        }
        let int = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        w.write_record([
            c.lsn.to_string().as_bytes(),
            &time,
            c.xid.to_string().as_bytes(),
            c.op.name().as_bytes(),
            c.id.to_string().as_bytes(),
            &stamp,
            c.rule.as_deref().unwrap_or("").as_bytes(),
            c.acknowledged.map_or(&b""[..], boolean),
            int(c.telemetry).as_bytes(),
            int(c.device).as_bytes(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

fn write_parquet(file: &mut AtomicFile, changes: &[Change]) -> Result<()> {
    let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let types = [
        (DataType::Utf8, false),
        (utc(), false),
        (DataType::Int64, false),
        (DataType::Utf8, false),
        (DataType::Int64, false),
        (utc(), true),
        (DataType::Utf8, true),
        (DataType::Boolean, true),
        (DataType::Int64, true),
        (DataType::Int64, true),
    ];
    let schema = Arc::new(Schema::new(
        columns()
            .zip(types)
            .map(|(name, (ty, nullable))| Field::new(name, ty, nullable))
            .collect::<Vec<_>>(),
    ));
    let ints = |f: fn(&Change) -> Option<i64>| -> ArrayRef {
        Arc::new(changes.iter().map(f).collect::<Int64Array>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            changes.iter().map(|c| c.lsn.to_string()),
        )),
        Arc::new(
            changes
                .iter()
                .map(|c| Some(c.commit_time))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        ints(|c| Some(i64::from(c.xid))),
        Arc::new(StringArray::from_iter_values(
            changes.iter().map(|c| c.op.name()),
        )),
        ints(|c| Some(c.id)),
        Arc::new(
            changes
                .iter()
                .map(|c| c.timestamp)
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        Arc::new(
            changes
                .iter()
                .map(|c| c.rule.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(
            changes
                .iter()
                .map(|c| c.acknowledged)
                .collect::<BooleanArray>(),
        ),
        ints(|c| c.telemetry),
        ints(|c| c.device),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let mut writer = ArrowWriter::try_new(file, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}
