//! What export-events writes in a table's snapshot summaries, beside Iceberg's own counts, and
//! reads back: the run's source and PostgreSQL snapshot, `--since`, and for incremental runs the
//! cursor (the snapshot horizon), committed with the rows so that no state file can disagree
//! with the table (and, in the same commit, in the table's properties, where it outlives
//! snapshots another engine expires). Summaries are read back, so a value that does not parse
//! is refused in one line, never guessed at.

use std::collections::HashMap;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use iceberg::table::Table;

use crate::error::UsageError;
use crate::sink::table::commit::read_back;
use crate::sink::table::{holds, rows_in};
use crate::source::identity::Identity;

/// The summary properties of an incremental run's snapshot: its horizon, and what it belongs to.
pub const HORIZON: &str = "export-events.horizon";
pub const SOURCE: &str = "export-events.source-id";

/// What the snapshot's summary says about a run, beside Iceberg's own counts.
pub fn of_run(
    since: Option<DateTime<Utc>>,
    identity: Option<&Identity>,
    snapshot: Option<&str>,
) -> Result<HashMap<String, String>> {
    let mut summary = HashMap::new();
    if let Some(since) = since {
        summary.insert("export-events.since".to_owned(), since.to_rfc3339());
    }
    if let (Some(identity), Some(snapshot)) = (identity, snapshot) {
        summary.insert(SOURCE.to_owned(), serde_json::to_string(identity)?);
        summary.insert("export-events.pg-snapshot".to_owned(), snapshot.to_owned());
    }
    Ok(summary)
}

/// The cursor of incremental runs: the horizon and source in the summary of the newest snapshot
/// that has one, walking back from the current snapshot (other writers' snapshots, such as a
/// compaction's, may follow it); when another engine expired every snapshot that had one, the
/// table's properties, which each run's commit sets too. `None` for an empty table; a table
/// with rows but no cursor was not written by incremental runs and is refused.
pub fn cursor(table: &Table, shown: &str) -> Result<Option<(u64, Identity)>> {
    if let Some(found) = read_back(table, |said, place| read_cursor(said, place, shown))? {
        return Ok(Some(found));
    }
    if let Some((rows, _)) = rows_in(table) {
        bail!(UsageError(format!(
            "table {shown} holds {} that --incremental runs did not write (no cursor in its \
             snapshots): give the incremental runs a table of their own, such as {shown}_versions",
            holds(rows),
        )));
    }
    Ok(None)
}

/// The cursor in `properties` (a snapshot's summary, or the table's properties: `place`), if
/// they hold one; one that does not parse is refused.
fn read_cursor(
    properties: &HashMap<String, String>,
    place: &dyn Fn() -> String,
    shown: &str,
) -> Result<Option<(u64, Identity)>> {
    let Some(horizon) = properties.get(HORIZON) else {
        return Ok(None);
    };
    let bad = || {
        UsageError(format!(
            "table {shown}: {} has an unreadable export-events cursor ({HORIZON} {horizon:?}); \
             was it edited? Export to a new table",
            place()
        ))
    };
    let horizon: u64 = horizon.parse().map_err(|_| bad())?;
    let identity = properties
        .get(SOURCE)
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(bad)?;
    Ok(Some((horizon, identity)))
}
