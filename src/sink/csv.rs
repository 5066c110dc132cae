//! The CSV the original command wrote, byte for byte: Python's `csv.writer` defaults (comma,
//! minimal quoting, `""` for a quote, CRLF after every line, NULL as nothing) over the text of
//! [`super::text`]. The encoding itself is the `csv` crate's; this module only picks the text of
//! each value from its column's type, so any schema of the model (exports, change files) works.

use std::io::Write as _;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use anyhow::{anyhow, bail, Context as _, Result};
use arrow::array::{Array, AsArray, BooleanArray, PrimitiveArray, StringArray, StringViewArray};
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;

use super::compress::{Compressed, TextCompression};
use super::format::{Encoding, Format};
use super::text::{boolean, Timestamps};
use super::Sink;
use crate::store::{Staged, Target};

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

/// A compatible CSV file being written atomically. Batches are encoded in pairs, the first on
/// a helper thread and the second on the sink's own, and written in order: with the sequential
/// plan the encoding follows the sort instead of overlapping the read, and one thread of CSV
/// text was what the sorted phase waited on.
pub struct CsvSink {
    file: Compressed,
    own: Encoder,
    helper: Option<Helper>,
    /// A batch is with the helper, to be written before the next one.
    waiting: bool,
    /// Whether a batch was written: the first is encoded here (a file of one batch starts no
    /// thread).
    started: bool,
    target: Target,
}

/// The thread that encodes every other batch.
struct Helper {
    batches: SyncSender<RecordBatch>,
    texts: Receiver<Result<Vec<u8>>>,
}

impl Helper {
    fn start() -> Result<Self> {
        let (batches, inbox) = sync_channel::<RecordBatch>(1);
        let (outbox, texts) = sync_channel(1);
        std::thread::Builder::new()
            .name("export-events-csv".into())
            .spawn(move || {
                let mut encoder = Encoder::default();
                for batch in inbox {
                    if outbox.send(encoder.encode(&batch)).is_err() {
                        return;
                    }
                }
            })
            .context("starting a CSV encoding thread")?;
        Ok(Self { batches, texts })
    }

    /// The text of the batch handed over last.
    fn text(&self) -> Result<Vec<u8>> {
        self.texts
            .recv()
            .map_err(|_| anyhow!("the CSV encoding thread stopped"))?
    }
}

impl CsvSink {
    /// Starts the file and writes the header (the schema's column names).
    pub fn create(
        target: &Target,
        schema: &SchemaRef,
        compression: TextCompression,
    ) -> Result<Self> {
        let mut file = target.create_file()?;
        file.hash_apart();
        let mut file = Compressed::new(file, compression)?;
        let mut own = Encoder::default();
        own.writer
            .write_record(schema.fields().iter().map(|f| f.name()))
            .context("writing the CSV header")?;
        file.write_all(&own.take()?)
            .with_context(|| format!("writing {}", target.at.shown()))?;
        Ok(Self {
            file,
            own,
            helper: None,
            waiting: false,
            started: false,
            target: target.clone(),
        })
    }

    fn write(&mut self, text: &[u8]) -> Result<()> {
        self.file
            .write_all(text)
            .with_context(|| format!("writing {}", self.target.at.shown()))
    }

    /// Writes the text of the batch the helper has, if it has one.
    fn collect(&mut self) -> Result<()> {
        if std::mem::take(&mut self.waiting) {
            let text = self
                .helper
                .as_ref()
                .expect("a helper is waited on")
                .text()?;
            self.write(&text)?;
        }
        Ok(())
    }
}

