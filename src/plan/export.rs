//! An export's plan: a whole export or an incremental run, into files or an Iceberg table, from
//! what the command line said ([`Request`]), resolved against the run's [`Context`].

use std::path::Path;

use crate::context::Context;
use crate::error::UsageError;
use crate::retention::Keep;
use crate::sink::dataset::PartitionBy;
use crate::sink::format::{Compression, Encoding};
use crate::sink::registry::Formats;
use crate::sink::table::TableOutput;
use crate::source::plan::Read;
use crate::source::read::Options;
use crate::source::settings::Source;
use crate::store::{url, Feature, Given, Kind, Target, DEFAULT_MODE};
use crate::template::{self, TIME};

use super::files::{self, Request as FilesRequest};
use super::{Cursor, Files, Layout, Output, Run, Table};

/// Where the files go without `--output`: the original command's path, with each format's
/// extension.
pub const DEFAULT_STEM: &str = "exports/events_export";
/// Where each incremental run's files go without `--output`; `{time}` is the run's UTC time.
const DEFAULT_TEMPLATE: &str = "exports/events_{time}";
/// Where incremental runs keep their cursor without `--state`.
pub const DEFAULT_STATE: &str = "exports/.export-events-state.json";

/// What the command line says about an export.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub since: Option<&'a str>,
    pub output: Option<&'a Path>,
    pub formats: &'a Formats,
    pub compression: Option<Compression>,
    pub mode: Option<u32>,
    /// `--catalog` and `--warehouse`, for a table.
    pub catalog: Option<&'a str>,
    pub warehouse: Option<&'a Path>,
    pub duckdb: Option<&'a Path>,
    pub demo: bool,
    pub jobs: Option<usize>,
    pub read: Read,
    pub memory: u64,
    pub partition_by: Option<PartitionBy>,
    pub max_rows_per_file: u64,
    pub keep: Keep,
    /// `--incremental`, with its options.
    pub incremental: Option<Incremental<'a>>,
}

/// The options of `--incremental`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Incremental<'a> {
    pub state: Option<&'a Path>,
    pub write_empty: bool,
    pub reset_state: bool,
}

/// The plan of `request`: where the rows go first (as the original command checked its path
/// first), then where they come from.
pub fn resolve(ctx: &Context, request: &Request) -> Result<Run, UsageError> {
    let since = ctx.since(request.since)?;
    let table = TableOutput::resolve(request.output, request.catalog, request.warehouse, &ctx.cwd)?;
    let (output, cursor) = match (table, request.incremental) {
        (Some(table), incremental) => (
            table_output(request, table)?,
            match incremental {
                Some(_) => Cursor::InTable,
                None => Cursor::None,
            },
        ),
        (None, Some(incremental)) => incremental_files(ctx, request, incremental)?,
        (None, None) => (Output::Files(whole_files(ctx, request)?), Cursor::None),
    };
    let source = ctx.source(request.duckdb, request.demo)?;
    if let Source::DuckDbFile(path) = &source {
        crate::source::settings::require_file(path)?;
    }
    if request.incremental.is_some() && !matches!(source, Source::Postgres(_)) {
        return Err(UsageError(
            "--incremental follows PostgreSQL's transaction ids: give a PostgreSQL source \
             (--database-url, DATABASE_URL, DB_* or PG* settings), not a DuckDB file"
                .into(),
        ));
    }
    Ok(Run {
        source,
        since,
        read: Options {
            jobs: request.jobs.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
            read: request.read,
            memory: request.memory,
        },
        output,
        cursor,
        started: ctx.started,
        cwd: ctx.cwd.clone(),
        quiet: ctx.quiet,
        wait: ctx.wait,
    })
}

fn files_request<'a>(request: &Request<'a>) -> FilesRequest<'a> {
    FilesRequest {
        output: request.output,
        formats: request.formats,
        compression: request.compression,
        mode: request.mode,
        dataset: request.partition_by.is_some(),
    }
}

fn layout(request: &Request) -> Layout {
    Layout {
        partition_by: request.partition_by,
        max_rows_per_file: request.max_rows_per_file,
    }
}

/// A whole export's files: `--output` (with `{time}` filled in, a template) or the default.
fn whole_files(ctx: &Context, request: &Request) -> Result<Files, UsageError> {
    let files_request = files_request(request);
    let given = request.output.map(|o| o.to_string_lossy().into_owned());
    let output = given.as_deref().map(|t| template::fill(t, &ctx.stamp()));
    let encoding = files::encoding(&files_request, output.as_deref().map(Path::new))?;
    let targets = files::targets(
        &files_request,
        output.as_deref(),
        DEFAULT_STEM,
        &encoding,
        &ctx.cwd,
    )?;
    let keep = files::keep(request.keep, given.as_deref(), &targets[0].0)?;
    Ok(Files {
        template: files::template(given.as_deref(), &targets[0].0),
        targets,
        encoding,
        layout: layout(request),
        keep,
        fresh: false,
        write_empty: true,
    })
}

