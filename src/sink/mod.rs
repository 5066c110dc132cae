//! How rows become files: the formats that encode them ([`registry`] lists them; [`csv`] with
//! [`compress`], [`parquet`]), partitioned [`dataset`]s, the [`manifest`] written last, Iceberg
//! tables' data files and commits ([`table`]), and a thread per sink ([`threaded`]) so that
//! encoding overlaps reading. Where the bytes go, and how they appear whole, is the store's
//! (`crate::store`).

pub mod compress;
pub mod csv;
pub mod dataset;
pub mod format;
pub mod manifest;
pub mod parquet;
pub mod registry;
pub mod table;
pub mod text;
pub mod threaded;

use anyhow::Result;
use arrow::record_batch::RecordBatch;

use crate::store::Staged;

/// An output being written: takes batches in order, then hands back what it finished: a file
/// or dataset to put in place ([`Staged`]), or a table's data files to commit.
pub trait Sink<Finished = Staged>: Send {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Finishes the encoding; the output is complete but not yet in place.
    fn close(self: Box<Self>) -> Result<Finished>;
}
