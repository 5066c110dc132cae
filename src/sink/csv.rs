//! The CSV the original command wrote, byte for byte: Python's `csv.writer` defaults (comma,
//! minimal quoting, `""` for a quote, CRLF after every line, NULL as nothing) over the text of
//! [`super::text`]. The encoding itself is the `csv` crate's; this module only picks the text.

use std::io::BufWriter;

use anyhow::{bail, Context as _, Result};
use arrow::array::{Array, AsArray, BooleanArray, PrimitiveArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;

use super::text::{boolean, push_timestamp};
use super::{AtomicFile, Sink, Target};
use crate::query::COLUMNS;

/// Buffer size between the encoder and the file.
const BUFFER: usize = 1 << 20;

/// A compatible CSV file being written atomically.
pub struct CsvSink {
    writer: csv::Writer<BufWriter<AtomicFile>>,
    field: Vec<u8>,
    target: Target,
}

impl CsvSink {
    /// Starts the file and writes the header.
    pub fn create(target: &Target) -> Result<Self> {
        let file = BufWriter::with_capacity(BUFFER, AtomicFile::create(target)?);
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .quote_style(csv::QuoteStyle::Necessary)
            .from_writer(file);
        writer
            .write_record(COLUMNS)
            .context("writing the CSV header")?;
        Ok(Self {
            writer,
            field: Vec::with_capacity(64),
            target: target.clone(),
        })
    }

    fn write_row(&mut self, c: &Columns, row: usize) -> csv::Result<()> {
        let mut ints = itoa::Buffer::new();
        let w = &mut self.writer;
        w.write_field(ints.format(c.id.value(row)))?;
        self.field.clear();
        push_timestamp(&mut self.field, c.timestamp.value(row));
        w.write_field(&self.field)?;
        w.write_field(c.rule.get(row))?;
        w.write_field(if c.acknowledged.is_null(row) {
            &b""[..]
        } else {
            boolean(c.acknowledged.value(row))
        })?;
        for ids in [c.telemetry, c.device] {
            if ids.is_null(row) {
                w.write_field([])?;
            } else {
                w.write_field(ints.format(ids.value(row)))?;
            }
        }
        w.write_record(None::<&[u8]>)
    }
}

impl Sink for CsvSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let columns = Columns::of(batch)?;
        for row in 0..batch.num_rows() {
            self.write_row(&columns, row)
                .with_context(|| format!("writing {}", self.target.path.display()))?;
        }
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<AtomicFile> {
        let path = self.target.path.display();
        let buffered = self.writer.into_inner().map_err(|e| e.into_error());
        let file = buffered.and_then(|b| b.into_inner().map_err(|e| e.into_error()));
        file.with_context(|| format!("writing {path}"))
    }
}

/// The typed columns of one batch of the export query.
struct Columns<'a> {
    id: &'a PrimitiveArray<Int64Type>,
    timestamp: &'a PrimitiveArray<TimestampMicrosecondType>,
    rule: Strings<'a>,
    acknowledged: &'a BooleanArray,
    telemetry: &'a PrimitiveArray<Int64Type>,
    device: &'a PrimitiveArray<Int64Type>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self> {
        if batch.num_columns() != COLUMNS.len() {
            bail!(
                "the export query returned {} columns, expected {}",
                batch.num_columns(),
                COLUMNS.len()
            );
        }
        let column = |i: usize| batch.column(i).as_ref();
        let int64 = |i: usize| {
            column(i)
                .as_primitive_opt::<Int64Type>()
                .with_context(|| unexpected(batch, i))
        };
        let timestamp = match column(1).data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                column(1).as_primitive::<TimestampMicrosecondType>()
            }
            _ => bail!(unexpected(batch, 1)),
        };
        Ok(Self {
            id: int64(0)?,
            timestamp,
            rule: Strings::of(column(2)).with_context(|| unexpected(batch, 2))?,
            acknowledged: column(3)
                .as_boolean_opt()
                .with_context(|| unexpected(batch, 3))?,
            telemetry: int64(4)?,
            device: int64(5)?,
        })
    }
}

fn unexpected(batch: &RecordBatch, i: usize) -> String {
    format!(
        "column {} has unexpected type {}",
        COLUMNS[i],
        batch.column(i).data_type()
    )
}

/// A string column as DuckDB hands it over (plain or view layout); NULL reads as empty.
#[derive(Clone, Copy)]
enum Strings<'a> {
    Plain(&'a arrow::array::StringArray),
    View(&'a arrow::array::StringViewArray),
}

impl<'a> Strings<'a> {
    fn of(array: &'a dyn Array) -> Option<Self> {
        array
            .as_string_opt::<i32>()
            .map(Strings::Plain)
            .or_else(|| array.as_string_view_opt().map(Strings::View))
    }

    fn get(self, row: usize) -> &'a [u8] {
        match self {
            Strings::Plain(a) if !a.is_null(row) => a.value(row).as_bytes(),
            Strings::View(a) if !a.is_null(row) => a.value(row).as_bytes(),
            _ => b"",
        }
    }
}
