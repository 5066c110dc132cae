//! One export, following the pipeline: resolve settings, open the source, build the query,
//! stream its batches into the sink, report `Exported N events to /abs/path`.
//!
//! Everything that can be checked without touching the database (the `--since` value, the output
//! folder, the connection settings) is checked first, so bad input changes nothing.

use std::path::Path;

use anyhow::{Context as _, Result};
use chrono::Utc;

use crate::cli::ExportArgs;
use crate::engine::{Access, Engine};
use crate::settings::{self, Env, Source};
use crate::sink::{self, csv::CsvSink, Target};
use crate::{generate, query, since};

/// Where the CSV goes without `--output`, as in the original command.
pub const DEFAULT_OUTPUT: &str = "exports/events_export.csv";

/// `export-events [--since WHEN] [--output PATH] [source]`.
pub fn run(args: &ExportArgs) -> Result<()> {
    let since = args
        .since
        .as_deref()
        .map(|text| since::parse(text, Utc::now()))
        .transpose()?;
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let target = Target::resolve(args.output.as_deref(), DEFAULT_OUTPUT, &cwd)?;
    let source = settings::resolve(&args.source, &Env::load(&cwd)?)?;
    sink::remove_partial_files_on_signal()?;

    let (engine, described) = open(&source, &cwd, args.quiet)?;
    engine.require_tables(&["events", "rules"], &described)?;
    let mut csv = CsvSink::create(&target)?;
    let rows = engine.for_each_batch(&query::events(since), &[], |batch| csv.write_batch(batch))?;
    csv.finish()?;
    println!("Exported {rows} events to {}", target.path.display());
    Ok(())
}

/// Attaches the source read-only; returns the engine and a description for messages.
fn open(source: &Source, cwd: &Path, quiet: bool) -> Result<(Engine, String)> {
    let engine = Engine::new()?;
    Ok(match source {
        Source::Postgres(pg) => (
            engine.attach_postgres(pg, Access::ReadOnly)?,
            format!("the PostgreSQL database (settings from {})", pg.origin),
        ),
        Source::DuckDbFile(path) => (
            engine.attach_duckdb(path, Access::ReadOnly)?,
            format!("DuckDB file {}", path.display()),
        ),
        Source::Demo => {
            let path = generate::ensure_demo(cwd, quiet)?;
            if !quiet {
                eprintln!(
                    "export-events: reading the demo database {}",
                    path.display()
                );
            }
            (
                engine.attach_duckdb(&path, Access::ReadOnly)?,
                format!("the demo database {}", path.display()),
            )
        }
    })
}
