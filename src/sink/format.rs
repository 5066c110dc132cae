//! What an output format is: its name (as `--format` takes it), its file extension and the
//! constructor of its sink; and the encoding options every format may read. The formats
//! themselves are listed in `registry`. [`Format::open`] also counts each file's rows and
//! timestamp range for the manifest, whatever the format.

use anyhow::Result;
use arrow::array::{Array, AsArray as _};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;

use super::compress::TextCompression;
use super::Sink;
use crate::store::{Staged, Target};

/// One output format.
#[derive(Debug)]
pub struct Format {
    /// As `--format` takes it.
    pub name: &'static str,
    /// Of its files, without the dot.
    pub extension: &'static str,
    /// Whether `--compression gzip|zstd` compresses the whole file (text formats), adding
    /// `.gz`/`.zst` to its name; other formats compress inside the file.
    pub text: bool,
    /// Starts a file of this format at the target, for batches of `schema`.
    pub create: fn(&Target, SchemaRef, &Encoding) -> Result<Box<dyn Sink>>,
}

impl PartialEq for Format {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Format {
    /// The extension of this format's files under `encoding` (`csv.zst`).
    pub fn file_extension(&self, encoding: &Encoding) -> String {
        if self.text {
            format!("{}{}", self.extension, encoding.text.suffix())
        } else {
            self.extension.to_owned()
        }
    }

    /// Starts a file of this format at the target; its rows and timestamp range are recorded.
    pub fn open(
        &self,
        target: &Target,
        schema: SchemaRef,
        encoding: &Encoding,
    ) -> Result<Box<dyn Sink>> {
        let timestamp = schema.index_of("timestamp").ok();
        Ok(Box::new(Recorded {
            inner: (self.create)(target, schema, encoding)?,
            timestamp,
            rows: 0,
            range: None,
        }))
    }
}

/// How files are encoded, beyond their format.
#[derive(Debug, Clone, Copy)]
pub struct Encoding {
    /// Parquet's codec.
    pub compression: Compression,
    /// Compression of whole text files (CSV).
    pub text: TextCompression,
}

/// Compression codecs (`--compression`): Parquet's, and gzip/zstd for CSV files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    Zstd,
    Snappy,
    Gzip,
    None,
}

/// A sink that counts the rows it passes on and their timestamp range.
struct Recorded {
    inner: Box<dyn Sink>,
    timestamp: Option<usize>,
    rows: u64,
    range: Option<(i64, i64)>,
}

impl Sink for Recorded {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        if let Some(column) = self.timestamp.map(|i| batch.column(i)) {
            if let DataType::Timestamp(TimeUnit::Microsecond, _) = column.data_type() {
                let values = column.as_primitive::<TimestampMicrosecondType>();
                let min = arrow::compute::min(values);
                let max = arrow::compute::max(values);
                if let (Some(min), Some(max)) = (min, max) {
                    self.range = Some(match self.range {
                        Some((a, b)) => (a.min(min), b.max(max)),
                        None => (min, max),
                    });
                }
            }
        }
        self.inner.write_batch(batch)
    }

    fn close(self: Box<Self>) -> Result<Staged> {
        let mut staged = self.inner.close()?;
        if let Staged::File(file) = &mut staged {
            file.record(self.rows, self.range);
        }
        Ok(staged)
    }
}
