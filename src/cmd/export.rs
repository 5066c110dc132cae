//! `export-events [--since WHEN] [--output PATH] [--format F] [source]`: one export, following
//! the pipeline: resolve the settings, open the source, build the query, stream its batches into
//! every format from one read (files, or partitioned datasets), put the outputs in place
//! together with their manifest, apply retention, report the original command's
//! `Exported N events to /abs/path`.
//!
//! Everything that can be checked without touching the database (the `--since` value, the output
//! paths, the connection settings) is checked first, so bad input changes nothing.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, Utc};

use crate::cancel::{self, Mode};
use crate::cli::ExportArgs;
use crate::context::Context;
use crate::error::UsageError;
use crate::pipeline::{self, Exported, Layout};
use crate::retention::{self, Keep, TIME};
use crate::sink::dataset::PartitionBy;
use crate::sink::manifest::{self, Manifest};
use crate::source::engine::{literal, Engine, CATALOG};
use crate::source::identity::{self, Identity};
use crate::source::plan::{self, Join, Plan};
use crate::source::query::{self, Dialect};
use crate::source::settings::Source;
use crate::source::Opened;
use crate::{fixtures, model, source};

/// Where the files go without `--output`: the original command's path, with each format's
/// extension.
pub const DEFAULT_STEM: &str = "exports/events_export";

/// One export, silent but for the progress bar and notices.
pub fn run(ctx: &Context, args: &ExportArgs) -> Result<Exported> {
    run_in(ctx, args, None)
}

/// One export, reading PostgreSQL in `snapshot` (exported by another session, which must hold
/// it until this returns) when given: the initial export of a change feed.
pub fn run_in(ctx: &Context, args: &ExportArgs, snapshot: Option<&str>) -> Result<Exported> {
    if let Some(table) = super::table::output(ctx, args)? {
        return super::table::run(ctx, args, table, snapshot);
    }
    let since = ctx.since(args.since.as_deref())?;
    let template = args.output.output.as_deref().map(Path::to_owned);
    let keep = keep(args, template.as_deref())?;
    let output = template.as_deref().map(|t| fill_template(ctx, t));
    let encoding = Context::encoding(&args.output, output.as_deref())?;
    let targets = ctx.targets(
        output.as_deref(),
        &args.output,
        DEFAULT_STEM,
        &encoding,
        args.partition_by.is_some(),
    )?;
    let source = ctx.source(args.duckdb.as_deref(), args.demo)?;
    cancel::install(Mode::Cancel)?;
    pipeline::check_remote(&targets)?;

    let source = fixtures::demo(source, &ctx.cwd, ctx.quiet)?;
    let opened = source::open(&source)?;
    let engine = &opened.engine;
    let _locks = pipeline::lock_targets(&targets, ctx.wait)?;
    // `--output` as a template in the first target's folder: its runs are recovered and kept.
    let template = template
        .as_deref()
        .filter(|t| t.to_string_lossy().contains(TIME))
        .map(|t| {
            targets[0]
                .0
                .path
                .with_file_name(t.file_name().unwrap_or_default())
        });
    if let (Some(template), None) = (&template, &targets[0].0.remote) {
        pipeline::recover_template_runs(template, &targets)?;
    }
    let read = begin(&opened, snapshot)?;
    // Rule partitions come together only when read ordered by rule.
    let by_rule = args.partition_by == Some(PartitionBy::Rule);
    let plan = read_plan(ctx, args, &opened, since, by_rule)?;
    let progress = pipeline::progress_bar(engine, since, opened.dialect, ctx.quiet)?;
    let layout = Layout {
        partition_by: args.partition_by,
        max_rows_per_file: args.max_rows_per_file,
    };
    let (rows, staged) = pipeline::write_files(
        engine,
        &plan,
        model::event_schema(opened.zone),
        &targets,
        &encoding,
        layout,
        &progress,
    )?;
    end(&opened)?;
    let snapshot = read.as_ref().map(|(_, snapshot)| snapshot.clone());
    let manifest_source = match (&source, read) {
        (_, Some((id, _))) => id.manifest_source(),
        (Source::DuckDbFile(path), None) => manifest::Source::duckdb(path),
        _ => bail!("an export reads PostgreSQL or a DuckDB file"),
    };
    pipeline::commit(&targets, staged, |output, files| {
        Manifest::new(
            output,
            manifest_source,
            since,
            snapshot,
            args.partition_by.map(|b| format!("{b:?}").to_lowercase()),
            rows,
            files,
        )
    })?;
    progress.finish(rows);
    if let (true, Some(template)) = (keep.any(), &template) {
        retention::apply(
            template,
            &manifest::path_of(&targets[0].0.path),
            &keep,
            ctx.started,
            ctx.quiet,
        )?;
    }
    Ok(Exported {
        rows,
        paths: pipeline::paths(targets),
    })
}

