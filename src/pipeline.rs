//! The steps every export shares, after the settings are resolved and the source is open: lock
//! the outputs, size the progress bar, stream the query's batches into one sink per format
//! (each on its own thread; a partitioned dataset per format with `--partition-by`), put the
//! finished outputs in place together with their manifest last, and report
//! `Exported N events to /abs/path`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};

use crate::lock::{self, RunLock, Wait};
use crate::progress::{self, Progress, Total};
use crate::sink::dataset::{DatasetSink, PartitionBy};
use crate::sink::format::{Encoding, Format};
use crate::sink::manifest::{self, Manifest};
use crate::sink::target::key_of;
use crate::sink::{self, object, threaded::Writers, Staged, Target, Written};
use crate::source::engine::Engine;
use crate::source::parallel;
use crate::source::plan::Plan;
use crate::source::query::{self, Dialect};

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub rows: u64,
    /// Absolute paths of the files, in the order of the formats.
    pub paths: Vec<PathBuf>,
}

impl Exported {
    /// `Exported N events to /abs/path` (`... and /abs/other` with several formats); a run that
    /// wrote no file (nothing new for `--incremental`) says `Exported 0 events`.
    pub fn success_line(&self) -> String {
        let paths: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        if paths.is_empty() {
            return format!("Exported {} events", self.rows);
        }
        format!("Exported {} events to {}", self.rows, paths.join(" and "))
    }
}

/// Locks every target (in path order, so two runs cannot each hold one), then makes each whole
/// again if a killed run left it mid-commit or left temporary files (or, in object storage,
/// unfinished uploads) beside it. An object storage target is locked on this machine only (its
/// lock is in the local state folder).
pub fn lock_targets(targets: &[(Target, &'static Format)], wait: Wait) -> Result<Vec<RunLock>> {
    let mut sorted: Vec<&Target> = targets.iter().map(|(t, _)| t).collect();
    sorted.sort_by_key(|t| t.shown());
    let mut locks = Vec::with_capacity(sorted.len());
    for target in sorted {
        let shown = target.shown();
        let Some(bucket) = &target.remote else {
            locks.push(RunLock::acquire(&lock::beside(&target.path), &shown, wait)?);
            sink::recover(&target.path)?;
            sink::recover(&manifest::path_of(&target.path))?;
            continue;
        };
        locks.push(RunLock::acquire(
            &object::local_name(&shown, "lock"),
            &shown,
            wait,
        )?);
        object::recover(bucket, &shown)?;
        object::recover(
            bucket,
            &bucket.url(&key_of(&manifest::path_of(&target.path))),
        )?;
    }
    Ok(locks)
}

/// Checks that every object storage target can be written (credentials, bucket, permission),
/// before the source is opened: a wrong key fails fast and reads nothing.
pub fn check_remote(targets: &[(Target, &'static Format)]) -> Result<()> {
    for (target, _) in targets {
        if let Some(bucket) = &target.remote {
            bucket.check_write(&target.key())?;
        }
    }
    Ok(())
}

/// How the rows are laid out in files: one file per format, or a partitioned dataset.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub partition_by: Option<PartitionBy>,
    pub max_rows_per_file: u64,
}

impl Layout {
    /// One file per format.
    pub const FILES: Layout = Layout {
        partition_by: None,
        max_rows_per_file: u64::MAX,
    };
}

/// The bar of an export of the events from `since`, when one is wanted.
pub fn progress_bar(
    engine: &Engine,
    since: Option<DateTime<Utc>>,
    dialect: Dialect,
    quiet: bool,
) -> Result<Progress> {
    if !progress::wanted(quiet) {
        return Ok(Progress::hidden());
    }
    let (sql, exact) = query::total(since, dialect);
    let rows = engine.count(&sql).context("sizing the progress bar")?;
    Ok(Progress::start(if exact {
        Total::Exact(rows)
    } else {
        Total::Estimate(rows)
    }))
}

/// Streams the rows the plan reads into one output per target; returns the number of rows and
/// the outputs, complete but not yet in place.
pub fn write_files(
    engine: &Engine,
    plan: &Plan,
    schema: SchemaRef,
    targets: &[(Target, &'static Format)],
    encoding: &Encoding,
    layout: Layout,
    progress: &Progress,
) -> Result<(u64, Vec<Staged>)> {
    let sinks = targets
        .iter()
        .map(|(target, format)| -> Result<Box<dyn sink::Sink>> {
            match layout.partition_by {
                Some(by) => Ok(Box::new(DatasetSink::create(
                    target,
                    format,
                    schema.clone(),
                    encoding,
                    by,
                    layout.max_rows_per_file,
                )?)),
                None => format.open(target, schema.clone(), encoding),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let mut writers = Writers::spawn(sinks)?;
    let each = |batch: &arrow::record_batch::RecordBatch| {
        writers.write(batch)?;
        progress.advance(batch.num_rows() as u64);
        Ok(())
    };
    let rows = match plan {
        Plan::Serial(sql) => engine.for_each_batch(sql, each)?,
        Plan::Windows { queries, jobs } => {
            let (first, _) = targets.first().context("an export has a target")?;
            // Windows read ahead wait beside the output; for object storage, in $TMPDIR.
            let spool = match first.remote {
                Some(_) => std::env::temp_dir().join(first.path.file_name().unwrap_or_default()),
                None => first.path.clone(),
            };
            parallel::for_each_batch(engine, queries, *jobs, &spool, each)?
        }
    };
    Ok((rows, writers.close()?))
}

/// Puts the outputs in place with their manifest (`<first target>.manifest.json`), committed
/// last in the same commit after the previous manifest is removed: a manifest is never beside
/// files it does not describe. Returns what was written.
pub fn commit(
    targets: &[(Target, &'static Format)],
    staged: Vec<Staged>,
    about: impl FnOnce(&Path, &[Written]) -> Manifest,
) -> Result<Vec<Written>> {
    let (first, _) = targets.first().context("an export has a target")?;
    let records: Vec<Written> = staged.iter().flat_map(Staged::records).collect();
    // Removed before the new one is started: an object store may end uploads to a key it
    // deletes.
    manifest::remove_old(first)?;
    let manifest = about(&first.path, &records).stage(first)?;
    let mut all = staged;
    all.push(Staged::File(manifest));
    sink::commit_all(all)
}

/// The paths (or `s3://` URLs) of `targets`, for the report.
pub fn paths(targets: Vec<(Target, &'static Format)>) -> Vec<PathBuf> {
    targets
        .into_iter()
        .map(|(t, _)| match t.remote {
            Some(_) => PathBuf::from(t.shown()),
            None => t.path,
        })
        .collect()
}
