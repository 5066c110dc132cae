//! `--incremental`: each run writes exactly the events inserted or changed since the previous
//! successful run, as of one consistent snapshot, each change once, in a new file.
//!
//! Why it is exact: a cursor on `timestamp` or `id` cannot be (ids are taken before commit,
//! timestamps come from devices). Instead each run reads, in one REPEATABLE READ transaction,
//! PostgreSQL's snapshot horizon H = `pg_snapshot_xmin(pg_current_snapshot())`: every transaction
//! with an id below H has finished, and every later one has an id of at least H. A run exports
//! the visible rows whose writing transaction (`xmin`) lies in [previous H, this H), so each
//! committed transaction's rows fall into exactly one run, the first one after it finished,
//! whatever their ids and timestamps, and rows of a transaction that rolls back never appear.
//! `xmin` is 32 bits and wraps around, so windows are compared as `age(xmin)` against one
//! reference per run, from the 64-bit H; a window wider than ages can tell apart (a previous run
//! over 2 billion transactions ago) exports every event instead, which replays the same. VACUUM
//! freezing keeps the raw `xmin` readable (PostgreSQL 9.4 and later), so frozen rows are still
//! placed in their window.
//!
//! The state file moves forward only after the files are durable: a crash at any point repeats
//! the whole run or changes nothing. A lock beside the state keeps two runs from sharing it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use chrono::{SecondsFormat, Utc};

mod state;

use crate::cancel::{self, Mode};
use crate::cli::ExportArgs;
use crate::context::Context;
use crate::error::UsageError;
use crate::lock::RunLock;
use crate::model;
use crate::pipeline::{self, Exported, Layout};
use crate::progress::Progress;
use crate::retention::{self, TIME};
use crate::sink::dataset::PartitionBy;
use crate::sink::format::Encoding;
use crate::sink::format::Format;
use crate::sink::manifest::{self, Manifest};
use crate::sink::{self, object, Target};
use crate::source::engine::Engine;
use crate::source::horizon::Horizon;
use crate::source::identity;
use crate::source::plan::{Join, Plan};
use crate::source::query::{self, Dialect};
use crate::source::settings::Source;
use crate::{confine, fault};
use state::{LastRun, State, DEFAULT_STATE};

/// Where each run's files go without `--output`; `{time}` is the run's UTC time.
const DEFAULT_TEMPLATE: &str = "exports/events_{time}";

