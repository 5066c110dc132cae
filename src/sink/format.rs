//! What an output format is: its name (as `--format` takes it), its file extension and the
//! constructor of its sink; and the encoding options every format may read. The formats
//! themselves are listed in `registry`.

use anyhow::Result;
use arrow::datatypes::SchemaRef;

use super::{Sink, Target};

/// One output format.
#[derive(Debug)]
pub struct Format {
    /// As `--format` takes it.
    pub name: &'static str,
    /// Of its files, without the dot.
    pub extension: &'static str,
    /// Starts a file of this format at the target, for batches of `schema`.
    pub create: fn(&Target, SchemaRef, &Encoding) -> Result<Box<dyn Sink>>,
}

impl PartialEq for Format {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// How files are encoded, beyond their format.
#[derive(Debug, Clone, Copy)]
pub struct Encoding {
    /// Parquet's codec.
    pub compression: Compression,
}

/// Parquet compression codecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    Zstd,
    Snappy,
    Gzip,
    None,
}
