//! The steps every export shares, after the settings are resolved and the source is open: lock
//! the outputs, size the progress bar, stream the query's batches into one sink per format
//! (each on its own thread; a partitioned dataset per format with `--partition-by`), put the
//! finished outputs in place together with their manifest last, and report
//! `Exported N events to /abs/path`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use crate::lock::{self, RunLock, Wait};
use crate::progress::{self, Progress, Total};
use crate::sink::dataset::{DatasetSink, PartitionBy};
use crate::sink::format::{Encoding, Format};
use crate::sink::manifest::{self, Manifest};
use crate::sink::target::key_of;
use crate::sink::{self, object, threaded::Writers, Staged, Target, Written};
use crate::source::engine::Engine;
use crate::source::plan::{Join, Plan};
use crate::source::query::{self, Dialect};
use crate::source::rules::Rules;
use crate::source::{parallel, scan};

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
    for target in &sorted {
        let shown = target.shown();
        let path = match target.remote {
            Some(_) => object::local_name(&shown, "lock"),
            None => lock::beside(&target.path),
        };
        locks.push(RunLock::acquire(&path, &shown, wait)?);
    }
    // Only once every lock is held: one target's journal may finish another's commit.
    let (remote, local): (Vec<&Target>, Vec<&Target>) =
        sorted.into_iter().partition(|t| t.remote.is_some());
    let manifests: Vec<PathBuf> = local.iter().map(|t| manifest::path_of(&t.path)).collect();
    let paths: Vec<&Path> = local
        .iter()
        .map(|t| t.path.as_path())
        .chain(manifests.iter().map(PathBuf::as_path))
        .collect();
    sink::recover(&paths)?;
    for target in remote {
        let bucket = target.remote.as_ref().expect("a remote target");
        object::recover(bucket, &target.shown())?;
        object::recover(
            bucket,
            &bucket.url(&key_of(&manifest::path_of(&target.path))),
        )?;
    }
    Ok(locks)
}

/// Makes whole what killed runs of the same `{time}` template left beside their outputs: each
/// run has its own file names, so no later run of the output would ever lock them again, and a
/// SIGKILL would leave its staged files (and a half-done pair) for ever. Every hidden file named
/// after a run of `template` (a temporary, a journal, a lock) is grouped by its run's stamp; a
/// run whose files no live process holds locked (its targets and, for a manifest, its output)
/// is recovered as one group: its commit completed, its temporaries removed. Local folders
/// only.
pub fn recover_template_runs(template: &Path, current: &[(Target, &'static Format)]) -> Result<()> {
    let folder = template.parent().unwrap_or(Path::new("/"));
    let name = template
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((prefix, _)) = name.split_once(crate::retention::TIME) else {
        return Ok(());
    };
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Ok(());
    };
    let mut runs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(target) = file
            .strip_prefix('.')
            .and_then(sink::file::target_of_hidden)
        else {
            continue;
        };
        let Some((stamp, _)) = target
            .strip_prefix(prefix)
            .and_then(crate::retention::split_stamp)
        else {
            continue;
        };
        if !target.contains('/') && current.iter().all(|(t, _)| t.path != folder.join(target)) {
            runs.entry(stamp.to_owned())
                .or_default()
                .insert(target.to_owned());
        }
    }
    for names in runs.values() {
        let mut locked = BTreeSet::new();
        for name in names {
            locked.insert(name.clone());
            if let Some(output) = name.strip_suffix(".manifest.json") {
                locked.insert(output.to_owned());
            }
        }
        // A run still alive holds its locks: its files are left alone.
        let locks: Result<Vec<RunLock>> = locked
            .iter()
            .map(|n| {
                let target = folder.join(n);
                RunLock::acquire(
                    &lock::beside(&target),
                    &target.display().to_string(),
                    Wait::No,
                )
            })
            .collect();
        let Ok(_locks) = locks else {
            continue;
        };
        let paths: Vec<PathBuf> = names.iter().map(|n| folder.join(n)).collect();
        sink::recover(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    }
    Ok(())
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
    let (first, _) = targets.first().context("an export has a target")?;
    // Rows read ahead wait beside the output; for object storage, in $TMPDIR.
    let spool = match first.remote {
        Some(_) => std::env::temp_dir().join(first.path.file_name().unwrap_or_default()),
        None => first.path.clone(),
    };
    stream(engine, plan, &schema, sinks, &spool, progress)
}

/// Streams the rows the plan reads into `sinks`, each on its own thread; returns the number of
/// rows and what each sink finished. Rows the plan reads ahead wait in hidden files beside
/// `spool`.
pub fn stream<T: Send + 'static>(
    engine: &Engine,
    plan: &Plan,
    schema: &SchemaRef,
    sinks: Vec<Box<dyn sink::Sink<T>>>,
    spool: &Path,
    progress: &Progress,
) -> Result<(u64, Vec<T>)> {
    // Read before the rows, in the export's snapshot: the plan's queries read the events alone.
    let rules = match plan.join() {
        Join::Here => Some(Rules::read(engine)?),
        Join::InQuery => None,
    };
    let mut writers = Writers::spawn(sinks)?;
    // Counted as written: the join leaves out events whose rule is missing.
    let written = std::cell::Cell::new(0u64);
    let each = |batch: &RecordBatch| {
        let joined = match &rules {
            Some(rules) => &rules.join(batch)?,
            None => batch,
        };
        // A naive `timestamp` column (USE_TZ = False) is read as UTC: typed naive here.
        writers.write(&crate::model::conform(joined, schema)?)?;
        written.set(written.get() + joined.num_rows() as u64);
        progress.advance(batch.num_rows() as u64);
        crate::fault::point("export.streaming");
        Ok(())
    };
    match plan {
        Plan::Serial(sql, _) => engine.for_each_batch(sql, each)?,
        Plan::Windows { queries, jobs } => {
            parallel::for_each_batch(engine, queries, *jobs, spool, each)?
        }
        Plan::Scan(plan) => scan::for_each_batch(engine, plan, spool, progress, each)?,
    };
    Ok((written.get(), writers.close()?))
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
    let written = sink::commit_all(all)?;
    crate::cancel::committed();
    Ok(written)
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
