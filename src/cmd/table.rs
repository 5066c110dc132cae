//! `export-events --output iceberg:NAMESPACE.TABLE --catalog … --warehouse …`: an export into an
//! Apache Iceberg table, whole or (`--incremental`) the events changed since the last run. The
//! read is every export's (settings, source, plan, stream); the rows become the table's data
//! files instead of files, then one catalog commit makes them a snapshot, whose summary names
//! the run, the source and the PostgreSQL snapshot read.
//!
//! A full export goes into a new (or empty) table. Replacing a table's rows in one snapshot is
//! an overwrite commit, which the `iceberg` crate (0.10) does not offer: a table that already
//! holds rows is refused, never given a second copy of them.
//!
//! Incremental runs append the changed events as versions, with a `version` column (the run's
//! snapshot horizon). The cursor is in the snapshot's summary: the table is the state, so rows
//! and cursor are committed together, and no state file can disagree with the table.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use iceberg::table::Table;

use super::export;
use crate::cancel::{self, Mode};
use crate::cli::{ExportArgs, OutputArgs};
use crate::context::Context;
use crate::error::UsageError;
use crate::lock::RunLock;
use crate::pipeline::{self, Exported};
use crate::progress::Progress;
use crate::sink::format::{Compression, Encoding};
use crate::sink::table::catalog::{self, Layout};
use crate::sink::table::commit;
use crate::sink::table::pending::{self, Record};
use crate::sink::table::writer::TableSink;
use crate::sink::table::{holds, rows_in, TableOutput};
use crate::sink::Sink;
use crate::source::horizon::Horizon;
use crate::source::identity::Identity;
use crate::source::plan::{Join, Plan};
use crate::source::query;
use crate::source::settings::Source;
use crate::{fixtures, model, source};

/// The summary properties of an incremental run's snapshot: its horizon, and what it belongs to.
const HORIZON: &str = "export-events.horizon";
const SOURCE: &str = "export-events.source-id";

/// The table `--output iceberg:…` names, with `--catalog` and `--warehouse`; `None` for other
/// outputs.
pub fn output(ctx: &Context, args: &ExportArgs) -> Result<Option<TableOutput>, UsageError> {
    let output = &args.output;
    TableOutput::resolve(
        output.output.as_deref(),
        output.catalog.as_deref(),
        output.warehouse.as_deref(),
        &ctx.cwd,
    )
}

