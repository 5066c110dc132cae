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
pub mod table;
pub mod target;
pub mod text;
pub mod threaded;

use anyhow::Result;
use arrow::record_batch::RecordBatch;

pub use commit::{commit_all, recover, replace, Staged};
pub use file::{AtomicFile, Written};
pub use target::Target;

/// The marker inside every dataset folder (or prefix) export-events writes, holding the token
/// of the run that staged it: tells a new dataset from the one it replaced when a killed commit
/// is completed, and a folder of ours (which a later run may replace) from anyone else's, even
/// with no manifest beside it (the second format's folder, or a commit killed after the old
/// manifest was removed). Readers skip it: hidden, and no data file's extension.
pub const DATASET_MARKER: &str = ".export-events-dataset";

/// An output being written: takes batches in order, then hands back what it finished: a file
/// or dataset to put in place ([`Staged`]), or a table's data files to commit.
pub trait Sink<Finished = Staged>: Send {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Finishes the encoding; the output is complete but not yet in place.
    fn close(self: Box<Self>) -> Result<Finished>;
}
