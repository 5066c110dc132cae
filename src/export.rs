//! One export, following the pipeline: resolve settings, open the source, build the query,
//! stream its batches into every sink (CSV, Parquet, or both from one read), put the files in
//! place together, report `Exported N events to /abs/path`.
//!
//! Everything that can be checked without touching the database (the `--since` value, the output
//! paths, the connection settings) is checked first, so bad input changes nothing.

use std::path::Path;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};

use crate::cancel::{self, Mode};
use crate::cli::{Compression, ExportArgs, Format};
use crate::engine::{Access, Engine};
use crate::lock::{self, RunLock, Wait};
use crate::progress::{self, Progress, Total};
use crate::query::{self, Dialect};
use crate::settings::{self, Env, Source};
use crate::sink::{
    self, csv::CsvSink, parquet::ParquetSink, threaded::Writers, AtomicFile, Sink, Target,
};
use crate::{generate, since};

/// Where the CSV goes without `--output`, as in the original command.
pub const DEFAULT_OUTPUT: &str = "exports/events_export.csv";
/// Where the Parquet file goes with `--format parquet` and no `--output`.
pub const DEFAULT_PARQUET_OUTPUT: &str = "exports/events_export.parquet";

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub rows: u64,
    /// Absolute paths of the files, CSV first.
    pub paths: Vec<std::path::PathBuf>,
}

/// `export-events [--since WHEN] [--output PATH] [--format F] [source]`: exports, then prints
/// the original command's success line.
pub fn run(args: &ExportArgs) -> Result<()> {
    let exported = if args.incremental {
        crate::incremental::export(args)?
    } else {
        export(args)?
    };
    println!("{}", exported.success_line());
    Ok(())
}

impl Exported {
    /// `Exported N events to /abs/path` (`... and /abs/other` with both formats); an
    /// incremental run that found nothing new wrote no file.
    pub fn success_line(&self) -> String {
        let paths: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        if paths.is_empty() {
            return format!("Exported {} events", self.rows);
        }
        format!("Exported {} events to {}", self.rows, paths.join(" and "))
    }
}

/// One export, silent but for the progress bar.
pub fn export(args: &ExportArgs) -> Result<Exported> {
    let since = args
        .since
        .as_deref()
        .map(|text| since::parse(text, Utc::now()))
        .transpose()?;
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let targets = targets(
        args.output.as_deref(),
        args.format,
        [DEFAULT_OUTPUT, DEFAULT_PARQUET_OUTPUT],
        &cwd,
    )?;
    let source = settings::resolve(&args.source, &Env::load(&cwd)?)?;
    cancel::install(Mode::Cancel)?;

    let (engine, dialect, described) = open(&source, &cwd, args.quiet)?;
    engine.require_tables(&["events", "rules"], &described)?;
    let _locks = lock_targets(&targets, wait(args))?;
    let progress = progress_bar(&engine, since, dialect, args.quiet)?;
    let sql = query::events(since, dialect);
    let (rows, files) = write_files(&engine, &sql, &targets, args.compression, &progress)?;
    sink::commit_all(files)?;
    progress.finish(rows);
    Ok(Exported {
        rows,
        paths: targets.into_iter().map(|(t, _)| t.path).collect(),
    })
}

/// How a run treats another one holding its lock.
pub fn wait(args: &ExportArgs) -> Wait {
    if args.wait {
        Wait::Yes { quiet: args.quiet }
    } else {
        Wait::No
    }
}

/// Locks every target (in path order, so two runs cannot each hold one), then makes each whole
/// again if a killed run left it mid-commit or left temporary files beside it.
fn lock_targets(targets: &[(Target, Format)], wait: Wait) -> Result<Vec<RunLock>> {
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

/// Streams the rows of `sql` into one file per target; returns the number of rows and the
/// files, complete but not yet in place.
pub fn write_files(
    engine: &Engine,
    sql: &str,
    targets: &[(Target, Format)],
    compression: Compression,
    progress: &Progress,
) -> Result<(u64, Vec<AtomicFile>)> {
    let sinks = targets
        .iter()
        .map(|(target, format)| -> Result<Box<dyn Sink>> {
            Ok(match format {
                Format::Parquet => Box::new(ParquetSink::create(target, compression)?),
                _ => Box::new(CsvSink::create(target)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut writers = Writers::spawn(sinks)?;
    let rows = engine.for_each_batch(sql, |batch| {
        writers.write(batch)?;
        progress.advance(batch.num_rows() as u64);
        Ok(())
    })?;
    Ok((rows, writers.close()?))
}

/// The files to write, each with its format: `output`, or the default of the format
/// (`[csv, parquet]`); with `both`, the Parquet file goes beside the CSV.
pub fn targets(
    output: Option<&Path>,
    format: Format,
    [csv_default, parquet_default]: [&str; 2],
    cwd: &Path,
) -> Result<Vec<(Target, Format)>> {
    Ok(match format {
        Format::Csv => vec![(Target::resolve(output, csv_default, cwd)?, Format::Csv)],
        Format::Parquet => vec![(
            Target::resolve(output, parquet_default, cwd)?,
            Format::Parquet,
        )],
        Format::Both => {
            let csv = Target::resolve(output, csv_default, cwd)?;
            let parquet = csv.sibling("parquet")?;
            vec![(csv, Format::Csv), (parquet, Format::Parquet)]
        }
    })
}

/// Attaches the source read-only; returns the engine, the SQL dialect that reads it, and a
/// description for messages.
pub fn open(source: &Source, cwd: &Path, quiet: bool) -> Result<(Engine, Dialect, String)> {
    let (path, described) = match source {
        Source::Postgres(pg) => {
            let engine = Engine::postgres(pg, Access::ReadOnly)?
                .bound_memory()?
                .single_threaded()?;
            let described = format!("the PostgreSQL database (settings from {})", pg.origin);
            return Ok((engine, Dialect::Postgres, described));
        }
        Source::DuckDbFile(path) => (path.clone(), format!("DuckDB file {}", path.display())),
        Source::Demo => {
            let path = generate::ensure_demo(cwd, quiet)?;
            if !quiet {
                eprintln!(
                    "export-events: reading the demo database {}",
                    path.display()
                );
            }
            let described = format!("the demo database {}", path.display());
            (path, described)
        }
    };
    let engine = Engine::new()?
        .bound_memory()?
        .attach_duckdb(&path, Access::ReadOnly)?;
    Ok((engine, Dialect::DuckDb, described))
}
