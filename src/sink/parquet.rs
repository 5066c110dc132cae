//! Typed Parquet for analysts, in the model's schema (`id` INT64, `timestamp` TIMESTAMP in
//! microseconds, UTC-adjusted, `rule` string, ...), same row order as the CSV. Encoded by the
//! `parquet` crate's Arrow column writers from the Arrow batches, columns on two threads; row
//! groups of about 1M rows or 128 MB.

use anyhow::{Context as _, Result};
use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use super::format::{Compression, Encoding, Format};
use super::Sink;
use crate::store::{AtomicFile, Staged, Target};

/// The registry's entry.
pub const FORMAT: Format = Format {
    name: "parquet",
    extension: "parquet",
    text: false,
    create,
};

fn create(target: &Target, schema: SchemaRef, encoding: &Encoding) -> Result<Box<dyn Sink>> {
    Ok(Box::new(ParquetSink::create(
        target,
        schema,
        encoding.compression,
    )?))
}

/// A row group ends at about 1M rows or 128 MB, whichever comes first.
pub const ROW_GROUP_ROWS: usize = 1 << 20;
pub const ROW_GROUP_BYTES: usize = 128 << 20;

/// Columns of the event whose values are (nearly) all distinct. A dictionary of them only
/// costs hashing every value until it outgrows its page (1 MiB, about 128k values) and falls
/// back to plain encoding; in small files (a table's day partitions) it never does, and every
/// id is hashed for nothing.
const DISTINCT: [&str; 3] = ["id", "timestamp", "trigger_telemetry_id"];

