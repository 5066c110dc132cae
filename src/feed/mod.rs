//! `export-events changes`: every insert, update and delete of `events` (and renames of
//! `rules`, which change the `rule` column of past events), in commit order, from a logical
//! replication slot, without Kafka or a JVM.
//!
//! Built on what PostgreSQL has: the `pgoutput` plugin with a publication of the two tables. The
//! slot is read over the streaming replication protocol ([`stream`], [`follow`]); `--via sql`
//! keeps the older path, `pg_logical_slot_peek_binary_changes` through DuckDB ([`sql`]). The
//! messages become changes ([`pgoutput`], [`decode`], [`change`]); each batch of whole
//! transactions is delivered to a destination of the registry ([`sink`]: change files, NATS
//! JetStream, an Iceberg table), and only then is its end confirmed. A crash before that
//! re-reads the same changes: at-least-once from PostgreSQL, exactly once in every destination.
//! `--create-slot --initial-export PATH` creates the slot with an exported snapshot and takes
//! the initial export inside it ([`create`]), so export plus feed is the table with no overlap.

pub mod change;
mod create;
mod decode;
mod follow;
mod metrics;
pub mod pgoutput;
mod pgtime;
pub mod plan;
mod reconnect;
mod rows;
pub mod sink;
mod slot;
mod sql;
mod stream;

use anyhow::Result;

use crate::cancel::{self, Mode};
use crate::error::{class_of, Class, UsageError};
use crate::source::engine::{Access, Engine};
use crate::source::query::Dialect;
use plan::{Feed as Plan, Reading, SlotAction, Via};
use slot::Feed;

/// Runs the feed's plan.
pub fn run(plan: &Plan) -> Result<()> {
    let engine = Engine::postgres(&plan.pg, Access::ReadWrite)?.single_threaded()?;
    let feed = Feed {
        engine: &engine,
        pg: &plan.pg,
        slot: &plan.slot,
    };
    match &plan.action {
        SlotAction::Create { record, initial } => {
            create::run(&feed, record, initial.as_deref(), plan.quiet)
        }
        SlotAction::Status => feed.require_slot().and_then(|()| feed.status()),
        SlotAction::Drop => feed.require_slot().and_then(|()| feed.drop()),
        SlotAction::Read(reading) => {
            feed.require_slot()?;
            read(&feed, reading, plan)
        }
    }
}

/// Delivers the slot's changes to the destination, one run per slot and destination.
fn read(feed: &Feed, reading: &Reading, plan: &Plan) -> Result<()> {
    // With --follow a signal means "finish the batch you are on, then stop"; otherwise the run
    // stops at once and its unfinished batch is dropped.
    cancel::install(match reading.follow {
        Some(_) => Mode::Finish,
        None => Mode::Cancel,
    })?;
    if let Some(addr) = reading.metrics {
        metrics::serve(addr)?;
    }
    let zone = crate::source::zone(feed.engine, Dialect::Postgres)?;
    let dest = reading.sink.open(&feed.scope()?, zone, plan.quiet)?;
    let _lock = dest.lock(feed.slot, plan.wait)?;
    not_ahead_of_the_server(feed, dest.as_ref())?;
    let dest = dest.as_ref();
    let total = match (reading.via, reading.follow) {
        // Each session's failure is checked with its own connection (the first one's may be
        // gone by the time the run ends).
        (Via::Stream, Some(_)) => reconnect::follow(feed, |feed, progress| {
            follow::run(feed, dest, reading, plan.quiet, progress)
                .map_err(|e| what_became_of_the_slot(feed, e))
        }),
        (Via::Stream, None) => {
            let mut progress = reconnect::Progress::default();
            follow::run(feed, dest, reading, plan.quiet, &mut progress)
                .map(|()| progress.delivered)
                .map_err(|e| what_became_of_the_slot(feed, e))
        }
        (Via::Sql, _) => {
            sql::run(feed, dest, reading, plan.quiet).map_err(|e| what_became_of_the_slot(feed, e))
        }
    }
    .inspect_err(|e| metrics::failed(crate::error::class_of(e)))?;
    println!("Wrote {total} changes to {}", dest.shown());
    Ok(())
}

/// A session that failed because the slot was dropped or invalidated under it reports that
/// (PostgreSQL's own error, such as SQLSTATE 55000, says less), not what the session saw.
fn what_became_of_the_slot(feed: &Feed, err: anyhow::Error) -> anyhow::Error {
    match feed.require_slot() {
        Err(gone) if matches!(class_of(&gone), Some(Class::MissingSlot | Class::SlotLost)) => gone,
        _ => err,
    }
}

/// Refuses a destination that holds changes past the server's WAL position, before anything is
/// delivered or removed: the server is not the one that wrote them as it is now (restored from
/// a backup, a standby promoted, a base-backup clone: same system identifier, a slot made anew
/// behind what was delivered), or what the destination says was written by someone else (an
/// edited summary). Taken at its word, the feed would remove delivered changes as unconfirmed,
/// or skip every change up to a position the server has not reached.
fn not_ahead_of_the_server(feed: &Feed, dest: &dyn sink::api::ChangeSink) -> Result<()> {
    let Some(end) = dest.end()? else {
        return Ok(());
    };
    let current = feed.current_wal()?;
    if end > current {
        anyhow::bail!(UsageError(format!(
            "{} holds changes up to {end}, past this server's WAL position {current}: the server \
             was restored from a backup or failed over (or the destination was edited), so its \
             slot {} cannot continue it; nothing was delivered or removed. Give the feed a new \
             destination, starting with --create-slot --initial-export",
            dest.shown(),
            feed.slot
        )));
    }
    Ok(())
}