/// One export into `output`, reading PostgreSQL in `snapshot` when given (the initial export
/// of a change feed, in its slot's snapshot).
pub fn run(
    ctx: &Context,
    args: &ExportArgs,
    output: TableOutput,
    snapshot: Option<&str>,
) -> Result<Exported> {
    let since = ctx.since(args.since.as_deref())?;
    let encoding = encoding(args)?;
    let source = ctx.source(args.duckdb.as_deref(), args.demo)?;
    let origin = match (&source, args.incremental) {
        (Source::Postgres(pg), _) => Some(pg.origin),
        (_, false) => None,
        (_, true) => bail!(UsageError(
            "--incremental follows PostgreSQL's transaction ids: give a PostgreSQL source \
             (--database-url, DATABASE_URL, DB_* or PG* settings), not a DuckDB file"
                .into()
        )),
    };
    cancel::install(Mode::Cancel)?;
    // The catalog first: wrong credentials stop the run before anything is written.
    let catalog = output.catalog.open(&output.warehouse)?;
    let own = output.own_folder();
    let _lock = RunLock::acquire(&own.join("lock"), &output.shown(), ctx.wait)?;

    let source = fixtures::demo(source, &ctx.cwd, ctx.quiet)?;
    let opened = source::open(&source)?;
    let schema = match args.incremental {
        true => model::versions_schema(opened.zone),
        false => model::event_schema(opened.zone),
    };
    let table = catalog::table(
        catalog.as_ref(),
        &output.ident,
        &schema,
        Layout::events(args.partition_by),
    )?;
    pending::settle(&own, &table)?;
    let cursor = match args.incremental {
        true => cursor(&table, &output)?,
        false => {
            refuse_rows(&table, &output)?;
            None
        }
    };
    let base = table.metadata().current_snapshot_id();

    let read = export::begin(&opened, snapshot)?;
    let (plan, horizon, progress) = match (origin.filter(|_| args.incremental), &read) {
        (Some(origin), Some(read)) => {
            let horizon = Horizon::read(&opened.engine, read.clone())?;
            let previous = match &cursor {
                Some((previous, identity)) => {
                    check_source(identity, &horizon.source, &output)?;
                    if since.is_some() {
                        bail!(UsageError(format!(
                            "--since only applies to the first incremental run, and table {} \
                             already has a cursor: drop --since",
                            output.shown()
                        )));
                    }
                    Some(*previous)
                }
                None => None,
            };
            let window = horizon.window(previous, since, ctx.quiet, origin)?;
            let plan = Plan::Serial(query::changed_events(&window, false), Join::InQuery);
            // A first run is a whole export and gets its bar; later ones are small.
            let progress = match window.start_age {
                None => pipeline::progress_bar(&opened.engine, since, opened.dialect, ctx.quiet)?,
                Some(_) => Progress::hidden(),
            };
            (plan, Some(horizon), progress)
        }
        _ => {
            let plan = export::read_plan(ctx, args, &opened, since, false)?;
            let progress =
                pipeline::progress_bar(&opened.engine, since, opened.dialect, ctx.quiet)?;
            (plan, None, progress)
        }
    };
    let version = horizon.as_ref().map(|h| h.horizon as i64);
    let record = Record::create(&own)?;
    let written = (|| {
        let sink = TableSink::create(
            &table,
            record.data_folder(&table),
            &encoding,
            version,
            Some("timestamp"),
        )?;
        let sinks: Vec<Box<dyn Sink<_>>> = vec![Box::new(sink)];
        let spool = own.join("export");
        let (rows, files) =
            pipeline::stream(&opened.engine, &plan, &schema, sinks, &spool, &progress)?;
        export::end(&opened)?;
        Ok::<_, anyhow::Error>((rows, files.concat()))
    })();
    let (rows, files) = match written {
        Ok(written) => written,
        Err(e) => {
            record.abandon(&table);
            return Err(e);
        }
    };
    // Nothing new: no snapshot (the cursor stays, and the next window starts where it did).
    if files.is_empty() {
        record.abandon(&table);
        progress.finish(0);
        return Ok(Exported {
            rows: 0,
            paths: vec![PathBuf::from(format!(
                "{} (nothing to add)",
                output.shown()
            ))],
        });
    }
    let summary = summary(since, read, horizon.as_ref())?;
    let snapshot =
        commit::commit_run(catalog.as_ref(), &table, base, record, files, rows, summary)?;
    progress.finish(rows);
    Ok(Exported {
        rows,
        paths: vec![PathBuf::from(format!(
            "{} (snapshot {snapshot})",
            output.shown()
        ))],
    })
}

/// The table's data files are Parquet: flags about files are refused rather than ignored.
fn encoding(args: &ExportArgs) -> Result<Encoding, UsageError> {
    data_encoding(
        &args.output,
        &[
            (args.keep.is_some() || args.keep_for.is_some(), "--keep"),
            (args.state.is_some(), "--state"),
            (args.write_empty, "--write-empty"),
            (args.reset_state, "--reset-state"),
        ],
    )
}