impl Sink for CsvSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        if !std::mem::replace(&mut self.started, true) {
            let text = self.own.encode(batch)?;
            return self.write(&text);
        }
        if !self.waiting {
            if self.helper.is_none() {
                self.helper = Some(Helper::start()?);
            }
            let helper = self.helper.as_ref().expect("just started");
            if helper.batches.send(batch.clone()).is_err() {
                // It only stops on an error, which its answer names.
                return Err(helper
                    .text()
                    .err()
                    .unwrap_or_else(|| anyhow!("CSV thread ended")));
            }
            self.waiting = true;
            return Ok(());
        }
        let text = self.own.encode(batch)?;
        self.collect()?;
        self.write(&text)
    }

    fn close(mut self: Box<Self>) -> Result<Staged> {
        self.collect()?;
        drop(self.helper.take());
        let path = self.target.at.shown();
        let file = self
            .file
            .finish()
            .with_context(|| format!("writing {path}"))?;
        Ok(Staged::File(file))
    }
}

/// Rows to CSV text: the `csv` crate's writer over a buffer, one per thread.
struct Encoder {
    writer: csv::Writer<Vec<u8>>,
    field: Vec<u8>,
    timestamps: Timestamps,
}

impl Default for Encoder {
    fn default() -> Self {
        Self {
            writer: text_writer(Vec::new()),
            field: Vec::with_capacity(64),
            timestamps: Timestamps::default(),
        }
    }
}

/// Python's `csv.writer` defaults, into `out`.
fn text_writer(out: Vec<u8>) -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .buffer_capacity(BUFFER)
        .from_writer(out)
}

/// The `csv` writer's own buffer, before its text is moved out.
const BUFFER: usize = 64 << 10;

impl Encoder {
    /// The CSV text of every row of `batch`.
    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<u8>> {
        let columns = batch
            .columns()
            .iter()
            .enumerate()
            .map(|(i, array)| Values::of(array.as_ref(), batch.schema().field(i).name()))
            .collect::<Result<Vec<_>>>()?;
        self.write_rows(&columns, batch.num_rows())
            .context("encoding CSV")?;
        self.take()
    }

    /// What was encoded since the last call.
    fn take(&mut self) -> Result<Vec<u8>> {
        let capacity = self.writer.get_ref().capacity();
        let writer = std::mem::replace(&mut self.writer, text_writer(Vec::with_capacity(capacity)));
        writer
            .into_inner()
            .map_err(|e| e.into_error())
            .context("encoding CSV")
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn batches_encoded_in_pairs_come_out_in_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("rule", DataType::Utf8, true),
        ]));
        let batch = |from: i64, rows: i64| {
            let names: Vec<Option<String>> = (from..from + rows)
                .map(|i| (i % 5 != 0).then(|| format!("rule \"{i}\",\nnext")))
                .collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(from..from + rows)),
                    Arc::new(StringArray::from(names)),
                ],
            )
            .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, batches: &[RecordBatch]| {
            let target = Target::owned(crate::store::url::local(&dir.path().join(name)), 0o600);
            let mut sink: Box<dyn Sink> =
                Box::new(CsvSink::create(&target, &schema, TextCompression::None).unwrap());
            batches.iter().for_each(|b| sink.write_batch(b).unwrap());
            crate::store::commit::commit_all(target.at.store(), vec![sink.close().unwrap()])
                .unwrap();
            std::fs::read(dir.path().join(name)).unwrap()
        };
        let whole = write("whole.csv", &[batch(0, 1_000)]);
        // An odd and an even number of batches, of uneven sizes.
        let sizes = [1, 299, 3, 400, 297];
        for count in [4, 5] {
            let mut from = 0;
            let batches: Vec<RecordBatch> = sizes[..count]
                .iter()
                .map(|&rows| {
                    from += rows;
                    batch(from - rows, rows)
                })
                .collect();
            let rows = from as usize;
            let paired = write(&format!("paired{count}.csv"), &batches);
            let expected = write(&format!("expected{count}.csv"), &[batch(0, from)]);
            assert_eq!(paired, expected, "{count} batches, {rows} rows");
        }
        assert!(whole.starts_with(b"id,rule\r\n0,\r\n1,\"rule \"\"1\"\",\nnext\"\r\n"));
    }
}
