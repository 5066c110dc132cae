//! Each sink on a thread of its own, fed in order through a bounded channel: encoding (CSV text,
//! Parquet compression) runs while DuckDB reads the next rows from PostgreSQL, and with `both`
//! the two formats encode side by side. Reading, not writing, then sets the pace.
//!
//! The channels hold a few batches each, so memory stays bounded: a slow sink makes the reader
//! wait. A sink that fails stops its thread; the next write reports its error. However the run
//! ends (an error, a signal), dropping [`Writers`] joins every thread, so each unfinished file
//! is removed by its owner before the process exits.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use anyhow::{anyhow, Context as _, Result};
use arrow::record_batch::RecordBatch;

use super::Sink;
use crate::store::Staged;

/// Batches waiting per sink (DuckDB's batches hold 2,048 rows).
const QUEUE: usize = 32;

/// The running sinks, each handing back a `T` when it finishes.
pub struct Writers<T: Send + 'static = Staged> {
    senders: Vec<SyncSender<RecordBatch>>,
    threads: Vec<JoinHandle<Result<T>>>,
}

impl<T: Send + 'static> Writers<T> {
    /// Starts one thread per sink.
    pub fn spawn(sinks: Vec<Box<dyn Sink<T>>>) -> Result<Self> {
        let mut senders = Vec::with_capacity(sinks.len());
        let mut threads = Vec::with_capacity(sinks.len());
        for mut sink in sinks {
            let (sender, batches) = sync_channel::<RecordBatch>(QUEUE);
            let thread = std::thread::Builder::new()
                .name("export-events-sink".into())
                .spawn(move || {
                    for batch in batches {
                        sink.write_batch(&batch)?;
                    }
                    sink.close()
                })
                .context("starting a writer thread")?;
            senders.push(sender);
            threads.push(thread);
        }
        Ok(Self { senders, threads })
    }

    /// Hands `batch` to every sink (arrays are shared, not copied).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        for sender in &self.senders {
            if sender.send(batch.clone()).is_err() {
                // That sink's thread has ended, which only an error makes it do. Every thread
                // is joined (the others' unfinished files removed) before reporting it.
                self.senders.clear();
                let failure = join_all(std::mem::take(&mut self.threads)).err();
                return Err(failure.unwrap_or_else(|| anyhow!("a writer thread stopped")));
            }
        }
        Ok(())
    }

    /// Waits for every sink to finish; their outputs, in the order the sinks were given.
    pub fn close(mut self) -> Result<Vec<T>> {
        self.senders.clear();
        join_all(std::mem::take(&mut self.threads))
    }
}

/// The writers of an output once it has started: rows go to them, then they are closed.
pub struct Started<T: Send + 'static>(Option<Writers<T>>);

impl<T: Send + 'static> Default for Started<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T: Send + 'static> Started<T> {
    /// Starts one thread per sink.
    pub fn start(&mut self, sinks: Vec<Box<dyn Sink<T>>>) -> Result<()> {
        self.0 = Some(Writers::spawn(sinks)?);
        Ok(())
    }

    /// Hands `batch` to every sink.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.0
            .as_mut()
            .context("the writers start before the rows")?
            .write(batch)
    }

    /// Waits for every sink to finish; their outputs, in order.
    pub fn close(&mut self) -> Result<Vec<T>> {
        self.0
            .take()
            .context("the writers start before the rows")?
            .close()
    }
}

impl<T: Send + 'static> Drop for Writers<T> {
    fn drop(&mut self) {
        // Closing the channels ends each thread; its unfinished file goes with it.
        self.senders.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Joins every thread, even after one failed (an unjoined thread would be cut off when the
/// process exits, leaving its temporary file); the files, or the first failure.
fn join_all<T>(threads: Vec<JoinHandle<Result<T>>>) -> Result<Vec<T>> {
    let joined: Vec<Result<T>> = threads.into_iter().map(join).collect();
    joined.into_iter().collect()
}

fn join<T>(thread: JoinHandle<Result<T>>) -> Result<T> {
    thread
        .join()
        .map_err(|_| anyhow!("a writer thread panicked"))?
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::store::{AtomicFile, Target};

    /// Writes the ids it gets, one per line; fails on a negative id.
    struct Ids(AtomicFile);

    impl Sink for Ids {
        fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
            use std::io::Write as _;
            let ids = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            for id in ids.values() {
                anyhow::ensure!(*id >= 0, "negative id {id}");
                writeln!(self.0, "{id}")?;
            }
            Ok(())
        }
        fn close(self: Box<Self>) -> Result<Staged> {
            Ok(Staged::File(self.0))
        }
    }

    fn batch(ids: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids))]).unwrap()
    }

    fn sinks(dir: &std::path::Path, names: &[&str]) -> Vec<Box<dyn Sink>> {
        names
            .iter()
            .map(|name| {
                let target = Target::owned(crate::store::url::local(&dir.join(name)), 0o600);
                Box::new(Ids(target.create_file().unwrap())) as Box<dyn Sink>
            })
            .collect()
    }

    #[test]
    fn every_sink_gets_every_batch_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut writers = Writers::spawn(sinks(dir.path(), &["a", "b"])).unwrap();
        for start in (0..1_000).step_by(10) {
            writers
                .write(&batch((start..start + 10).collect()))
                .unwrap();
        }
        let files = writers.close().unwrap();
        crate::store::commit::commit_all(crate::store::url::local_store().as_ref(), files).unwrap();
        let expected: String = (0..1_000).map(|i| format!("{i}\n")).collect();
        for name in ["a", "b"] {
            assert_eq!(
                std::fs::read_to_string(dir.path().join(name)).unwrap(),
                expected
            );
        }
    }

    #[test]
    fn a_failing_sink_stops_the_writes_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut writers = Writers::spawn(sinks(dir.path(), &["a"])).unwrap();
        let error = (0..1_000)
            .map(|_| writers.write(&batch(vec![-1])))
            .find_map(Result::err)
            .expect("the failure reaches the reader");
        assert_eq!(error.to_string(), "negative id -1");
        assert!(writers.close().unwrap().is_empty());
    }

    #[test]
    fn dropped_writers_join_their_threads_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut writers = Writers::spawn(sinks(dir.path(), &["a", "b"])).unwrap();
        writers.write(&batch((0..100).collect())).unwrap();
        drop(writers); // as when reading fails half-way
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