/// How every Parquet file of the project is encoded (files, dataset parts, table data files):
/// the codec, the row groups, who wrote it.
pub fn properties(compression: Compression) -> WriterProperties {
    let codec = match compression {
        Compression::Zstd => Codec::ZSTD(ZstdLevel::default()),
        Compression::Snappy => Codec::SNAPPY,
        Compression::Gzip => Codec::GZIP(GzipLevel::default()),
        Compression::None => Codec::UNCOMPRESSED,
    };
    let mut builder = WriterProperties::builder();
    for column in DISTINCT {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    builder
        .set_compression(codec)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_created_by(format!("export-events {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Rows gathered before their columns are encoded, side by side on two threads.
const ENCODE_ROWS: usize = 65_536;

/// A Parquet file being written atomically. Its columns are encoded in parallel (the `parquet`
/// crate's column writers, one row group at a time): Parquet's dictionary, statistics and zstd
/// work is most of an export's own CPU, and with the sequential plan it is all that is left
/// once the read is done.
pub struct ParquetSink {
    file: SerializedFileWriter<AtomicFile>,
    factory: ArrowRowGroupWriterFactory,
    /// The column writers of the row group being written (none between row groups).
    columns: Vec<ArrowColumnWriter>,
    group_rows: usize,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    schema: SchemaRef,
    target: Target,
}

impl ParquetSink {
    /// Starts the file.
    pub fn create(target: &Target, schema: SchemaRef, compression: Compression) -> Result<Self> {
        let (file, factory) = ArrowWriter::try_new(
            target.create_file()?,
            schema.clone(),
            Some(properties(compression)),
        )
        .and_then(ArrowWriter::into_serialized_writer)
        .with_context(|| format!("starting {}", target.at.shown()))?;
        Ok(Self {
            file,
            factory,
            columns: Vec::new(),
            group_rows: 0,
            pending: Vec::new(),
            pending_rows: 0,
            schema,
            target: target.clone(),
        })
    }

    /// Encodes the gathered rows into the row group, which ends when it is full.
    fn encode(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.columns.is_empty() {
            let index = self.file.flushed_row_groups().len();
            self.columns = self.factory.create_column_writers(index)?;
        }
        let pending = std::mem::take(&mut self.pending);
        let fields = self.schema.fields();
        let (heavy, light) = halves(&mut self.columns, fields);
        let write = |columns: Share| -> Result<()> {
            for (index, writer) in columns {
                for batch in &pending {
                    for leaf in compute_leaves(&fields[index], batch.column(index))? {
                        writer.write(&leaf)?;
                    }
                }
            }
            Ok(())
        };
        std::thread::scope(|scope| -> Result<()> {
            let other = scope.spawn(|| write(light));
            let mine = write(heavy);
            other
                .join()
                .map_err(|_| anyhow::anyhow!("a Parquet encoder panicked"))??;
            mine
        })
        .with_context(|| format!("writing {}", self.target.at.shown()))?;
        self.group_rows += self.pending_rows;
        self.pending_rows = 0;
        let bytes: usize = self
            .columns
            .iter()
            .map(ArrowColumnWriter::memory_size)
            .sum();
        if self.group_rows >= ROW_GROUP_ROWS || bytes >= ROW_GROUP_BYTES {
            self.end_row_group()?;
        }
        Ok(())
    }

    /// Closes the row group's columns (their last pages compressed in parallel too) and
    /// appends it to the file.
    fn end_row_group(&mut self) -> Result<()> {
        if self.columns.is_empty() {
            return Ok(());
        }
        let mut columns = std::mem::take(&mut self.columns);
        let later = columns.split_off(columns.len() / 2);
        let close = |columns: Vec<ArrowColumnWriter>| -> Result<Vec<ArrowColumnChunk>> {
            columns
                .into_iter()
                .map(|c| c.close().map_err(Into::into))
                .collect()
        };
        let chunks = std::thread::scope(|scope| -> Result<Vec<ArrowColumnChunk>> {
            let other = scope.spawn(|| close(later));
            let mut chunks = close(columns)?;
            chunks.extend(
                other
                    .join()
                    .map_err(|_| anyhow::anyhow!("a Parquet encoder panicked"))??,
            );
            Ok(chunks)
        })?;
        let mut group = self.file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut group)?;
        }
        group.close()?;
        self.group_rows = 0;
        Ok(())
    }
}

/// Column writers with their column indexes, for one encoding thread.
type Share<'a> = Vec<(usize, &'a mut ArrowColumnWriter)>;

/// The column writers in two sets of about equal work, with their column indexes: text columns
/// (dictionary encoding) count three times.
fn halves<'a>(
    columns: &'a mut [ArrowColumnWriter],
    fields: &arrow::datatypes::Fields,
) -> (Share<'a>, Share<'a>) {
    let weight = |i: usize| match fields[i].data_type() {
        arrow::datatypes::DataType::Utf8 | arrow::datatypes::DataType::LargeUtf8 => 3,
        _ => 1,
    };
    let mut all: Vec<(usize, &mut ArrowColumnWriter)> = columns.iter_mut().enumerate().collect();
    all.sort_by_key(|(i, _)| std::cmp::Reverse(weight(*i)));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut wa, mut wb) = (0, 0);
    for (i, writer) in all {
        if wa <= wb {
            wa += weight(i);
            a.push((i, writer));
        } else {
            wb += weight(i);
            b.push((i, writer));
        }
    }
    (a, b)
}

impl Sink for ParquetSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        // Same layout, declared types: a cast is free where the batch's type already matches.
        let columns = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(column, field)| arrow::compute::cast(column, field.data_type()))
            .collect::<Result<Vec<ArrayRef>, _>>()
            .context("converting a batch to the Parquet schema")?;
        let typed = RecordBatch::try_new(self.schema.clone(), columns)
            .context("a batch of the export query")?;
        self.pending_rows += typed.num_rows();
        self.pending.push(typed);
        if self.pending_rows >= ENCODE_ROWS {
            self.encode()?;
        }
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<Staged> {
        let path = self.target.at.shown();
        self.encode()?;
        self.end_row_group()
            .with_context(|| format!("finishing {path}"))?;
        let file = self
            .file
            .into_inner()
            .with_context(|| format!("finishing {path}"))?;
        Ok(Staged::File(file))
    }
}