/// An incremental run's files, new ones named by the run's time, and its state file.
fn incremental_files(
    ctx: &Context,
    request: &Request,
    incremental: Incremental,
) -> Result<(Output, Cursor), UsageError> {
    let template = request.output.map(|p| p.to_string_lossy().into_owned());
    if let Some(template) = template.as_deref().filter(|t| !template::is_template(t)) {
        return Err(UsageError(format!(
            "--output {template}: with --incremental it is a template and needs {TIME} (each \
             run writes a new file), such as exports/events_{TIME}.csv"
        )));
    }
    let stamp = ctx.stamp();
    let files_request = files_request(request);
    let output = template.as_deref().map(|t| template::fill(t, &stamp));
    let encoding = files::encoding(&files_request, request.output)?;
    let default = template::fill(DEFAULT_TEMPLATE, &stamp);
    let targets = files::targets(
        &files_request,
        output.as_deref(),
        &default,
        &encoding,
        &ctx.cwd,
    )?;
    let first = &targets[0].0;
    let run_template = first
        .at
        .with_name(&first.at.name().replacen(&stamp, TIME, 1));
    let files = Files {
        template: Some(run_template),
        targets,
        encoding,
        layout: layout(request),
        // Runs of an incremental template are the changes: none is ever deleted.
        keep: Keep::default(),
        fresh: true,
        write_empty: incremental.write_empty,
    };
    let cursor = Cursor::StateFile {
        state: state(ctx, incremental.state)?,
        reset: incremental.reset_state,
    };
    Ok((Output::Files(files), cursor))
}

/// The state file of `--state`, or the default: a local file.
fn state(ctx: &Context, state: Option<&Path>) -> Result<Target, UsageError> {
    let given = state.map(|s| s.to_string_lossy().into_owned());
    let at = url::locate(given.as_deref().unwrap_or(DEFAULT_STATE), &ctx.cwd)?;
    // Loaded, locked and replaced in place: refused where that cannot be (in object storage it
    // was once saved but never read back, and every run exported everything).
    if !at.store().supports(Feature::StateFile) {
        return Err(UsageError(format!(
            "--state {}: the state file must be a local file (its lock and atomic replace are \
             local); keep it on this machine, for example --state \
             exports/.export-events-state.json, while the files go to object storage",
            at.shown()
        )));
    }
    let check = Given {
        flag: "--state",
        text: given,
        default_name: ".export-events-state.json".into(),
    };
    at.store().check(at.key(), Kind::File, &check)?;
    Ok(Target {
        create_folder: state.is_none(),
        mode: DEFAULT_MODE,
        named_later: false,
        at,
    })
}

/// A table's output: its data files are Parquet, so flags about files are refused rather than
/// ignored.
fn table_output(request: &Request, table: TableOutput) -> Result<Output, UsageError> {
    let incremental = request.incremental.unwrap_or_default();
    let encoding = data_encoding(
        request.formats,
        request.compression,
        &[
            (request.mode.is_some(), "--mode"),
            (request.keep.any(), "--keep"),
            (incremental.state.is_some(), "--state"),
            (incremental.write_empty, "--write-empty"),
            (incremental.reset_state, "--reset-state"),
        ],
    )?;
    Ok(Output::Table(Table {
        table,
        encoding,
        partition_by: request.partition_by,
    }))
}

/// How a table's data files are written: Parquet, `--compression` their codec (zstd unless
/// told). `--format` other than one of csv (the default) or parquet, and the `others` flags
/// given are about files, and refused rather than ignored.
pub fn data_encoding(
    formats: &Formats,
    compression: Option<Compression>,
    others: &[(bool, &'static str)],
) -> Result<Encoding, UsageError> {
    let names: Vec<&str> = formats.0.iter().map(|f| f.name).collect();
    let refused = [(names != ["csv"] && names != ["parquet"], "--format")];
    if let Some((_, flag)) = refused.iter().chain(others).find(|(given, _)| *given) {
        return Err(UsageError(format!(
            "{flag} is about files: an Iceberg table's data files are Parquet, kept by the \
             table's snapshots, and its cursor is in them; drop {flag} (--compression sets the \
             files' codec)"
        )));
    }
    Ok(Encoding {
        compression: compression.unwrap_or(Compression::Zstd),
        text: crate::sink::compress::TextCompression::None,
    })
}
