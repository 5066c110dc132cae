//! `export-events changes`: every insert, update and delete of `events` (and renames of
//! `rules`, which change the `rule` column of past events), in commit order, from a logical
//! replication slot, without Kafka or a JVM.
//!
//! Built on what PostgreSQL has: the `pgoutput` plugin with a publication of the two tables. The
//! slot is read over the streaming replication protocol ([`stream`], [`follow`]); `--via sql`
//! keeps the older path, `pg_logical_slot_peek_binary_changes` through DuckDB. Each batch of
//! whole transactions is delivered ([`deliver`]: a file named by its LSN range, messages
//! acknowledged by NATS JetStream, or a snapshot of an Iceberg table, [`table`]), and only then
//! is its end confirmed. A crash before that re-reads the same changes: at-least-once from
//! PostgreSQL, exactly once in the files, the stream and the table. `--create-slot
//! --initial-export PATH` creates the slot with an exported snapshot and takes the initial
//! export inside it, so export plus feed is the table with no overlap.

mod decode;
mod deliver;
mod files;
mod follow;
mod nats;
pub mod pgoutput;
mod rows;
mod slot;
mod stream;
mod table;

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cancel::{self, Mode};
use crate::cli::{ChangesArgs, ExportArgs, OutputArgs, Via};
use crate::context::Context;
use crate::fault;
use crate::lock::RunLock;
use crate::source::engine::{Access, Engine};
use crate::source::plan::Read;
use deliver::Destination;
use slot::Feed;

/// `export-events changes`.
pub fn run(ctx: &Context, args: &ChangesArgs) -> Result<()> {
    slot::check_slot_name(&args.slot)?;
    let pg = ctx.postgres()?;
    let engine = Engine::postgres(&pg, Access::ReadWrite)?.single_threaded()?;
    let feed = Feed {
        engine: &engine,
        pg: &pg,
        slot: &args.slot,
    };
    if args.create_slot {
        return create(ctx, &feed, args);
    }
    feed.require_slot()?;
    if args.drop_slot {
        return feed.drop();
    }
    if args.status {
        return feed.status();
    }
    // With --follow a signal means "finish the batch you are on, then stop"; otherwise the run
    // stops at once and its unfinished batch is dropped.
    cancel::install(if args.follow {
        Mode::Finish
    } else {
        Mode::Cancel
    })?;
    let zone = crate::source::zone(&engine, crate::source::query::Dialect::Postgres)?;
    let dest = Destination::open(ctx, args, &feed.scope()?, zone)?;
    // One run per slot: another one could confirm and then see its file removed as unconfirmed.
    let _lock = RunLock::acquire(
        &dest.lock_path(&args.slot),
        &format!("slot {}", args.slot),
        ctx.wait,
    )?;
    let total = match args.via {
        Via::Stream => follow::run(&feed, &dest, args, ctx.quiet)?,
        Via::Sql => by_sql(&feed, &dest, args, ctx.quiet)?,
    };
    println!("Wrote {total} changes to {}", dest.shown(args));
    Ok(())
}

