//! The distribution sort of the sequential plan: rows read in any order become the export's order
//! (newest first, ties by id, highest first) in bounded memory, with one extra local write and
//! read of the data and no external merge.
//!
//! The key range is cut into buckets (from PostgreSQL's statistics, see `source::scan`); as the
//! readers hand in batches, [`Spill::route`] (`route`) sends each row to its bucket's spill file
//! (Arrow IPC, uncompressed: LZ4 halved it and cost 10% of the run, `docs/performance.md`; in a
//! private temporary folder). When the read is done,
//! [`Spilled::for_each_sorted`] (`sorted`) takes the buckets newest first: a loader thread reads
//! one into memory and sorts it while the caller's thread streams the one before to the sinks. A
//! bucket larger than the memory budget (skewed data, stale statistics, a flood of equal
//! timestamps) is split again at quantiles of its own keys (timestamp and id together, so even
//! one timestamp splits) before it is loaded: never more than about two buckets are in memory.
//! This module holds what both phases share: the key and a bucket's spill file.

mod route;
mod sorted;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use arrow::array::{Array, AsArray as _, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};

pub use route::Spill;
pub use sorted::Spilled;

/// A row's place in the export's order: (timestamp is null, timestamp, id), ascending; the
/// export runs it descending (`ORDER BY timestamp DESC, id DESC`, nulls first as PostgreSQL
/// puts them).
pub type Key = (bool, i64, i64);

/// Memory a sorted row costs beyond its data: its key and place while sorting.
const ORDER_BYTES: u64 = std::mem::size_of::<([u64; 2], u32)>() as u64;

/// The `timestamp` and `id` columns of `batch`, which make a row's key.
fn key_columns(batch: &RecordBatch) -> Result<(&TimestampMicrosecondArray, &Int64Array)> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .with_context(|| format!("the export query has no {name} column"))
    };
    let time = column("timestamp")?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .context("timestamp is not a timestamp in microseconds")?;
    let id = column("id")?
        .as_primitive_opt::<Int64Type>()
        .context("id is not a 64-bit integer")?;
    Ok((time, id))
}

/// The key of row `row` of the key columns.
fn key_at(time: &TimestampMicrosecondArray, id: &Int64Array, row: usize) -> Key {
    match time.is_null(row) {
        true => (true, 0, id.value(row)),
        false => (false, time.value(row), id.value(row)),
    }
}

/// The key of every row of `batch`.
fn keys(batch: &RecordBatch) -> Result<Vec<Key>> {
    let (time, id) = key_columns(batch)?;
    Ok((0..batch.num_rows()).map(|i| key_at(time, id, i)).collect())
}

/// Where a key goes, among buckets cut at ascending `cuts`: bucket `i` holds
/// `cuts[i-1] <= key < cuts[i]`.
fn bucket_of(cuts: &[Key], key: &Key) -> usize {
    cuts.partition_point(|c| c <= key)
}

/// One bucket's spill file, as the read left it.
#[derive(Debug)]
struct Part {
    path: PathBuf,
    rows: u64,
    /// The rows' size in memory (Arrow buffers), which loading it costs again.
    bytes: u64,
    /// How often its rows were split already.
    splits: u32,
}

/// What a bucket holds while the read fills it, at least: waiting pieces and a write buffer
/// (`route`).
const BUCKET_FLOOR_BYTES: u64 = (16 + 8) << 10;
/// Open files left for everything but the spill: connections, DuckDB, outputs, spools.
const OTHER_FILES: u64 = 64;

/// The most buckets one spill may have, with `memory` for the sort: each is an open file while
/// the read fills it, and a bucket's buffers have a floor, so both the limit on open files and
/// `--memory` bound it (a quarter of the memory for the buckets' floors). Fewer buckets than
/// the statistics ask for only makes some too large to load, and those are split again.
pub fn max_buckets(memory: u64) -> u64 {
    let files = open_files_limit().saturating_sub(OTHER_FILES) * 3 / 4;
    let memory = memory / 4 / BUCKET_FLOOR_BYTES;
    files.min(memory).clamp(2, 4_096)
}

/// This process's limit on open files, raised first to what the system allows (the soft limit
/// of shells and systemd is often 1024, the hard one much more; Go's runtime raises it so too).
fn open_files_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return 1_024;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        limit.rlim_cur
    })
}

impl Part {
    /// What loading and sorting it holds at most: its rows twice (as read, and copied into one
    /// batch) and a sort entry a row.
    fn load_cost(&self) -> u64 {
        2 * self.bytes + self.rows * ORDER_BYTES
    }
}

#[cfg(test)]
mod tests;
