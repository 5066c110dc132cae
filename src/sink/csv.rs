//! The CSV the original command wrote, byte for byte: Python's `csv.writer` defaults (comma,
//! minimal quoting, `""` for a quote, CRLF after every line, NULL as nothing) over the text of
//! [`super::text`]. The encoding itself is the `csv` crate's; this module only picks the text of
//! each value from its column's type, so any schema of the model (exports, change files) works.

use anyhow::{bail, Context as _, Result};
use arrow::array::{Array, AsArray, BooleanArray, PrimitiveArray, StringArray, StringViewArray};
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;

use super::compress::{Compressed, TextCompression};
use super::format::{Encoding, Format};
use super::text::{boolean, Timestamps};
use super::{AtomicFile, Sink, Staged, Target};

/// The registry's entry.
pub const FORMAT: Format = Format {
    name: "csv",
    extension: "csv",
    text: true,
    create,
};

fn create(target: &Target, schema: SchemaRef, encoding: &Encoding) -> Result<Box<dyn Sink>> {
    Ok(Box::new(CsvSink::create(target, &schema, encoding.text)?))
}

/// Buffer size between the encoder and the file.
const BUFFER: usize = 1 << 20;

/// A compatible CSV file being written atomically.
pub struct CsvSink {
    writer: csv::Writer<Compressed>,
    field: Vec<u8>,
    timestamps: Timestamps,
    target: Target,
}

impl CsvSink {
    /// Starts the file and writes the header (the schema's column names).
    pub fn create(
        target: &Target,
        schema: &SchemaRef,
        compression: TextCompression,
    ) -> Result<Self> {
        let file = Compressed::new(AtomicFile::create(target)?, compression)?;
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .quote_style(csv::QuoteStyle::Necessary)
            .buffer_capacity(BUFFER)
            .from_writer(file);
        writer
            .write_record(schema.fields().iter().map(|f| f.name()))
            .context("writing the CSV header")?;
        Ok(Self {
            writer,
            field: Vec::with_capacity(64),
            timestamps: Timestamps::default(),
            target: target.clone(),
        })
    }

    fn write_rows(&mut self, columns: &[Values], rows: usize) -> csv::Result<()> {
        let mut ints = itoa::Buffer::new();
        let w = &mut self.writer;
        for row in 0..rows {
            for column in columns {
                if column.is_null(row) {
                    w.write_field([])?;
                    continue;
                }
                match column {
                    Values::Int64(a) => w.write_field(ints.format(a.value(row)))?,
                    Values::Timestamp(a, naive) => {
                        self.field.clear();
                        self.timestamps.push(&mut self.field, a.value(row));
                        // A naive value (USE_TZ = False) has no offset: `str()` of a naive
                        // datetime.
                        if *naive && self.field.ends_with(b"+00:00") {
                            self.field.truncate(self.field.len() - b"+00:00".len());
                        }
                        w.write_field(&self.field)?;
                    }
                    Values::Text(a) => w.write_field(a.value(row))?,
                    Values::TextView(a) => w.write_field(a.value(row))?,
                    Values::Bool(a) => w.write_field(boolean(a.value(row)))?,
                }
            }
            w.write_record(None::<&[u8]>)?;
        }
        Ok(())
    }
}

impl Sink for CsvSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let columns = batch
            .columns()
            .iter()
            .enumerate()
            .map(|(i, array)| Values::of(array.as_ref(), batch.schema().field(i).name()))
            .collect::<Result<Vec<_>>>()?;
        self.write_rows(&columns, batch.num_rows())
            .with_context(|| format!("writing {}", self.target.path.display()))
    }

    fn close(self: Box<Self>) -> Result<Staged> {
        let path = self.target.path.display();
        let file = self
            .writer
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(Compressed::finish)
            .with_context(|| format!("writing {path}"))?;
        Ok(Staged::File(file))
    }
}

/// One column of a batch, typed by what its text is.
enum Values<'a> {
    Int64(&'a PrimitiveArray<Int64Type>),
    /// With whether it is naive (no time zone).
    Timestamp(&'a PrimitiveArray<TimestampMicrosecondType>, bool),
    Text(&'a StringArray),
    /// Strings as DuckDB may hand them over.
    TextView(&'a StringViewArray),
    Bool(&'a BooleanArray),
}

impl<'a> Values<'a> {
    fn of(array: &'a dyn Array, name: &str) -> Result<Self> {
        Ok(match array.data_type() {
            DataType::Int64 => Values::Int64(array.as_primitive()),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                Values::Timestamp(array.as_primitive(), tz.is_none())
            }
            DataType::Utf8 => Values::Text(array.as_string()),
            DataType::Utf8View => Values::TextView(array.as_string_view()),
            DataType::Boolean => Values::Bool(array.as_boolean()),
            other => bail!("column {name} has unexpected type {other}"),
        })
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            Values::Int64(a) => a.is_null(row),
            Values::Timestamp(a, _) => a.is_null(row),
            Values::Text(a) => a.is_null(row),
            Values::TextView(a) => a.is_null(row),
            Values::Bool(a) => a.is_null(row),
        }
    }
}
