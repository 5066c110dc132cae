//! Partitioned datasets: a Hive-style folder (`OUTPUT/date=2026-02-01/part-0.parquet`) that
//! appears whole. It is written under a hidden temporary name beside its target, every file
//! synced, and swapped in at commit (`commit::commit_all`).
//!
//! Rows arrive in the export's order, so each partition's rows come together: by day and month
//! because the export is ordered by time, by rule because a rule-partitioned export (and an
//! incremental run into one) is read ordered by rule id first, with the id as an extra last
//! column that the files do not get. One part file is open at a time per format, whatever the
//! number of partitions, so memory stays flat; a partition rolls over to `part-1`, ... at
//! `--max-rows-per-file`. A partition that comes back later gets the next part number. Within a
//! file rows stay newest first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use arrow::array::{Array, AsArray as _};
use arrow::datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use chrono::DateTime;

#[cfg(not(target_os = "linux"))]
use super::commit::sync_folder;
use super::commit::{create_new, Staged};
use super::file::{beside, folder_of, Written};
use super::format::{Encoding, Format};
use super::object_dir::ObjectDir;
use super::{Sink, Target, DATASET_MARKER as MARKER};
use crate::model;

/// What a dataset is split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PartitionBy {
    /// The event's UTC day: `date=2026-02-01`.
    Day,
    /// The event's UTC month: `month=2026-02`.
    Month,
    /// The rule's id: `rule_id=17` (the name, up to 1,020 bytes, would not fit a folder
    /// name; it stays a column).
    Rule,
}

impl PartitionBy {
    /// The column of the batches the partition is computed from (for rules, one the query adds
    /// after the model's: [`model::RULE_ID`]).
    fn column(self) -> &'static str {
        match self {
            PartitionBy::Day | PartitionBy::Month => "timestamp",
            PartitionBy::Rule => model::RULE_ID,
        }
    }
}

/// A dataset folder being written under a temporary name beside its target.
pub struct AtomicDir {
    path: PathBuf,
    target: PathBuf,
    token: String,
    files: Vec<Written>,
    /// Removes the folder unless it was put in place.
    cleanup: Option<tempfile::TempDir>,
}

