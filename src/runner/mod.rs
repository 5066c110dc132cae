//! The runner: the one order of every export, whatever it writes and whatever cursor it moves.
//!
//! lock -> recover -> check -> (source) -> snapshot -> position -> read -> write -> commit
//! (with the manifest, last) -> retention -> cursor.
//!
//! A whole export, an incremental run and a run into a table differ by their plan's
//! [`Output`](crate::output::Output) and [`Cursor`](crate::cursor::Cursor), which this calls,
//! never by a copy of the sequence. The initial export of a change feed differs only by where
//! its snapshot comes from ([`SnapshotSource`]): the slot it creates, once every refusal that
//! could stop the export is behind it.

mod stream;

use anyhow::{bail, Result};

use crate::cancel::{self, Mode};
use crate::cursor::{self, Cursor};
use crate::error::UsageError;
use crate::output::{self, Facts, Output};
use crate::plan::Run;
use crate::sink::manifest;
use crate::source::horizon::Horizon;
use crate::source::query::Window;
use crate::source::read::{self, Rows, Snapshot};
use crate::source::settings::Source;
use crate::{fixtures, source, template};

/// What a run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub rows: u64,
    /// How the outputs are named (absolute paths, URLs, a table), in the order of the formats.
    pub paths: Vec<String>,
}

impl Exported {
    /// `Exported N events to /abs/path` (`... and /abs/other` with several formats); a run that
    /// wrote no file (nothing new for `--incremental`) says `Exported 0 events`.
    pub fn success_line(&self) -> String {
        if self.paths.is_empty() {
            return format!("Exported {} events", self.rows);
        }
        format!(
            "Exported {} events to {}",
            self.rows,
            self.paths.join(" and ")
        )
    }
}

/// Where a run's snapshot comes from.
pub trait SnapshotSource {
    /// Called once everything that could refuse the run is done, just before it reads: the
    /// snapshot to read in, or `None` for the run's own.
    fn take(&mut self) -> Result<Option<String>>;
}

/// The run's own snapshot.
pub struct OwnSnapshot;

impl SnapshotSource for OwnSnapshot {
    fn take(&mut self) -> Result<Option<String>> {
        Ok(None)
    }
}

/// Runs `plan`, reading in the snapshot `snapshot` gives.
pub fn run(plan: &Run, snapshot: &mut dyn SnapshotSource) -> Result<Exported> {
    let stamp = plan.started.format(template::STAMP_FORMAT).to_string();
    let mut output = output::open(plan);
    let mut cursor = cursor::open(plan, &stamp);
    // Before the locks, so that SIGINT ends a --wait as well.
    cancel::install(Mode::Cancel)?;
    let _locks = [cursor.lock(plan.wait)?, output.lock(plan.wait)?];
    // Only once every lock is held: one output's journal may finish another's commit.
    cursor.recover()?;
    output.recover()?;
    output.check()?;
    let source = fixtures::demo(plan.source.clone(), &plan.cwd, plan.quiet)?;
    let opened = source::open(&source)?;
    read::refuse_null_timestamps(&opened, plan.since)?;
    output.prepare(opened.zone, plan.cursor.incremental())?;
    let imported = snapshot.take()?;
    let read = read::begin(&opened, imported.as_deref())?;
    let (horizon, window) = position(plan, &opened, read.as_ref(), cursor.as_mut(), &*output)?;
    if let Some(read) = &read {
        cursor.begin(&*output, read)?;
    }
    let rows = Rows {
        since: plan.since,
        window: window.as_ref(),
        by_rule: output.by_rule(),
    };
    let read_plan = read::plan(&opened, rows, plan.read, plan.quiet)?;
    let whole = window.is_none_or(|w| w.start_age.is_none());
    let progress = stream::progress(&opened, plan.since, whole, plan.quiet)?;
    output.start(horizon.as_ref().map(|h| h.horizon as i64))?;
    let rows = stream::rows(&opened, &read_plan, output.as_mut(), &progress)?;
    output.finish()?;
    read::end(&opened)?;
    progress.finish(rows);
    let facts = Facts {
        rows,
        since: plan.since,
        source: manifest_source(&source, read.as_ref())?,
        snapshot: read.as_ref().map(|r| r.text.clone()),
        identity: read.map(|r| r.identity),
        cursor: horizon
            .as_ref()
            .map(|h| cursor.summary(h))
            .unwrap_or_default(),
    };
    let paths = output.commit(&facts)?;
    output.retain(plan.started, plan.quiet)?;
    if let Some(horizon) = &horizon {
        cursor.save(horizon, rows, &paths)?;
    }
    Ok(Exported { rows, paths })
}

/// Where an incremental run starts and ends: this snapshot's horizon, and the window of
/// transactions since the cursor's (a cursor of another database, or one with `--since`, is
/// refused). `None` for a whole export.
fn position(
    plan: &Run,
    opened: &source::Opened,
    read: Option<&Snapshot>,
    cursor: &mut dyn Cursor,
    output: &dyn Output,
) -> Result<(Option<Horizon>, Option<Window>)> {
    let (true, Some(read)) = (plan.cursor.incremental(), read) else {
        return Ok((None, None));
    };
    let horizon = Horizon::read(&opened.engine)?;
    let previous = cursor.previous(output)?;
    if let Some((_, identity)) = &previous {
        identity.check_same(&read.identity, &cursor.whose(), cursor.elsewhere())?;
        if plan.since.is_some() {
            bail!(UsageError(format!(
                "--since only applies to the first incremental run, and {} already has a \
                 cursor: drop --since{}",
                cursor.describe(),
                cursor.restart()
            )));
        }
    }
    let origin = match &plan.source {
        Source::Postgres(pg) => pg.origin,
        _ => "the source",
    };
    let window = horizon.window(previous.map(|(h, _)| h), plan.since, plan.quiet, origin)?;
    Ok((Some(horizon), Some(window)))
}

/// Where the rows came from, as a manifest says.
fn manifest_source(source: &Source, read: Option<&Snapshot>) -> Result<manifest::Source> {
    Ok(match (read, source) {
        (Some(read), _) => read.identity.clone().manifest_source(),
        (None, Source::DuckDbFile(path)) => manifest::Source::duckdb(path),
        (None, _) => bail!("an export reads PostgreSQL or a DuckDB file"),
    })
}
