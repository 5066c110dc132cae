//! `export-events [--since WHEN] [--output PATH] [--format F] [source]`: one export, following
//! the pipeline: resolve the settings, open the source, build the query, stream its batches into
//! every format from one read, put the files in place together, report the original command's
//! `Exported N events to /abs/path`.
//!
//! Everything that can be checked without touching the database (the `--since` value, the output
//! paths, the connection settings) is checked first, so bad input changes nothing.

use anyhow::Result;

use crate::cancel::{self, Mode};
use crate::cli::ExportArgs;
use crate::context::Context;
use crate::pipeline::{self, Exported};
use crate::sink;
use crate::source::plan::{self, Plan};
use crate::source::query::{self, Dialect};
use crate::source::{self};
use crate::{fixtures, model};

/// Where the files go without `--output`: the original command's path, with each format's
/// extension.
pub const DEFAULT_STEM: &str = "exports/events_export";

/// One export, silent but for the progress bar.
pub fn run(ctx: &Context, args: &ExportArgs) -> Result<Exported> {
    let since = ctx.since(args.since.as_deref())?;
    let targets = ctx.targets(args.output.output.as_deref(), &args.output, DEFAULT_STEM)?;
    let source = ctx.source(args.duckdb.as_deref(), args.demo)?;
    cancel::install(Mode::Cancel)?;

    let opened = source::open(&fixtures::demo(source, &ctx.cwd, ctx.quiet)?)?;
    let _locks = pipeline::lock_targets(&targets, ctx.wait)?;
    let plan = match opened.dialect {
        Dialect::Postgres => plan::choose(&opened.engine, since, jobs(args))?,
        Dialect::DuckDb => Plan::Serial(query::events(since, opened.dialect)),
    };
    if let (Plan::Windows { .. }, false) = (&plan, ctx.quiet) {
        eprintln!("export-events: reading with {}", plan.describe());
    }
    let progress = pipeline::progress_bar(&opened.engine, since, opened.dialect, ctx.quiet)?;
    let (rows, files) = pipeline::write_files(
        &opened.engine,
        &plan,
        model::event_schema(),
        &targets,
        &Context::encoding(&args.output),
        &progress,
    )?;
    sink::commit_all(files)?;
    progress.finish(rows);
    Ok(Exported {
        rows,
        paths: pipeline::paths(targets),
    })
}

/// `--jobs`, or one connection per core.
fn jobs(args: &ExportArgs) -> usize {
    args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}