impl AtomicDir {
    /// Starts a dataset for `target`; nothing at `target` changes until it is committed.
    pub fn create(target: &Target) -> Result<Self> {
        let folder = folder_of(target)?;
        let dir = beside(&target.path, |b| {
            b.permissions(std::os::unix::fs::PermissionsExt::from_mode(
                target.folder_mode(),
            ))
            .tempdir_in(folder)
        })
        .with_context(|| format!("creating a folder in {}", folder.display()))?;
        let token = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::io::Write::write_all(&mut create_new(&dir.path().join(MARKER))?, token.as_bytes())?;
        Ok(Self {
            path: dir.path().to_owned(),
            target: target.path.clone(),
            token,
            files: Vec::new(),
            cleanup: Some(dir),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Makes the whole folder durable, its files and its entries, at once: one `syncfs` of its
    /// file system instead of an fsync per part (hundreds of them for a year of days).
    pub fn sync(&mut self) -> Result<()> {
        let folder = std::fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            // SAFETY: a valid descriptor; syncfs only writes back.
            if unsafe { libc::syncfs(folder.as_raw_fd()) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("writing {}", self.target.display()));
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            for file in &self.files {
                std::fs::File::open(&file.path)?.sync_all()?;
            }
            sync_folder(&self.path);
        }
        drop(folder);
        Ok(())
    }

    /// Its files, at their final paths.
    pub fn records(&self) -> Vec<Written> {
        self.files
            .iter()
            .map(|f| {
                let mut f = f.clone();
                if let Ok(relative) = f.path.strip_prefix(&self.path) {
                    f.path = self.target.join(relative);
                }
                f
            })
            .collect()
    }

    /// Puts the folder at its target: a swap with the dataset it replaces, which is then
    /// removed.
    pub fn put_in_place(mut self) -> std::io::Result<()> {
        let kept = self.cleanup.take().map(tempfile::TempDir::keep);
        swap_in(&self.path, &self.target)?;
        if self.path.exists() {
            std::fs::remove_dir_all(&self.path)?;
        }
        drop(kept);
        Ok(())
    }

    /// Finishes the commit of the staged folder `temp` (token `token`) to `target` that a
    /// killed run left half-done.
    pub fn complete(temp: &Path, target: &Path, token: &str) -> std::io::Result<()> {
        let staged = |dir: &Path| std::fs::read_to_string(dir.join(MARKER)).ok();
        if staged(temp).as_deref() == Some(token) {
            swap_in(temp, target)?;
        }
        if temp.exists() {
            std::fs::remove_dir_all(temp)?;
        }
        Ok(())
    }
}

/// `rename` when nothing is at `target`; else an atomic exchange, leaving the old folder at
/// `temp`.
fn swap_in(temp: &Path, target: &Path) -> std::io::Result<()> {
    if !target.exists() {
        return std::fs::rename(temp, target);
    }
    use std::os::unix::ffi::OsStrExt as _;
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (from, to) = (c(temp)?, c(target)?);
    // SAFETY: valid NUL-terminated paths; renameat2 only renames.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Where a dataset's parts are staged: a local folder swapped in whole, or uploads completed
/// at commit.
enum Parts {
    Local(AtomicDir),
    Object(ObjectDir),
}

/// A format's files of a partitioned dataset, written as rows come.
pub struct DatasetSink {
    dir: Parts,
    format: &'static Format,
    schema: SchemaRef,
    encoding: Encoding,
    by: PartitionBy,
    max_rows: u64,
    mode: u32,
    /// The open part: its partition, sink and rows so far.
    current: Option<(String, Box<dyn Sink>, u64)>,
    /// The next part number of every partition seen.
    parts: HashMap<String, usize>,
}

impl DatasetSink {
    /// Starts the dataset at `target` in `format`, split `by`.
    pub fn create(
        target: &Target,
        format: &'static Format,
        schema: SchemaRef,
        encoding: &Encoding,
        by: PartitionBy,
        max_rows: u64,
    ) -> Result<Self> {
        let dir = match &target.remote {
            Some(bucket) => Parts::Object(ObjectDir::create(target, bucket)?),
            None => Parts::Local(AtomicDir::create(target)?),
        };
        Ok(Self {
            dir,
            format,
            schema,
            encoding: *encoding,
            by,
            max_rows: max_rows.max(1),
            mode: target.mode,
            current: None,
            parts: HashMap::new(),
        })
    }

    /// Writes `rows` of `batch` (all of one partition) to that partition's open part.
    fn write_run(&mut self, key: &str, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let reuse = matches!(&self.current, Some((k, _, n)) if k == key && *n < self.max_rows);
            if !reuse {
                self.finish_part()?;
                self.open_part(key)?;
            }
            let (_, sink, rows) = self.current.as_mut().expect("just opened");
            let room = (self.max_rows - *rows) as usize;
            let take = room.min(batch.num_rows() - offset);
            sink.write_batch(&batch.slice(offset, take))?;
            *rows += take as u64;
            offset += take;
        }
        Ok(())
    }

    fn open_part(&mut self, key: &str) -> Result<()> {
        let part = self.parts.entry(key.to_owned()).or_insert(0);
        let relative = Path::new(key).join(format!(
            "part-{part}.{}",
            self.format.file_extension(&self.encoding)
        ));
        *part += 1;
        let target = match &self.dir {
            Parts::Local(dir) => Target::owned(dir.path.join(relative), self.mode),
            Parts::Object(dir) => dir.part(&relative),
        };
        let sink = self
            .format
            .open(&target, self.schema.clone(), &self.encoding)?;
        self.current = Some((key.to_owned(), sink, 0));
        Ok(())
    }

    /// Closes the open part and puts it at its name inside the dataset, unsynced: the whole
    /// dataset is made durable at once before it is swapped in ([`AtomicDir::sync`]).
    fn finish_part(&mut self) -> Result<()> {
        let Some((_, sink, _)) = self.current.take() else {
            return Ok(());
        };
        let Staged::File(file) = sink.close()? else {
            bail!("a part of a dataset is a file");
        };
        match &mut self.dir {
            Parts::Local(dir) => {
                let record = file.written(file.target.clone());
                let target = file.target.clone();
                file.put_in_place()
                    .with_context(|| format!("writing {}", target.display()))?;
                dir.files.push(record);
                Ok(())
            }
            Parts::Object(dir) => dir.add(file),
        }
    }

    /// Where in `batch` each partition's rows start, and the partition's folder name: rows of one
    /// partition come together, so the name is made once a run, not once a row.
    fn runs(&self, batch: &RecordBatch) -> Result<Vec<(usize, String)>> {
        let column = batch
            .schema()
            .index_of(self.by.column())
            .with_context(|| format!("the export has no {} column", self.by.column()))?;
        let array = batch.column(column);
        let mut runs = Vec::new();
        match self.by {
            PartitionBy::Day | PartitionBy::Month => {
                let stamps = array.as_primitive::<TimestampMicrosecondType>();
                let mut previous = None;
                for row in 0..batch.num_rows() {
                    let day = stamps.value(row).div_euclid(DAY);
                    if previous == Some(day) {
                        continue;
                    }
                    previous = Some(day);
                    let date = DateTime::from_timestamp_micros(day * DAY)
                        .map(|t| t.date_naive())
                        .context(
                            "a timestamp outside the calendar (infinity) cannot be partitioned",
                        )?;
                    let key = match self.by {
                        PartitionBy::Day => format!("date={}", date.format("%Y-%m-%d")),
                        _ => format!("month={}", date.format("%Y-%m")),
                    };
                    if runs.last().is_none_or(|(_, k)| *k != key) {
                        runs.push((row, key));
                    }
                }
            }
            PartitionBy::Rule => {
                let ids = array
                    .as_primitive_opt::<Int64Type>()
                    .context("a rule id is a BIGINT")?;
                let value = |row: usize| (!ids.is_null(row)).then(|| ids.value(row));
                for row in 0..batch.num_rows() {
                    if row == 0 || value(row) != value(row - 1) {
                        let id =
                            value(row).map_or_else(|| NULL_PARTITION.into(), |v| v.to_string());
                        runs.push((row, format!("{}={id}", model::RULE_ID)));
                    }
                }
            }
        }
        Ok(runs)
    }
}

/// Microseconds in a day.
const DAY: i64 = 86_400_000_000;

impl Sink for DatasetSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let runs = self.runs(batch)?;
        // The files hold the model's columns; what the query added to split by goes no further.
        let columns = self.schema.fields().len();
        let batch = &match batch.num_columns() > columns {
            true => batch.project(&(0..columns).collect::<Vec<_>>())?,
            false => batch.clone(),
        };
        for (i, (start, key)) in runs.iter().enumerate() {
            let end = runs.get(i + 1).map_or(batch.num_rows(), |(next, _)| *next);
            self.write_run(key, &batch.slice(*start, end - start))?;
        }
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<Staged> {
        self.finish_part()?;
        let DatasetSink { dir, .. } = *self;
        Ok(match dir {
            Parts::Local(dir) => Staged::Dataset(dir),
            Parts::Object(dir) => Staged::Objects(dir),
        })
    }
}

/// Hive's folder value for NULL.
const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";
