//! `--via sql`: the slot peeked through SQL (`pg_logical_slot_peek_binary_changes` through
//! DuckDB) for servers that refuse replication connections: everything available, a batch per
//! call, each delivered before the slot is advanced past it; with `--follow`, again every
//! `--flush-interval`.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::decode;
use super::plan::Reading;
use super::sink::api::ChangeSink;
use super::slot::Feed;
use crate::{cancel, fault};

/// Reads until caught up (with `--follow`, until a signal); returns the changes delivered.
pub fn run(feed: &Feed, dest: &dyn ChangeSink, reading: &Reading, quiet: bool) -> Result<u64> {
    let mut total = 0;
    loop {
        let started = Instant::now();
        // Read before draining: a stop that comes during a drain gets one more, which holds
        // everything committed before the signal.
        let stopping = cancel::requested();
        total += drain(feed, dest, reading.max_changes, quiet)?;
        let Some(every) = reading.follow.filter(|_| !stopping) else {
            return Ok(total);
        };
        while started.elapsed() < every {
            if cancel::requested() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Reads everything available, a batch at a time; returns the number of changes delivered.
fn drain(feed: &Feed, dest: &dyn ChangeSink, max: u64, quiet: bool) -> Result<u64> {
    let mut total = 0;
    loop {
        let from = feed.confirmed()?;
        dest.prepare(from)?;
        let mut batch = dest.batch(from)?;
        let read = decode::read(feed, batch.as_mut(), max)?;
        let Some(to) = read.end else {
            return Ok(total);
        };
        cancel::check()?;
        // What the destination held already is not counted as written.
        let rows = batch.rows() - batch.skipped();
        let place = batch.finish(to)?;
        fault::point("changes.written");
        // Only now that the batch is delivered: from here on PostgreSQL may forget it.
        feed.query_one::<String>(&format!(
            "SELECT pg_replication_slot_advance('{}', '{to}')::text",
            feed.slot
        ))?;
        fault::point("changes.confirmed");
        feed.record_confirmed(to);
        total += rows;
        if rows > 0 && !quiet {
            eprintln!("export-events: {rows} changes ({from} to {to}) in {place}");
        }
        if !read.full {
            return Ok(total);
        }
    }
}