/// `--output` with `{time}` filled in with the run's UTC time (a template, for `--keep`).
fn fill_template(ctx: &Context, template: &Path) -> PathBuf {
    let text = template.to_string_lossy();
    if !text.contains(TIME) {
        return template.to_owned();
    }
    let stamp = ctx.stamp();
    PathBuf::from(text.replace(TIME, &stamp))
}

/// What `--keep`/`--keep-for` keep; they need a template, or there is nothing to tell runs apart.
fn keep(args: &ExportArgs, template: Option<&Path>) -> Result<Keep, UsageError> {
    let keep = Keep {
        runs: args.keep.map(|n| n as usize),
        newer_than: args.keep_for,
    };
    let templated = template.is_some_and(|t| t.to_string_lossy().contains(TIME));
    if keep.any() && template.is_some_and(|t| t.to_string_lossy().starts_with("s3://")) {
        return Err(UsageError(
            "--keep and --keep-for work on local files: for an s3:// output, expire old runs \
             with a lifecycle rule on the bucket"
                .into(),
        ));
    }
    if keep.any() && !templated {
        return Err(UsageError(format!(
            "--keep and --keep-for delete earlier runs' outputs: give --output a template with \
             {TIME}, such as exports/events_{TIME}.csv"
        )));
    }
    Ok(keep)
}

/// Starts the read: PostgreSQL is read in one REPEATABLE READ transaction (in `snapshot`, when
/// given), whose identity and snapshot the output records. `None` for a DuckDB file.
pub fn begin(opened: &Opened, snapshot: Option<&str>) -> Result<Option<(Identity, String)>> {
    if opened.dialect != Dialect::Postgres {
        return Ok(None);
    }
    let engine = &opened.engine;
    run_sql(engine, "BEGIN TRANSACTION")?;
    if let Some(snapshot) = snapshot {
        let import = format!("SET TRANSACTION SNAPSHOT '{snapshot}'");
        run_sql(
            engine,
            &format!("CALL postgres_execute('{CATALOG}', {})", literal(&import)),
        )?;
    }
    Ok(Some(identity::read(engine)?))
}

/// Ends the read begun by [`begin`].
pub fn end(opened: &Opened) -> Result<()> {
    match opened.dialect {
        Dialect::Postgres => run_sql(&opened.engine, "COMMIT"),
        Dialect::DuckDb => Ok(()),
    }
}

/// How the events are read: ordered by rule when `by_rule`; otherwise, from PostgreSQL, the
/// plan its statistics and `--jobs`, `--read`, `--memory` choose (said unless quiet).
pub fn read_plan(
    ctx: &Context,
    args: &ExportArgs,
    opened: &Opened,
    since: Option<DateTime<Utc>>,
    by_rule: bool,
) -> Result<Plan> {
    let engine = &opened.engine;
    let plan = match (opened.dialect, by_rule) {
        (_, true) => Plan::Serial(query::events_by_rule(since, opened.dialect), Join::InQuery),
        (Dialect::Postgres, _) => plan::choose(engine, since, jobs(args), args.read, args.memory)?,
        (Dialect::DuckDb, _) => Plan::Serial(query::events(since, opened.dialect), Join::InQuery),
    };
    if let (Plan::Windows { .. } | Plan::Scan(_), false) = (&plan, ctx.quiet) {
        eprintln!("export-events: reading with {}", plan.describe());
    }
    Ok(plan)
}

fn run_sql(engine: &Engine, sql: &str) -> Result<()> {
    engine
        .connection()
        .execute_batch(sql)
        .with_context(|| format!("{sql} in DuckDB"))
}

/// `--jobs`, or one connection per core.
fn jobs(args: &ExportArgs) -> usize {
    args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}
