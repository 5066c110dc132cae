//! Compressed CSV: the compatible CSV bytes through gzip or zstd, streaming, readable by `zcat`,
//! `zstdcat`, pandas and DuckDB. Fast levels (gzip 1, zstd 1): an export is about speed, and the
//! files are ordinary gzip and zstd streams whatever the level.

use std::io::{self, Write};

use flate2::write::GzEncoder;

use crate::store::AtomicFile;

/// Compression of text formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextCompression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl TextCompression {
    /// What the file name gets after the format's extension (`.gz`).
    pub fn suffix(self) -> &'static str {
        match self {
            TextCompression::None => "",
            TextCompression::Gzip => ".gz",
            TextCompression::Zstd => ".zst",
        }
    }

    /// The compression a file name asks for (`x.csv.zst`).
    pub fn of_name(name: &str) -> Self {
        if name.ends_with(".gz") {
            TextCompression::Gzip
        } else if name.ends_with(".zst") {
            TextCompression::Zstd
        } else {
            TextCompression::None
        }
    }
}

/// A file written through a compressor, or as it is.
pub enum Compressed {
    Plain(AtomicFile),
    Gzip(GzEncoder<AtomicFile>),
    Zstd(zstd::stream::write::Encoder<'static, AtomicFile>),
}

impl Compressed {
    pub fn new(file: AtomicFile, compression: TextCompression) -> io::Result<Self> {
        Ok(match compression {
            TextCompression::None => Compressed::Plain(file),
            TextCompression::Gzip => {
                Compressed::Gzip(GzEncoder::new(file, flate2::Compression::fast()))
            }
            TextCompression::Zstd => Compressed::Zstd(zstd::stream::write::Encoder::new(file, 1)?),
        })
    }

    /// Ends the compressed stream; the file, complete.
    pub fn finish(self) -> io::Result<AtomicFile> {
        match self {
            Compressed::Plain(file) => Ok(file),
            Compressed::Gzip(encoder) => encoder.finish(),
            Compressed::Zstd(encoder) => encoder.finish(),
        }
    }
}

impl Write for Compressed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressed::Plain(w) => w.write(buf),
            Compressed::Gzip(w) => w.write(buf),
            Compressed::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressed::Plain(w) => w.flush(),
            Compressed::Gzip(w) => w.flush(),
            Compressed::Zstd(w) => w.flush(),
        }
    }
}
