//! Where rows go: files that appear whole or not at all ([`file`], at a [`target`]), the formats
//! that encode them ([`registry`] lists them; [`csv`], [`parquet`]), and a thread per format
//! ([`threaded`]) so that encoding overlaps reading.

pub mod csv;
pub mod file;
pub mod format;
pub mod parquet;
pub mod registry;
pub mod target;
pub mod text;
pub mod threaded;

use anyhow::Result;
use arrow::record_batch::RecordBatch;

pub use file::{commit_all, recover, AtomicFile};
pub use target::Target;

/// An output format being written: takes batches in order, then hands back its finished file.
pub trait Sink: Send {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Finishes the encoding; the file is complete but not yet in place.
    fn close(self: Box<Self>) -> Result<AtomicFile>;
}
