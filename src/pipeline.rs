//! The steps every export shares, after the settings are resolved and the source is open: lock
//! the outputs, size the progress bar, stream the query's batches into one sink per format
//! (each on its own thread), hand back the finished files for a commit, and report
//! `Exported N events to /abs/path`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};

use crate::lock::{self, RunLock, Wait};
use crate::progress::{self, Progress, Total};
use crate::sink::format::{Encoding, Format};
use crate::sink::{self, threaded::Writers, AtomicFile, Target};
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
/// again if a killed run left it mid-commit or left temporary files beside it.
pub fn lock_targets(targets: &[(Target, &'static Format)], wait: Wait) -> Result<Vec<RunLock>> {
    let mut paths: Vec<&Path> = targets.iter().map(|(t, _)| t.path.as_path()).collect();
    paths.sort();
    let mut locks = Vec::with_capacity(paths.len());
    for path in paths {
        locks.push(RunLock::acquire(
            &lock::beside(path),
            &path.display().to_string(),
            wait,
        )?);
        sink::recover(path)?;
    }
    Ok(locks)
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

/// Streams the rows the plan reads into one file per target; returns the number of rows and
/// the files, complete but not yet in place.
pub fn write_files(
    engine: &Engine,
    plan: &Plan,
    schema: SchemaRef,
    targets: &[(Target, &'static Format)],
    encoding: &Encoding,
    progress: &Progress,
) -> Result<(u64, Vec<AtomicFile>)> {
    let sinks = targets
        .iter()
        .map(|(target, format)| (format.create)(target, schema.clone(), encoding))
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
            parallel::for_each_batch(engine, queries, *jobs, &first.path, each)?
        }
    };
    Ok((rows, writers.close()?))
}

/// The paths of `targets`, for the report.
pub fn paths(targets: Vec<(Target, &'static Format)>) -> Vec<PathBuf> {
    targets.into_iter().map(|(t, _)| t.path).collect()
}