/// One incremental run.
pub fn run(ctx: &Context, args: &ExportArgs) -> Result<Exported> {
    if let Some(table) = crate::cmd::table::output(ctx, args)? {
        // The table keeps the cursor in its snapshots.
        return crate::cmd::table::run(ctx, args, table, None);
    }
    let since = ctx.since(args.since.as_deref())?;
    let encoding = Context::encoding(&args.output, args.output.output.as_deref())?;
    let targets = targets(ctx, args, &encoding)?;
    let state_target =
        Target::resolve_flag("--state", args.state.as_deref(), DEFAULT_STATE, &ctx.cwd)?;
    // The cursor is loaded, locked and recovered as a local file; in object storage it was
    // saved but never read back (every run exported everything). Refused until it is whole.
    if state_target.remote.is_some() {
        bail!(UsageError(format!(
            "--state {}: the state file must be a local file (its lock and atomic replace are \
             local); keep it on this machine, for example --state exports/.export-events-state.json, \
             while the files go to object storage",
            state_target.shown()
        )));
    }
    let source = ctx.source(args.duckdb.as_deref(), args.demo)?;
    let Source::Postgres(pg) = &source else {
        bail!(UsageError(
            "--incremental follows PostgreSQL's transaction ids: give a PostgreSQL source \
             (--database-url, DATABASE_URL, DB_* or PG* settings), not a DuckDB file"
                .into()
        ));
    };
    // Before the lock, so that SIGINT ends a --wait as well.
    cancel::install(Mode::Cancel)?;
    let _lock = lock(&state_target.path, ctx)?;
    sink::recover(&[&state_target.path])?;
    let previous = if args.reset_state {
        None
    } else {
        state::load(&state_target.path)?
    };
    let horizon = previous.as_ref().and_then(|s| s.horizon);
    if horizon.is_some() && since.is_some() {
        bail!(UsageError(format!(
            "--since only applies to the first incremental run, and state file {} already has a \
             cursor: drop --since, or pass --reset-state to start over from --since",
            state_target.path.display()
        )));
    }
    pipeline::check_remote(&targets)?;

    let opened = crate::source::open(&source)?;
    let (engine, zone) = (opened.engine, opened.zone);
    // DuckDB's transaction is a REPEATABLE READ one in PostgreSQL: one snapshot for all below.
    run_sql(&engine, "BEGIN TRANSACTION")?;
    let snapshot = Horizon::read(&engine, identity::read(&engine)?)?;
    let mut state = match previous {
        Some(previous) => {
            previous.check_source(&snapshot.source, &state_target.path)?;
            let leftovers = leftovers(&previous.pending, &state_target.path, &targets[0].0, ctx)?;
            remove_leftovers(&leftovers, ctx.quiet)?;
            previous
        }
        None => State::empty(snapshot.source.clone()),
    };
    let window = snapshot.window(horizon, since, ctx.quiet, pg.origin)?;
    // Named before they exist, so that a run interrupted from here on is undone by the next.
    let first = &targets[0].0;
    state.pending = targets
        .iter()
        .map(|(t, _)| t.shown())
        .chain(std::iter::once(
            first.at(manifest::path_of(&first.path)).shown(),
        ))
        .collect();
    state::save(&state_target, &state)?;
    fault::point("incremental.pending-saved");

    // A first run is a whole export and gets its bar; later ones are small, and sizing them
    // would cost a second scan.
    let progress = match window.start_age {
        None => pipeline::progress_bar(&engine, since, Dialect::Postgres, ctx.quiet)?,
        Some(_) => Progress::hidden(),
    };
    let layout = Layout {
        partition_by: args.partition_by,
        max_rows_per_file: args.max_rows_per_file,
    };
    let (rows, files) = pipeline::write_files(
        &engine,
        &Plan::Serial(
            query::changed_events(&window, args.partition_by == Some(PartitionBy::Rule)),
            Join::InQuery,
        ),
        model::event_schema(zone),
        &targets,
        &encoding,
        layout,
        &progress,
    )?;
    run_sql(&engine, "COMMIT")?;
    progress.finish(rows);
    let paths: Vec<PathBuf> = if rows > 0 || args.write_empty {
        let identity = snapshot.source.clone();
        pipeline::commit(&targets, files, |output, written| {
            Manifest::new(
                output,
                identity.manifest_source(),
                since,
                Some(snapshot.text.clone()),
                args.partition_by.map(|b| format!("{b:?}").to_lowercase()),
                rows,
                written,
            )
        })?;
        fault::point("incremental.committed");
        pipeline::paths(targets)
    } else {
        drop(files); // removes the temporary files before `pending` forgets them
        Vec::new()
    };
    state.horizon = Some(snapshot.horizon);
    state.runs += 1;
    state.last_run = Some(LastRun {
        finished_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        rows,
        files: paths.iter().map(|p| p.display().to_string()).collect(),
    });
    state.pending.clear();
    state::save(&state_target, &state)?;
    Ok(Exported { rows, paths })
}

