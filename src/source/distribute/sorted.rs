//! The sorted phase of the distribution sort: the spilled buckets loaded newest first, split
//! again when one is over the budget, sorted in memory and handed on in the export's order.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use anyhow::{anyhow, bail, Context as _, Result};
use arrow::array::{Array, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;

use super::{key_columns, keys, Key, Part, Spill};

/// Rows handed to the sinks at a time in the sorted phase.
const OUT_ROWS: usize = 8_192;
/// Splitting a bucket never goes deeper than this (each level divides by the parts it needs).
const MAX_SPLITS: u32 = 4;

/// The buckets of a finished read, oldest first.
pub struct Spilled {
    pub(super) folder: PathBuf,
    pub(super) schema: SchemaRef,
    pub(super) parts: Vec<Part>,
}

impl Spilled {
    /// Rows in all buckets.
    pub fn rows(&self) -> u64 {
        self.parts.iter().map(|p| p.rows).sum()
    }

    /// Hands every row to `each` in the export's order, newest first, in batches; a bucket is
    /// loaded and sorted (split first when it is over `budget` bytes) while the one before is
    /// handed on. Returns the number of rows.
    pub fn for_each_sorted(
        self,
        budget: u64,
        mut each: impl FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<u64> {
        let Spilled {
            folder,
            schema,
            parts,
        } = self;
        let (sender, sorted) = sync_channel::<Result<Sorted>>(0);
        let loader = std::thread::Builder::new()
            .name("export-events-sort".into())
            .spawn(move || {
                // A stack: the newest bucket on top; a split bucket's parts go back on it.
                let mut stack = parts;
                let mut splits = 0;
                while let Some(part) = stack.pop() {
                    let loaded = if part.load_cost() > budget && part.splits < MAX_SPLITS {
                        splits += 1;
                        let folder = folder.join(format!("split-{splits}"));
                        match split(&folder, &schema, part, budget) {
                            Ok(smaller) => {
                                stack.extend(smaller);
                                continue;
                            }
                            Err(e) => Err(e),
                        }
                    } else {
                        load_sorted(&part)
                    };
                    let failed = loaded.is_err();
                    if sender.send(loaded).is_err() || failed {
                        return;
                    }
                }
            })
            .context("starting the sort thread")?;
        let mut rows = 0u64;
        let result = (|| -> Result<u64> {
            for bucket in sorted.iter() {
                let bucket = bucket?;
                for chunk in bucket.order.chunks(OUT_ROWS) {
                    crate::cancel::check()?;
                    let places = UInt32Array::from(chunk.to_vec());
                    let batch = take_record_batch(&bucket.batch, &places)?;
                    each(&batch)?;
                    rows += batch.num_rows() as u64;
                }
            }
            Ok(rows)
        })();
        // The loader stops at its next hand-over once the receiver is gone.
        drop(sorted);
        loader
            .join()
            .map_err(|_| anyhow!("the sort thread panicked"))?;
        result
    }
}

/// A bucket in memory, its rows in one batch, and their order: newest first.
struct Sorted {
    batch: RecordBatch,
    order: Vec<u32>,
}

/// The batches of a spill file.
fn read_part(part: &Part) -> Result<StreamReader<BufReader<File>>> {
    let file = File::open(&part.path)
        .with_context(|| format!("opening spill file {}", part.path.display()))?;
    let reader = StreamReader::try_new(BufReader::with_capacity(256 << 10, file), None)
        .context("reading a spill file")?;
    // SAFETY: the file holds exactly the valid arrays this process wrote during this run, in a
    // private folder; validating them again (UTF-8, offsets) only costs.
    Ok(unsafe { reader.with_skip_validation(true) })
}

/// Loads a bucket into one batch and sorts it, newest first; its file is removed.
///
/// One batch, so that the sorted rows are gathered with `take` from one array per column: an
/// `interleave` across the file's hundreds of batches checks every batch's type on every call
/// and gathers booleans through a generic path (perf: a seventh of the export's own CPU).
fn load_sorted(part: &Part) -> Result<Sorted> {
    let reader = read_part(part)?;
    let schema = reader.schema();
    // A signal stops the load between batches, not after the whole bucket (systemd's stop
    // would otherwise wait a bucket's read and sort).
    let mut batches = Vec::new();
    for batch in reader {
        crate::cancel::check()?;
        batches.push(batch.context("reading a spill file")?);
    }
    std::fs::remove_file(&part.path).ok();
    // The copy holds the rows a second time until the batches read are dropped: counted in
    // `Part::load_cost`.
    let batch = concat_batches(&schema, &batches).context("loading a spill file")?;
    drop(batches);
    if u32::try_from(batch.num_rows()).is_err() {
        bail!(
            "a sort bucket of {} rows is too large: pass a smaller --memory",
            batch.num_rows()
        );
    }
    // Keys as unsigned pairs (compared as two words), the row's place beside them. Rows
    // without a timestamp come first (PostgreSQL's DESC puts nulls first), by id.
    let flip = |v: i64| (v as u64) ^ (1 << 63);
    let mut rows: Vec<([u64; 2], u32)> = Vec::with_capacity(batch.num_rows());
    let mut nulls: Vec<([u64; 2], u32)> = Vec::new();
    // Read from the columns directly: a vector of keys would hold the bucket's keys twice.
    let (time, id) = key_columns(&batch)?;
    for r in 0..batch.num_rows() {
        if time.is_null(r) {
            nulls.push(([0, flip(id.value(r))], r as u32));
        } else {
            rows.push(([flip(time.value(r)), flip(id.value(r))], r as u32));
        }
    }
    // Keys are unique (ids are), so the order is total: the same whatever order rows came in.
    rows.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.0));
    nulls.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.0));
    let order = nulls.into_iter().chain(rows).map(|(_, r)| r).collect();
    Ok(Sorted { batch, order })
}

/// Splits an over-large bucket at quantiles of its keys into parts that fit `budget` (oldest
/// first), spilled into the new `folder`; one part, never split again, when no cut separates
/// its keys.
fn split(folder: &Path, schema: &SchemaRef, part: Part, budget: u64) -> Result<Vec<Part>> {
    let need = part.load_cost().div_ceil(budget.max(1) / 2 + 1);
    let pieces = need.clamp(2, super::max_buckets(budget));
    // Every `step`-th key, about 256 samples per piece.
    let step = (part.rows / (pieces * 256)).max(1) as usize;
    let mut sample = Vec::new();
    let mut seen = 0usize;
    for batch in read_part(&part)? {
        crate::cancel::check()?;
        for key in keys(&batch.context("reading a spill file")?)? {
            if seen.is_multiple_of(step) {
                sample.push(key);
            }
            seen += 1;
        }
    }
    sample.sort_unstable();
    let cuts: Vec<Key> = (1..pieces as usize)
        .map(|i| sample[i * sample.len() / pieces as usize])
        .collect();
    std::fs::create_dir(folder).with_context(|| format!("creating {}", folder.display()))?;
    let mut spill = Spill::new(folder, schema.clone(), cuts, budget);
    spill.splits = part.splits + 1;
    for batch in read_part(&part)? {
        crate::cancel::check()?;
        spill.route(&batch.context("reading a spill file")?)?;
    }
    std::fs::remove_file(&part.path).ok();
    let mut parts = spill.finish()?.parts;
    if parts.len() < 2 {
        // One key range only (no cut separated anything): loaded as it is.
        parts.iter_mut().for_each(|p| p.splits = MAX_SPLITS);
    }
    Ok(parts)
}
