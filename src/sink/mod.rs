//! Where rows go: files that appear whole or not at all ([`file`], at a [`target`], put in place
//! together by [`commit`]), partitioned [`dataset`]s, the formats that encode them ([`registry`]
//! lists them; [`csv`] with [`compress`], [`parquet`]), the [`manifest`] written last, and a
//! thread per format ([`threaded`]) so that encoding overlaps reading.

pub mod commit;
pub mod compress;
pub mod csv;
pub mod dataset;
pub mod file;
pub mod format;
pub mod manifest;
pub mod object;
pub mod object_dir;
pub mod parquet;
pub mod registry;
pub mod target;
pub mod text;
pub mod threaded;

use anyhow::Result;
use arrow::record_batch::RecordBatch;

pub use commit::{commit_all, recover, Staged};
pub use file::{AtomicFile, Written};
pub use target::Target;

/// An output format being written: takes batches in order, then hands back its finished file.
pub trait Sink: Send {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Finishes the encoding; the output is complete but not yet in place.
    fn close(self: Box<Self>) -> Result<Staged>;
}
