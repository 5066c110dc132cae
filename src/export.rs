//! One export, following the pipeline: resolve settings, open the source, build the query,
//! stream its batches into every sink (CSV, Parquet, or both from one read), put the files in
//! place together, report `Exported N events to /abs/path`.
//!
//! Everything that can be checked without touching the database (the `--since` value, the output
//! paths, the connection settings) is checked first, so bad input changes nothing.

use std::path::Path;

use anyhow::{Context as _, Result};
use chrono::Utc;

use crate::cli::{ExportArgs, Format};
use crate::engine::{Access, Engine};
use crate::progress::{self, Progress, Total};
use crate::query::{self, Dialect};
use crate::settings::{self, Env, Source};
use crate::sink::{self, csv::CsvSink, parquet::ParquetSink, Sink, Target};
use crate::{generate, since};

/// Where the CSV goes without `--output`, as in the original command.
pub const DEFAULT_OUTPUT: &str = "exports/events_export.csv";
/// Where the Parquet file goes with `--format parquet` and no `--output`.
pub const DEFAULT_PARQUET_OUTPUT: &str = "exports/events_export.parquet";

/// `export-events [--since WHEN] [--output PATH] [--format F] [source]`.
pub fn run(args: &ExportArgs) -> Result<()> {
    let since = args
        .since
        .as_deref()
        .map(|text| since::parse(text, Utc::now()))
        .transpose()?;
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let targets = targets(args, &cwd)?;
    let source = settings::resolve(&args.source, &Env::load(&cwd)?)?;
    sink::remove_partial_files_on_signal()?;

    let (engine, dialect, described) = open(&source, &cwd, args.quiet)?;
    engine.require_tables(&["events", "rules"], &described)?;
    let progress = if progress::wanted(args.quiet) {
        let (sql, exact) = query::total(since, dialect);
        let rows = engine.count(&sql).context("sizing the progress bar")?;
        Progress::start(if exact {
            Total::Exact(rows)
        } else {
            Total::Estimate(rows)
        })
    } else {
        Progress::hidden()
    };
    let mut sinks = targets
        .iter()
        .map(|(target, format)| -> Result<Box<dyn Sink>> {
            Ok(match format {
                Format::Parquet => Box::new(ParquetSink::create(target, args.compression)?),
                _ => Box::new(CsvSink::create(target)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = engine.for_each_batch(&query::events(since, dialect), |batch| {
        for sink in &mut sinks {
            sink.write_batch(batch)?;
        }
        progress.advance(batch.num_rows() as u64);
        Ok(())
    })?;
    let files = sinks
        .into_iter()
        .map(|sink| sink.close())
        .collect::<Result<Vec<_>>>()?;
    sink::commit_all(files)?;
    progress.finish(rows);
    let paths: Vec<String> = targets
        .iter()
        .map(|(t, _)| t.path.display().to_string())
        .collect();
    println!("Exported {rows} events to {}", paths.join(" and "));
    Ok(())
}

/// The files to write, each with its format: with `both`, the Parquet file goes beside the CSV.
fn targets(args: &ExportArgs, cwd: &Path) -> Result<Vec<(Target, Format)>> {
    let output = args.output.as_deref();
    Ok(match args.format {
        Format::Csv => vec![(Target::resolve(output, DEFAULT_OUTPUT, cwd)?, Format::Csv)],
        Format::Parquet => vec![(
            Target::resolve(output, DEFAULT_PARQUET_OUTPUT, cwd)?,
            Format::Parquet,
        )],
        Format::Both => {
            let csv = Target::resolve(output, DEFAULT_OUTPUT, cwd)?;
            let parquet = csv.sibling("parquet")?;
            vec![(csv, Format::Csv), (parquet, Format::Parquet)]
        }
    })
}

/// Attaches the source read-only; returns the engine, the SQL dialect that reads it, and a
/// description for messages.
fn open(source: &Source, cwd: &Path, quiet: bool) -> Result<(Engine, Dialect, String)> {
    let engine = Engine::new()?.bound_memory()?;
    Ok(match source {
        Source::Postgres(pg) => (
            engine.attach_postgres(pg, Access::ReadOnly)?,
            Dialect::Postgres,
            format!("the PostgreSQL database (settings from {})", pg.origin),
        ),
        Source::DuckDbFile(path) => (
            engine.attach_duckdb(path, Access::ReadOnly)?,
            Dialect::DuckDb,
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
            let engine = engine.attach_duckdb(&path, Access::ReadOnly)?;
            (
                engine,
                Dialect::DuckDb,
                format!("the demo database {}", path.display()),
            )
        }
    })
}
