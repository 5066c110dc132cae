//! Typed Parquet for analysts, in the model's schema (`id` INT64, `timestamp` TIMESTAMP in
//! microseconds, UTC-adjusted, `rule` string, ...), same row order as the CSV. Encoded by the
//! `parquet` crate's `ArrowWriter` from the Arrow batches; row groups of about 1M rows or 128 MB.

use anyhow::{Context as _, Result};
use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::format::{Compression, Encoding, Format};
use super::{AtomicFile, Sink, Staged, Target};

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

/// How every Parquet file of the project is encoded: the codec, the row groups, who wrote it.
fn properties(compression: Compression) -> WriterProperties {
    let codec = match compression {
        Compression::Zstd => Codec::ZSTD(ZstdLevel::default()),
        Compression::Snappy => Codec::SNAPPY,
        Compression::Gzip => Codec::GZIP(GzipLevel::default()),
        Compression::None => Codec::UNCOMPRESSED,
    };
    WriterProperties::builder()
        .set_compression(codec)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_created_by(format!("export-events {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A Parquet file being written atomically.
pub struct ParquetSink {
    writer: ArrowWriter<AtomicFile>,
    schema: SchemaRef,
    target: Target,
}

impl ParquetSink {
    /// Starts the file.
    pub fn create(target: &Target, schema: SchemaRef, compression: Compression) -> Result<Self> {
        let writer = ArrowWriter::try_new(
            AtomicFile::create(target)?,
            schema.clone(),
            Some(properties(compression)),
        )
        .with_context(|| format!("starting {}", target.path.display()))?;
        Ok(Self {
            writer,
            schema,
            target: target.clone(),
        })
    }
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
        self.writer
            .write(&typed)
            .with_context(|| format!("writing {}", self.target.path.display()))
    }

    fn close(self: Box<Self>) -> Result<Staged> {
        let path = self.target.path.display().to_string();
        let file = self
            .writer
            .into_inner()
            .with_context(|| format!("finishing {path}"))?;
        Ok(Staged::File(file))
    }
}