/// `--create-slot`: the publication, then the slot. With a replication connection the slot is
/// created with an exported snapshot and `--initial-export` is taken inside it (exact: no
/// change is both in the export and in the feed); where that connection is refused, the slot is
/// created through SQL and the export follows it (changes made meanwhile are in both, and replay
/// the same).
fn create(ctx: &Context, feed: &Feed, args: &ChangesArgs) -> Result<()> {
    feed.ensure_publication()?;
    let folder = Destination::folder(ctx, args)?;
    let export = |snapshot: Option<&str>| -> Result<Option<String>> {
        let Some(path) = &args.initial_export else {
            return Ok(None);
        };
        let export = initial_export_args(path, &args.output);
        let done = crate::cmd::export::run_in(ctx, &export, snapshot)?;
        Ok(Some(done.success_line()))
    };
    match stream::create_with_snapshot(feed.pg, feed.slot) {
        Ok(created) => {
            let line = export(Some(&created.snapshot))?;
            let lsn = created.lsn;
            drop(created);
            feed.record(&folder, lsn, "taken in the slot's exported snapshot")?;
            println!(
                "Created slot {} at LSN {lsn} with an exported snapshot (replication protocol)",
                feed.slot
            );
            match line {
                Some(line) => println!(
                    "{line}, taken in the slot's snapshot: the feed holds exactly the changes \
                     after it"
                ),
                None => println!(
                    "No --initial-export: take one now; changes from the slot's start may be \
                     in both, and replay the same"
                ),
            }
        }
        Err(e) if crate::error::one_line(&e).contains("already exists") => {
            anyhow::bail!(
                "slot {} already exists on this server: read it, or drop it first (--drop-slot)",
                feed.slot
            )
        }
        Err(e) => {
            if !ctx.quiet {
                eprintln!(
                    "export-events: no replication connection ({}); creating the slot through \
                     SQL instead, without a snapshot",
                    crate::error::one_line(&e)
                );
            }
            let lsn = feed.create_by_sql()?;
            feed.record(
                &folder,
                lsn,
                "taken after the slot; replay the change files on it",
            )?;
            println!(
                "Created slot {} at LSN {lsn} (SQL): take the initial export now; replaying the \
                 change files on it gives the table (changes from {lsn} on may be in both, and \
                 replay the same)",
                feed.slot
            );
            if let Some(line) = export(None)? {
                println!("{line}, taken after the slot (overlap replays the same)");
            }
        }
    }
    Ok(())
}

/// The export `--initial-export PATH` takes: the change files' formats and encoding, or (for
/// `iceberg:NAMESPACE.TABLE`) the feed's catalog and warehouse.
fn initial_export_args(path: &std::path::Path, output: &OutputArgs) -> ExportArgs {
    let table = path
        .to_string_lossy()
        .starts_with(crate::sink::table::SCHEME);
    ExportArgs {
        since: None,
        output: OutputArgs {
            output: Some(path.to_owned()),
            format: output.format.clone(),
            compression: output.compression,
            mode: output.mode,
            catalog: output.catalog.clone().filter(|_| table),
            warehouse: output.warehouse.clone().filter(|_| table),
        },
        duckdb: None,
        demo: false,
        jobs: None,
        read: Read::Auto,
        memory: crate::cli::parse_size(crate::cli::DEFAULT_MEMORY).expect("a valid default"),
        partition_by: None,
        max_rows_per_file: 1_000_000,
        keep: None,
        keep_for: None,
        incremental: false,
        state: None,
        write_empty: false,
        reset_state: false,
    }
}

/// `--via sql`: reads everything available through SQL, a batch per call; with `--follow`, again
/// every `--flush-interval`.
fn by_sql(feed: &Feed, dest: &Destination, args: &ChangesArgs, quiet: bool) -> Result<u64> {
    let mut total = 0;
    loop {
        let started = Instant::now();
        // Read before draining: a stop that comes during a drain gets one more, which holds
        // everything committed before the signal.
        let stopping = cancel::requested();
        total += drain(feed, dest, args, quiet)?;
        if !args.follow || stopping {
            return Ok(total);
        }
        while started.elapsed() < Duration::from_secs(args.flush_interval) {
            if cancel::requested() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Reads everything available, a batch at a time; returns the number of changes delivered.
fn drain(feed: &Feed, dest: &Destination, args: &ChangesArgs, quiet: bool) -> Result<u64> {
    let mut total = 0;
    loop {
        let from = feed.confirmed()?;
        dest.prepare(from)?;
        let mut batch = dest.start(from)?;
        let read = decode::read(feed, &mut batch, args.max_changes)?;
        let Some(to) = read.end else {
            return Ok(total);
        };
        cancel::check()?;
        let rows = decode::Changes::rows(&batch);
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
