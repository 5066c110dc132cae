//! The sequential plan: the table read in page ranges (`ctid` ranges, as DuckDB's own scanner
//! reads PostgreSQL) on `--jobs` connections in one snapshot, in no particular order, and put in
//! the export's order by our own distribution sort (`source::distribute`) in bounded memory.
//! The ranges read `events` alone; the caller joins the rules (`source::rules`).
//!
//! PostgreSQL serves a sequential read for a third of the CPU of its ordered index scan
//! (`docs/performance.md`), which is what a full export of a large table waits on. A partitioned
//! `events` is read partition by partition, each in page ranges of its own.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use anyhow::{anyhow, Context as _, Result};
use arrow::record_batch::RecordBatch;

use super::distribute::{Key, Spill};
use super::engine::Engine;
use super::parallel::{self, Aborted};
use crate::progress::Progress;

/// How a sequential read goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// One query per page range, in any order.
    pub tasks: Vec<String>,
    /// Connections reading at once.
    pub jobs: usize,
    /// Where the distribution sort cuts the key range at first (ascending).
    pub cuts: Vec<Key>,
    /// What the run may hold in memory, in bytes (`--memory`).
    pub memory: u64,
}

/// Reads every task of `scan` (the first connection is `engine`'s, in the caller's transaction,
/// which it commits), spilling the rows into buckets in a private folder beside `spool` (removed
/// on every exit; a killed run's is removed by the next run's recovery), then hands the rows to
/// `each` in the export's order. Returns the number of rows.
pub fn for_each_batch(
    engine: &Engine,
    scan: &Scan,
    spool: &Path,
    progress: &Progress,
    each: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<u64> {
    let snapshot = parallel::export_snapshot(engine)?;
    let folder = spool.parent().unwrap_or(Path::new("."));
    let dir = crate::store::local::beside(spool, |b| b.tempdir_in(folder))
        .with_context(|| format!("creating a spill folder in {}", folder.display()))?;
    let spill: OnceLock<Spill> = OnceLock::new();
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    progress.phase("reading");
    let read = |reader: &Engine| -> Result<()> {
        loop {
            let Some(sql) = scan.tasks.get(next.fetch_add(1, Ordering::SeqCst)) else {
                return Ok(());
            };
            reader.for_each_batch(sql, |batch| {
                parallel::stop_if_aborted(&abort)?;
                spill
                    .get_or_init(|| {
                        Spill::new(dir.path(), batch.schema(), scan.cuts.clone(), scan.memory)
                    })
                    .route(batch)?;
                progress.advance(batch.num_rows() as u64);
                Ok(())
            })?;
        }
    };
    on_every_connection(engine, &snapshot, scan.jobs, &abort, &read).inspect_err(|_| {
        let _ = parallel::end_transaction(engine, false);
    })?;
    let Some(spill) = spill.into_inner() else {
        return Ok(0);
    };
    let spilled = spill.finish()?;
    progress.phase("writing");
    // Two buckets in memory at once (one handed on, one loading), the rest for the sinks.
    let rows = spilled.for_each_sorted(scan.memory / 3, each)?;
    drop(dir);
    Ok(rows)
}

/// Runs `read` on `engine` (in the caller's transaction) and on up to `jobs - 1` more
/// connections, each in `snapshot`, at once; the first real failure is the cause (the others
/// only stopped because of it, through `abort`).
fn on_every_connection(
    engine: &Engine,
    snapshot: &str,
    jobs: usize,
    abort: &AtomicBool,
    read: &(dyn Fn(&Engine) -> Result<()> + Sync),
) -> Result<()> {
    std::thread::scope(|scope| -> Result<()> {
        let mut readers = Vec::new();
        let mut started = Ok(());
        for _ in 1..jobs.max(1) {
            match parallel::join_snapshot(engine, snapshot) {
                Ok(reader) => readers.push(scope.spawn(move || {
                    let result = read(&reader);
                    let _ = parallel::end_transaction(&reader, result.is_ok());
                    result
                })),
                // Fewer connections than planned: fewer readers.
                Err(e) if parallel::is_connection_refused(&e) => break,
                Err(e) => {
                    started = Err(e);
                    break;
                }
            }
        }
        let mut result = started.and_then(|()| read(engine));
        if result.is_err() {
            abort.store(true, Ordering::SeqCst);
        }
        for reader in readers {
            let outcome = reader
                .join()
                .map_err(|_| anyhow!("a reader thread panicked"))
                .and_then(|r| r);
            // The first real failure is the cause; the others only stopped because of it.
            match (&result, outcome) {
                (Ok(()), Err(e)) => {
                    abort.store(true, Ordering::SeqCst);
                    result = Err(e);
                }
                (Err(mine), Err(theirs)) if mine.is::<Aborted>() && !theirs.is::<Aborted>() => {
                    result = Err(theirs);
                }
                _ => {}
            }
        }
        result
    })
}

/// The relations a sequential read covers: `events`, or its leaf partitions, with their sizes
/// in pages and whether each can be read in page ranges (not before PostgreSQL 14, which has no
/// TID range scan; not a foreign partition, nor a table with inherited children, which page
/// ranges would miss).
pub fn relations_sql() -> String {
    super::query::in_postgres(
        "SELECT c.oid::regclass::text, \
           (pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint, \
           (c.relkind = 'r' AND NOT (c.oid = 'events'::regclass AND c.relhassubclass) \
            AND current_setting('server_version_num')::int >= 140000) \
         FROM pg_class AS c WHERE c.oid = 'events'::regclass AND c.relkind = 'r' \
           OR c.oid IN (SELECT relid FROM pg_partition_tree('events'::regclass) WHERE isleaf) \
         ORDER BY 1",
    )
}

/// The page ranges of relations of `(name, pages)`: about `per_task` pages each; each
/// relation's last range is open-ended (the table may have grown since its size was read; rows
/// beyond are not in the snapshot, or are read here).
pub fn page_ranges(relations: &[(String, u64)], per_task: u64) -> Vec<(String, u64, Option<u64>)> {
    let per_task = per_task.max(1);
    let mut ranges = Vec::new();
    for (name, pages) in relations {
        let mut from = 0;
        while from + per_task < *pages {
            ranges.push((name.clone(), from, Some(from + per_task)));
            from += per_task;
        }
        ranges.push((name.clone(), from, None));
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_ranges_cover_every_relation_to_its_end() {
        let relations = [("events".to_owned(), 2_500), ("empty".to_owned(), 0)];
        assert_eq!(
            page_ranges(&relations, 1_000),
            [
                ("events".to_owned(), 0, Some(1_000)),
                ("events".to_owned(), 1_000, Some(2_000)),
                ("events".to_owned(), 2_000, None),
                ("empty".to_owned(), 0, None),
            ]
        );
        assert_eq!(page_ranges(&relations[..1], 5_000).len(), 1);
    }
}
