//! The read phase of the distribution sort: rows routed to their buckets' spill files as the
//! readers hand them in, from any number of threads, holding a bounded share of the budget.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, Context as _, Result};
use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::StreamWriter;

use super::{bucket_of, key_at, key_columns, Key, Part, Spilled};
use crate::store::file::full_disk_writing;

/// Pieces of batches smaller than this wait to be written with others.
const PIECE_ROWS: usize = 1_024;

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
    pub(super) splits: u32,
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
/// file's do (`store::file::full_disk_writing`).
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
