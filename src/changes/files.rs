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
use crate::cli::{ChangeFormat, Compression};
use crate::sink::text::{boolean, push_timestamp};
use crate::sink::{self, parquet as parquet_sink, AtomicFile, Target};

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

/// Changes per Parquet row batch.
const PARQUET_BATCH: usize = 65_536;

/// A change file being written as the changes stream in: memory stays flat whatever the size
/// of a transaction. Its name, which needs the end LSN, is given at [`Self::finish`].
pub struct ChangeFile {
    writer: Writer,
    folder: PathBuf,
    from: Lsn,
    format: ChangeFormat,
    rows: u64,
}

enum Writer {
    Csv(Box<csv::Writer<std::io::BufWriter<AtomicFile>>>),
    Parquet {
        writer: Box<ArrowWriter<AtomicFile>>,
        pending: Vec<Change>,
    },
}

impl ChangeFile {
    /// Starts the file of the changes from `from`.
    pub fn create(folder: &Path, from: Lsn, format: ChangeFormat) -> Result<Self> {
        // A provisional name: the temporary file starts with `.changes_<from>_`, which
        // `remove_unconfirmed` knows.
        let provisional = path(folder, from, Lsn(0), format);
        let target = Target::resolve(Some(&provisional), "", Path::new("/"))?;
        let file = AtomicFile::create(&target)?;
        let writer = match format {
            ChangeFormat::Csv => {
                let mut w = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(std::io::BufWriter::with_capacity(1 << 20, file));
                w.write_record(columns())?;
                Writer::Csv(Box::new(w))
            }
            ChangeFormat::Parquet => Writer::Parquet {
                writer: Box::new(ArrowWriter::try_new(
                    file,
                    schema(),
                    Some(parquet_sink::properties(Compression::Zstd)),
                )?),
                pending: Vec::with_capacity(PARQUET_BATCH),
            },
        };
        Ok(Self {
            writer,
            folder: folder.to_owned(),
            from,
            format,
            rows: 0,
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn push(&mut self, change: Change) -> Result<()> {
        self.rows += 1;
        match &mut self.writer {
            Writer::Csv(w) => write_csv_row(w, &change),
            Writer::Parquet { writer, pending } => {
                pending.push(change);
                if pending.len() == PARQUET_BATCH {
                    writer.write(&record_batch(pending)?)?;
                    pending.clear();
                }
                Ok(())
            }
        }
    }

    /// Completes the file as the changes up to `to`, durably; `None` (and no file) when no
    /// change was pushed.
    pub fn finish(self, to: Lsn) -> Result<Option<PathBuf>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let path = path(&self.folder, self.from, to, self.format);
        let mut file = match self.writer {
            Writer::Csv(w) => w
                .into_inner()
                .map_err(|e| e.into_error())?
                .into_inner()
                .map_err(|e| e.into_error())?,
            Writer::Parquet {
                mut writer,
                pending,
            } => {
                if !pending.is_empty() {
                    writer.write(&record_batch(&pending)?)?;
                }
                writer.into_inner()?
            }
        };
        file.retarget(&path);
        sink::commit_all(vec![file]).with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(path))
    }
}

fn write_csv_row(w: &mut csv::Writer<impl std::io::Write>, c: &Change) -> Result<()> {
    let mut time = Vec::new();
    push_timestamp(&mut time, c.commit_time);
    let mut stamp = Vec::new();
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
    Ok(())
}

fn schema() -> Arc<Schema> {
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
    Arc::new(Schema::new(
        columns()
            .zip(types)
            .map(|(name, (ty, nullable))| Field::new(name, ty, nullable))
            .collect::<Vec<_>>(),
    ))
}

fn record_batch(changes: &[Change]) -> Result<RecordBatch> {
    let ints = |f: fn(&Change) -> Option<i64>| -> ArrayRef {
        Arc::new(changes.iter().map(f).collect::<Int64Array>())
    };
    let times = |f: fn(&Change) -> Option<i64>| -> ArrayRef {
        Arc::new(
            changes
                .iter()
                .map(f)
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            changes.iter().map(|c| c.lsn.to_string()),
        )),
        times(|c| Some(c.commit_time)),
        ints(|c| Some(i64::from(c.xid))),
        Arc::new(StringArray::from_iter_values(
            changes.iter().map(|c| c.op.name()),
        )),
        ints(|c| Some(c.id)),
        times(|c| c.timestamp),
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
    Ok(RecordBatch::try_new(schema(), columns)?)
}