/// The files of an interrupted run that the state names, checked: the state file is read back
/// from a folder others may write, so it must be this user's, and each entry a run file: in
/// this run's folder, one of this output's template (its prefix, then a stamp); elsewhere (the
/// run before wrote to another folder, say a disk that was full) a name with a stamp; never
/// through a symlink. Anything else is refused before anything is deleted.
fn leftovers(
    pending: &[String],
    state: &Path,
    first: &Target,
    ctx: &Context,
) -> Result<Vec<String>> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let refuse = |why: String| {
        UsageError(format!(
            "state file {} {why}: it was not written by export-events for this output; fix \
             --output or --state, or pass --reset-state to start over",
            state.display()
        ))
    };
    confine::owned_by_us(state).map_err(|e| refuse(e.0))?;
    let shown = first.shown();
    let (folder, name) = shown.rsplit_once('/').unwrap_or(("", &shown));
    let prefix = &name[..name.find(&ctx.stamp()).unwrap_or(0)];
    pending
        .iter()
        .map(|entry| {
            let (entry_folder, entry_name) = entry.rsplit_once('/').unwrap_or(("", entry));
            let normal = !entry.split('/').any(|part| part == "." || part == "..");
            let run_file = normal
                && match entry_folder == folder {
                    true => retention::is_run_file(entry_name, prefix),
                    false => retention::has_stamp(entry_name),
                };
            if !run_file {
                return Err(refuse(format!(
                    "names {entry:?}, which is not a file of the runs of {}",
                    shown.replace(&ctx.stamp(), TIME)
                )));
            }
            if object::parse(entry).is_none() {
                confine::absolute_in(Path::new(entry_folder), entry).map_err(|e| refuse(e.0))?;
            }
            Ok(entry.clone())
        })
        .collect::<Result<_, UsageError>>()
        .map_err(Into::into)
}

/// Removes what an interrupted run may have written, finished or not: its rows are exported
/// again. The lock is held, so no other run is writing these files.
fn remove_leftovers(pending: &[String], quiet: bool) -> Result<()> {
    let say = |what: &str| {
        if !quiet {
            eprintln!(
                "export-events: removing {what}, written by an interrupted run (this run exports \
                 its events again)"
            );
        }
    };
    let (remote, local): (Vec<&String>, Vec<&String>) =
        pending.iter().partition(|p| object::parse(p).is_some());
    for url in remote {
        if object::remove_url(url)? {
            say(url);
        }
    }
    sink::recover(&local.iter().map(Path::new).collect::<Vec<_>>())?;
    for path in local.iter().map(Path::new).filter(|p| p.exists()) {
        say(&path.display().to_string());
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// This run's files: the template with `{time}` filled in; never an existing file.
fn targets(
    ctx: &Context,
    args: &ExportArgs,
    encoding: &Encoding,
) -> Result<Vec<(Target, &'static Format)>> {
    let stamp = ctx.stamp();
    let template = args
        .output
        .output
        .as_deref()
        .map(|p| p.to_string_lossy().into_owned());
    if let Some(template) = &template {
        if !template.contains(TIME) {
            bail!(UsageError(format!(
                "--output {template}: with --incremental it is a template and needs {TIME} (each \
                 run writes a new file), such as exports/events_{TIME}.csv"
            )));
        }
    }
    let output = template.map(|t| PathBuf::from(t.replace(TIME, &stamp)));
    let default = DEFAULT_TEMPLATE.replace(TIME, &stamp);
    let targets = ctx.targets(
        output.as_deref(),
        &args.output,
        &default,
        encoding,
        args.partition_by.is_some(),
    )?;
    for (target, _) in &targets {
        let taken = match &target.remote {
            Some(bucket) => bucket.exists(&target.key())?,
            None => target.path.exists(),
        };
        if taken {
            bail!(UsageError(format!(
                "{} already exists: each incremental run writes a new file; did the clock go \
                 back?",
                target.shown()
            )));
        }
    }
    Ok(targets)
}

/// Holds an exclusive lock on `<state>.lock` for the run.
fn lock(state: &Path, ctx: &Context) -> Result<RunLock> {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    RunLock::acquire(
        Path::new(&name),
        &format!("state file {}", state.display()),
        ctx.wait,
    )
}

fn run_sql(engine: &Engine, sql: &str) -> Result<()> {
    engine
        .connection()
        .execute_batch(sql)
        .with_context(|| format!("{sql} in DuckDB"))
}
