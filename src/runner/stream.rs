//! The rows of a read plan, streamed into an output: the rules joined where the plan reads the
//! events alone, every batch typed as the output's schema, counted and shown on the progress
//! bar. Rows a plan reads ahead wait beside the output's spool path.

use std::cell::Cell;

use anyhow::{Context as _, Result};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use crate::output::Output;
use crate::progress::{self, Progress, Total};
use crate::source::plan::{Join, Plan};
use crate::source::query;
use crate::source::rules::Rules;
use crate::source::{parallel, scan, Opened};

/// Streams the rows `plan` reads into `output`; returns the number of rows written.
pub fn rows(
    opened: &Opened,
    plan: &Plan,
    output: &mut dyn Output,
    progress: &Progress,
) -> Result<u64> {
    let engine = &opened.engine;
    // Read before the rows, in the export's snapshot: the plan's queries read the events alone.
    let rules = match plan.join() {
        Join::Here => Some(Rules::read(engine)?),
        Join::InQuery => None,
    };
    let schema = output.schema();
    let spool = output.spool();
    // Counted as written: the join leaves out events whose rule is missing.
    let written = Cell::new(0u64);
    let each = |batch: &RecordBatch| {
        let joined = match &rules {
            Some(rules) => &rules.join(batch)?,
            None => batch,
        };
        // A naive `timestamp` column (USE_TZ = False) is read as UTC: typed naive here.
        output.write(&crate::model::conform(joined, &schema)?)?;
        written.set(written.get() + joined.num_rows() as u64);
        progress.advance(batch.num_rows() as u64);
        crate::fault::point("export.streaming");
        Ok(())
    };
    match plan {
        Plan::Serial(sql, _) => engine.for_each_batch(sql, each)?,
        Plan::Windows { queries, jobs } => {
            parallel::for_each_batch(engine, queries, *jobs, &spool, each)?
        }
        Plan::Scan(plan) => scan::for_each_batch(engine, plan, &spool, progress, each)?,
    };
    Ok(written.get())
}

/// The bar of a run that exports the events from `since` (`whole`: not only what changed
/// since the last run, whose counting would cost a second scan), when one is wanted.
pub fn progress(
    opened: &Opened,
    since: Option<DateTime<Utc>>,
    whole: bool,
    quiet: bool,
) -> Result<Progress> {
    if !whole || !progress::wanted(quiet) {
        return Ok(Progress::hidden());
    }
    let (sql, exact) = query::total(since, opened.dialect);
    let rows = opened
        .engine
        .count(&sql)
        .context("sizing the progress bar")?;
    Ok(Progress::start(match exact {
        true => Total::Exact(rows),
        false => Total::Estimate(rows),
    }))
}
