//! The distribution sort of the sequential plan: rows read in any order become the export's order
//! (newest first, ties by id, highest first) in bounded memory, with one extra local write and
//! read of the data and no external merge.
//!
//! The key range is cut into buckets (from PostgreSQL's statistics, see `source::scan`); as the
//! readers hand in batches, [`Spill::route`] sends each row to its bucket's spill file (Arrow
//! IPC, in a private temporary folder). When the read is done, [`Spilled::for_each_sorted`]
//! takes the buckets newest first: a loader thread reads one into memory and sorts it while the
//! caller's thread streams the one before to the sinks. A bucket larger than the memory budget
//! (skewed data, stale statistics, a flood of equal timestamps) is split again at quantiles of
//! its own keys (timestamp and id together, so even one timestamp splits) before it is loaded:
//! never more than about two buckets are in memory.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context as _, Result};
use arrow::array::TimestampMicrosecondArray;
use arrow::array::{Array, AsArray as _, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::sink::file::full_disk_writing;

/// A row's place in the export's order: (timestamp is null, timestamp, id), ascending; the
/// export runs it descending (`ORDER BY timestamp DESC, id DESC`, nulls first as PostgreSQL
/// puts them).
pub type Key = (bool, i64, i64);

/// Rows handed to the sinks at a time in the sorted phase.
const OUT_ROWS: usize = 8_192;
/// Pieces of batches smaller than this wait to be written with others.
const PIECE_ROWS: usize = 1_024;
/// Splitting a bucket never goes deeper than this (each level divides by the parts it needs).
const MAX_SPLITS: u32 = 4;
/// Memory a sorted row costs beyond its data: its key and place while sorting.
const ORDER_BYTES: u64 = std::mem::size_of::<([u64; 2], u32)>() as u64;

/// The `timestamp` and `id` columns of `batch`, which make a row's key.
fn key_columns(
    batch: &RecordBatch,
) -> Result<(&TimestampMicrosecondArray, &arrow::array::Int64Array)> {
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
fn key_at(time: &TimestampMicrosecondArray, id: &arrow::array::Int64Array, row: usize) -> Key {
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

impl Part {
    /// What loading and sorting it holds at most: its rows twice (as read, and copied into one
    /// batch) and a sort entry a row.
    fn load_cost(&self) -> u64 {
        2 * self.bytes + self.rows * ORDER_BYTES
    }
}

/// A bucket while rows are routed to it.
#[derive(Default)]
struct Filling {
    pending: Vec<RecordBatch>,
    pending_bytes: usize,
    writer: Option<StreamWriter<BufWriter<SpillFile>>>,
    rows: u64,
    bytes: u64,
}

/// Buckets being filled by the readers; shared between their threads.
pub struct Spill {
    folder: PathBuf,
    schema: SchemaRef,
    cuts: Vec<Key>,
    buckets: Vec<Mutex<Filling>>,
    /// A bucket's rows are written once this many bytes wait (fewer, larger IPC messages).
    flush_bytes: usize,
    /// Each bucket's write buffer.
    buffer_bytes: usize,
    /// How often the rows were split before (names this spill's files apart).
    splits: u32,
}

impl Spill {
    /// Buckets cut at `cuts` (ascending), spilled into `folder`, holding about `memory` bytes
    /// in waiting rows at most.
    pub fn new(folder: &Path, schema: SchemaRef, mut cuts: Vec<Key>, memory: u64) -> Self {
        cuts.sort_unstable();
        cuts.dedup();
        let buckets = (0..=cuts.len()).map(|_| Mutex::default()).collect();
        // Waiting pieces take an eighth of the budget at most, write buffers a sixteenth,
        // however many buckets there are: memory does not grow with the export.
        let count = cuts.len() as u64 + 1;
        let flush_bytes = (memory / 8 / count).clamp(16 << 10, 4 << 20);
        let buffer_bytes = (memory / 16 / count).clamp(8 << 10, 256 << 10);
        Self {
            folder: folder.to_owned(),
            schema,
            cuts,
            buckets,
            flush_bytes: flush_bytes as usize,
            buffer_bytes: buffer_bytes as usize,
            splits: 0,
        }
    }

    /// Sends every row of `batch` to its bucket.
    pub fn route(&self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let places = self.places(batch)?;
        // Rows mostly come in runs of one bucket (a table is stored about in time order).
        if places.iter().all(|&b| b == places[0]) {
            return self.add(places[0] as usize, batch.clone());
        }
        // The other buckets touched (a back-dated event's, a run's next), in first-seen order:
        // with hundreds of buckets, most are not.
        let mut slot = vec![u32::MAX; self.buckets.len()];
        let mut touched: Vec<(usize, Vec<u32>)> = Vec::new();
        for (row, &bucket) in places.iter().enumerate() {
            let slot = &mut slot[bucket as usize];
            if *slot == u32::MAX {
                *slot = touched.len() as u32;
                touched.push((bucket as usize, Vec::new()));
            }
            touched[*slot as usize].1.push(row as u32);
        }
        for (bucket, rows) in touched {
            let part = take_record_batch(batch, &UInt32Array::from(rows))?;
            self.add(bucket, part)?;
        }
        Ok(())
    }

    /// The bucket of every row of `batch`. A row is first tried against the bounds of the row
    /// before's bucket, so a run of one bucket costs two comparisons a row, not a search.
    fn places(&self, batch: &RecordBatch) -> Result<Vec<u32>> {
        let (time, id) = key_columns(batch)?;
        let mut places = Vec::with_capacity(batch.num_rows());
        let (mut bucket, mut low, mut high) = (0, None, None);
        for row in 0..batch.num_rows() {
            let key = key_at(time, id, row);
            let inside = row > 0 && low.is_none_or(|l| key >= l) && high.is_none_or(|h| key < h);
            if !inside {
                bucket = bucket_of(&self.cuts, &key);
                low = bucket.checked_sub(1).map(|i| self.cuts[i]);
                high = self.cuts.get(bucket).copied();
            }
            places.push(bucket as u32);
        }
        Ok(places)
    }

    fn add(&self, bucket: usize, batch: RecordBatch) -> Result<()> {
        let mut filling = self.buckets[bucket]
            .lock()
            .map_err(|_| anyhow!("a reader thread failed"))?;
        // A batch of a good size is written as it is; pieces wait to be written together.
        if batch.num_rows() >= PIECE_ROWS {
            return self.write(bucket, &mut filling, &batch);
        }
        filling.pending_bytes += batch.get_array_memory_size();
        filling.pending.push(batch);
        if filling.pending_bytes >= self.flush_bytes {
            self.flush(bucket, &mut filling)?;
        }
        Ok(())
    }

    /// Writes the pieces waiting in `bucket` to its file as one IPC message.
    fn flush(&self, bucket: usize, filling: &mut Filling) -> Result<()> {
        if filling.pending.is_empty() {
            return Ok(());
        }
        let batch = concat_batches(&self.schema, &filling.pending)?;
        filling.pending.clear();
        filling.pending_bytes = 0;
        self.write(bucket, filling, &batch)
    }

    fn write(&self, bucket: usize, filling: &mut Filling, batch: &RecordBatch) -> Result<()> {
        let place = || format!("writing the sort's spill in {}", self.folder.display());
        if filling.writer.is_none() {
            let file = SpillFile::create(&self.path(bucket), &self.folder)?;
            let out = BufWriter::with_capacity(self.buffer_bytes, file);
            filling.writer = Some(StreamWriter::try_new(out, &self.schema).with_context(place)?);
        }
        let writer = filling.writer.as_mut().expect("just made");
        writer.write(batch).with_context(place)?;
        filling.rows += batch.num_rows() as u64;
        filling.bytes += batch.get_array_memory_size() as u64;
        Ok(())
    }

    fn path(&self, bucket: usize) -> PathBuf {
        self.folder
            .join(format!("bucket-{}-{bucket}.arrows", self.splits))
    }

    /// Writes out every bucket: the read is done. What the read held goes back to the system
    /// before the sort takes its share.
    pub fn finish(self) -> Result<Spilled> {
        let mut parts = Vec::with_capacity(self.buckets.len());
        for (bucket, filling) in self.buckets.iter().enumerate() {
            let mut filling = filling
                .lock()
                .map_err(|_| anyhow!("a reader thread failed"))?;
            self.flush(bucket, &mut filling)?;
            if let Some(writer) = filling.writer.take() {
                let place = || format!("writing the sort's spill in {}", self.folder.display());
                let mut out = writer.into_inner().with_context(place)?;
                std::io::Write::flush(&mut out).with_context(place)?;
                parts.push(Part {
                    path: self.path(bucket),
                    rows: filling.rows,
                    bytes: filling.bytes,
                    splits: self.splits,
                });
            }
        }
        let spilled = Spilled {
            folder: self.folder,
            schema: self.schema,
            parts,
        };
        drop(self.buckets);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free heap memory to the system.
        unsafe {
            libc::malloc_trim(0);
        }
        Ok(spilled)
    }
}

/// A spill file whose write errors say, on a full disk, what was being written, as an output
/// file's do (`sink::file::full_disk_writing`).
struct SpillFile {
    file: File,
    what: String,
}

impl SpillFile {
    fn create(path: &Path, folder: &Path) -> Result<Self> {
        let what = format!(
            "the sort's spill in {} (beside the output)",
            folder.display()
        );
        let file = File::create(path).map_err(|e| full_disk_writing(e, &what))?;
        Ok(Self { file, what })
    }
}

impl Write for SpillFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file
            .write(buf)
            .map_err(|e| full_disk_writing(e, &self.what))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file
            .flush()
            .map_err(|e| full_disk_writing(e, &self.what))
    }
}

/// The buckets of a finished read, oldest first.
pub struct Spilled {
    folder: PathBuf,
    schema: SchemaRef,
    parts: Vec<Part>,
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
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .context("reading a spill file")?;
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
    let pieces = need.clamp(2, 4_096);
    // Every `step`-th key, about 256 samples per piece.
    let step = (part.rows / (pieces * 256)).max(1) as usize;
    let mut sample = Vec::new();
    let mut seen = 0usize;
    for batch in read_part(&part)? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]))
    }

    fn batch(rows: &[(Option<i64>, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.0))
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    fn sorted(
        cuts: Vec<Key>,
        memory: u64,
        budget: u64,
        input: &[Vec<(Option<i64>, i64)>],
    ) -> Vec<(Option<i64>, i64)> {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::new(dir.path(), schema(), cuts, memory);
        for rows in input {
            spill.route(&batch(rows)).unwrap();
        }
        let spilled = spill.finish().unwrap();
        let mut out = Vec::new();
        let rows = spilled
            .for_each_sorted(budget, |b| {
                let time = b.column(1).as_primitive::<TimestampMicrosecondType>();
                let id = b.column(0).as_primitive::<Int64Type>();
                out.extend(
                    (0..b.num_rows())
                        .map(|i| ((!time.is_null(i)).then(|| time.value(i)), id.value(i))),
                );
                Ok(())
            })
            .unwrap();
        assert_eq!(rows as usize, out.len());
        out
    }

    fn expected(input: &[Vec<(Option<i64>, i64)>]) -> Vec<(Option<i64>, i64)> {
        let mut all: Vec<_> = input.concat();
        // PostgreSQL's ORDER BY timestamp DESC, id DESC: nulls first.
        all.sort_by_key(|&(t, id)| std::cmp::Reverse((t.is_none(), t, id)));
        all
    }

    #[test]
    fn rows_come_out_newest_first_ties_by_id() {
        let input = vec![
            vec![(Some(5), 1), (Some(1), 2), (Some(9), 3), (None, 4)],
            vec![
                (Some(5), 7),
                (Some(5), 6),
                (Some(-3), 8),
                (Some(i64::MAX), 9),
            ],
        ];
        let cuts = vec![(false, 4, i64::MIN), (false, 6, i64::MIN)];
        assert_eq!(sorted(cuts, 1 << 20, 1 << 30, &input), expected(&input));
        assert_eq!(sorted(vec![], 1 << 20, 1 << 30, &input), expected(&input));
    }

    #[test]
    fn rows_in_runs_with_back_dated_ones_reach_their_buckets() {
        // Runs in time order, every 7th row back-dated across several of 64 buckets, nulls.
        let input: Vec<Vec<(Option<i64>, i64)>> = (0..40)
            .map(|b| {
                (0..500)
                    .map(|i| {
                        let id = b * 500 + i;
                        let time = match id % 7 {
                            0 => Some(id * 10 - 3_000),
                            _ if id % 97 == 0 => None,
                            _ => Some(id * 10),
                        };
                        (time, id)
                    })
                    .collect()
            })
            .collect();
        let cuts = (1..64).map(|i| (false, i * 3_125, i64::MIN)).collect();
        assert_eq!(sorted(cuts, 1 << 20, 1 << 30, &input), expected(&input));
    }

    #[test]
    fn a_bucket_over_budget_is_split_even_on_one_timestamp() {
        // 20,000 rows of one timestamp and a spread, in one bucket, a budget of a few rows.
        let mut input: Vec<Vec<(Option<i64>, i64)>> = (0..20)
            .map(|b| (0..1_000).map(|i| (Some(42), b * 1_000 + i)).collect())
            .collect();
        input.push(
            (0..5_000)
                .map(|i| (Some(i * 7 % 1_000), 100_000 + i))
                .collect(),
        );
        assert_eq!(sorted(vec![], 1 << 16, 64 << 10, &input), expected(&input));
    }
}