/// How a table's data files are written: Parquet, `--compression` their codec (zstd unless
/// told). `--format` other than one of csv (the default) or parquet, `--mode`, and the `others`
/// flags given are about files, and refused rather than ignored.
pub fn data_encoding(
    output: &OutputArgs,
    others: &[(bool, &'static str)],
) -> Result<Encoding, UsageError> {
    let formats: Vec<&str> = output.format.0.iter().map(|f| f.name).collect();
    let refused = [
        (formats != ["csv"] && formats != ["parquet"], "--format"),
        (output.mode.is_some(), "--mode"),
    ];
    if let Some((_, flag)) = refused.iter().chain(others).find(|(given, _)| *given) {
        return Err(UsageError(format!(
            "{flag} is about files: an Iceberg table's data files are Parquet, kept by the \
             table's snapshots, and its cursor is in them; drop {flag} (--compression sets the \
             files' codec)"
        )));
    }
    let compression = output.compression.unwrap_or(Compression::Zstd);
    Ok(Encoding {
        compression,
        text: crate::sink::compress::TextCompression::None,
    })
}

/// A full export adds every event: into a table that already holds rows, that is a second copy.
fn refuse_rows(table: &Table, output: &TableOutput) -> Result<()> {
    if let Some((rows, snapshot)) = rows_in(table) {
        bail!(UsageError(format!(
            "table {} already holds {} (snapshot {snapshot}): a full export would add every \
             event again, and replacing a table's rows in one commit is not supported yet; \
             export to a new table name",
            output.shown(),
            holds(rows)
        )));
    }
    Ok(())
}

/// The cursor of incremental runs: the horizon and source in the summary of the newest snapshot
/// that has one, walking back from the current snapshot (other writers' snapshots, such as a
/// compaction's, may follow it). `None` for an empty table; a table with rows but no cursor was
/// not written by incremental runs and is refused. Summaries are read back, so a value that
/// does not parse is refused in one line, never guessed at.
fn cursor(table: &Table, output: &TableOutput) -> Result<Option<(u64, Identity)>> {
    let metadata = table.metadata();
    let mut at = metadata.current_snapshot();
    while let Some(snapshot) = at {
        let properties = &snapshot.summary().additional_properties;
        if let Some(horizon) = properties.get(HORIZON) {
            let bad = || {
                UsageError(format!(
                    "table {}: snapshot {} has an unreadable export-events cursor ({HORIZON} \
                     {horizon:?}); was the summary edited? Export to a new table",
                    output.shown(),
                    snapshot.snapshot_id()
                ))
            };
            let horizon: u64 = horizon.parse().map_err(|_| bad())?;
            let identity = properties
                .get(SOURCE)
                .and_then(|s| serde_json::from_str(s).ok())
                .ok_or_else(bad)?;
            return Ok(Some((horizon, identity)));
        }
        at = snapshot
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id));
    }
    if let Some((rows, _)) = rows_in(table) {
        bail!(UsageError(format!(
            "table {} holds {} that --incremental runs did not write (no cursor in its \
             snapshots): give the incremental runs a table of their own, such as {}_versions",
            output.shown(),
            holds(rows),
            output.shown()
        )));
    }
    Ok(None)
}

/// The cursor belongs to this database and `events` table.
fn check_source(cursor: &Identity, now: &Identity, output: &TableOutput) -> Result<()> {
    if cursor == now {
        return Ok(());
    }
    bail!(UsageError(format!(
        "table {}'s cursor belongs to database {} (OID {}, events table OID {}, server {}), not \
         this one ({}, OID {}, events table OID {}, server {}): give this database's runs a \
         table of their own",
        output.shown(),
        cursor.database,
        cursor.database_oid,
        cursor.events_oid,
        cursor.system_identifier,
        now.database,
        now.database_oid,
        now.events_oid,
        now.system_identifier
    )))
}

/// What the snapshot's summary says about the run, beside Iceberg's own counts.
fn summary(
    since: Option<chrono::DateTime<chrono::Utc>>,
    read: Option<(Identity, String)>,
    horizon: Option<&Horizon>,
) -> Result<HashMap<String, String>> {
    let mut summary = HashMap::new();
    if let Some(since) = since {
        summary.insert("export-events.since".to_owned(), since.to_rfc3339());
    }
    if let Some((identity, snapshot)) = read {
        summary.insert(SOURCE.to_owned(), serde_json::to_string(&identity)?);
        summary.insert("export-events.pg-snapshot".to_owned(), snapshot);
    }
    if let Some(horizon) = horizon {
        summary.insert(HORIZON.to_owned(), horizon.horizon.to_string());
    }
    Ok(summary)
}
