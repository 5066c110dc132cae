//! A run's read of its source: one REPEATABLE READ transaction in PostgreSQL (in a snapshot
//! another session exported, when given: the initial export of a change feed), the identity of
//! what it reads and the snapshot it saw; and which plan reads the rows. A DuckDB file is read
//! as it is.

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};

use super::engine::{literal, CATALOG};
use super::identity::{self, Identity};
use super::plan::{self, Join, Plan, Read};
use super::query::{self, Dialect, Window};
use super::Opened;
use crate::error::UsageError;

/// What a read of PostgreSQL is: its source's identity and the snapshot it saw
/// (`pg_current_snapshot()`).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub identity: Identity,
    pub text: String,
}

/// How PostgreSQL may be read: `--jobs`, `--read`, `--memory`.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub jobs: usize,
    pub read: Read,
    pub memory: u64,
}

/// Which rows a run reads, and in what order.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    pub since: Option<DateTime<Utc>>,
    /// An incremental run's window of transactions; `None` for every event.
    pub window: Option<&'a Window>,
    /// Ordered by rule first, with the rule's id last (a dataset partitioned by rule).
    pub by_rule: bool,
}

/// Refuses an export of events without a timestamp, before anything is read or written: the
/// export writes each event's time, orders and partitions by it (the Hub's own command fails on
/// such a row as well). Asked only of a Hub whose catalog lets the column be NULL, and not with
/// `--since`, which leaves them out (an index probe, not a scan, where the column is indexed).
pub fn refuse_null_timestamps(opened: &Opened, since: Option<DateTime<Utc>>) -> Result<()> {
    if !opened.nullable_timestamp || since.is_some() {
        return Ok(());
    }
    let count: i64 = opened
        .engine
        .connection()
        .query_row(&query::null_timestamps(opened.dialect), [], |row| {
            row.get(0)
        })
        .context("counting the events without a timestamp")?;
    if count > 0 {
        anyhow::bail!(UsageError(format!(
            "{count} events in {} have no timestamp (events.timestamp allows NULL there): the \
             export writes, orders and partitions events by their time; give them one, or pass \
             --since to leave them out",
            opened.described
        )));
    }
    Ok(())
}

/// Starts the read; `None` for a DuckDB file.
pub fn begin(opened: &Opened, imported: Option<&str>) -> Result<Option<Snapshot>> {
    if opened.dialect != Dialect::Postgres {
        return Ok(None);
    }
    let engine = &opened.engine;
    engine
        .execute("BEGIN TRANSACTION")
        .context("BEGIN TRANSACTION in DuckDB")?;
    if let Some(snapshot) = imported {
        let import = format!("SET TRANSACTION SNAPSHOT '{snapshot}'");
        engine
            .execute(&format!(
                "CALL postgres_execute('{CATALOG}', {})",
                literal(&import)
            ))
            .with_context(|| format!("{import} in PostgreSQL"))?;
    }
    let (identity, text) = identity::read(engine)?;
    Ok(Some(Snapshot { identity, text }))
}

/// Ends the read begun by [`begin`].
pub fn end(opened: &Opened) -> Result<()> {
    match opened.dialect {
        Dialect::Postgres => opened.engine.execute("COMMIT").context("COMMIT in DuckDB"),
        Dialect::DuckDb => Ok(()),
    }
}

/// The plan that reads `rows`: an incremental window or rule order in one ordered query;
/// otherwise, from PostgreSQL, the plan its statistics and `options` choose (said unless
/// quiet).
pub fn plan(opened: &Opened, rows: Rows, options: Options, quiet: bool) -> Result<Plan> {
    let dialect = opened.dialect;
    let plan = match (rows.window, rows.by_rule, dialect) {
        (Some(window), by_rule, _) => {
            Plan::Serial(query::changed_events(window, by_rule), Join::InQuery)
        }
        (None, true, _) => Plan::Serial(query::events_by_rule(rows.since, dialect), Join::InQuery),
        (None, false, Dialect::Postgres) => plan::choose(
            &opened.engine,
            rows.since,
            options.jobs,
            options.read,
            options.memory,
        )?,
        (None, false, Dialect::DuckDb) => {
            Plan::Serial(query::events(rows.since, dialect), Join::InQuery)
        }
    };
    if let (Plan::Windows { .. } | Plan::Scan(_), false) = (&plan, quiet) {
        eprintln!("export-events: reading with {}", plan.describe());
    }
    Ok(plan)
}
