//! `export-events changes`: every insert, update and delete of `events` (and renames of
//! `rules`, which change the `rule` column of past events), in commit order, from a logical
//! replication slot, without Kafka or a JVM.
//!
//! Built on what PostgreSQL has: the `pgoutput` plugin with a publication of the two tables,
//! read with `pg_logical_slot_peek_binary_changes` through DuckDB's `postgres_query`. Each batch
//! of whole transactions becomes one file named by its LSN range ([`files`]); only once the file
//! is durable does `pg_replication_slot_advance` confirm it. A crash before that re-reads the
//! same changes and rewrites the same file: at-least-once from PostgreSQL, exactly once in the
//! files.

mod decode;
mod files;
pub mod pgoutput;
mod slot;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cancel::{self, Mode};
use crate::cli::ChangesArgs;
use crate::context::Context;
use crate::fault;
use crate::lock::RunLock;
use crate::sink::target::DEFAULT_MODE;
use crate::source::engine::{Access, Engine};
use slot::Feed;

/// Where change files go without `--output`.
const DEFAULT_FOLDER: &str = "exports/changes";

/// `export-events changes`.
pub fn run(ctx: &Context, args: &ChangesArgs) -> Result<()> {
    slot::check_slot_name(&args.slot)?;
    let pg = ctx.postgres()?;
    let folder = ctx.cwd.join(
        args.output
            .output
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_FOLDER)),
    );
    let engine = Engine::postgres(&pg, Access::ReadWrite)?.single_threaded()?;
    let feed = Feed {
        engine: &engine,
        pg: &pg,
        slot: &args.slot,
    };
    if args.create_slot {
        return feed.create(&folder);
    }
    feed.require_slot()?;
    if args.drop_slot {
        return feed.drop();
    }
    if args.status {
        return feed.status();
    }
    // With --follow a signal means "finish the file you are on, then stop"; otherwise the run
    // stops at once and its unfinished file is removed.
    cancel::install(if args.follow {
        Mode::Finish
    } else {
        Mode::Cancel
    })?;
    // One run per slot: another one could confirm and then see its file removed as unconfirmed.
    let _lock = RunLock::acquire(
        &folder.join(format!(".{}.lock", args.slot)),
        &format!("slot {}", args.slot),
        ctx.wait,
    )?;
    let mut total = 0;
    loop {
        let started = Instant::now();
        // Read before draining: a stop that comes during a drain gets one more, which holds
        // everything committed before the signal.
        let stopping = cancel::requested();
        total += drain(&feed, &folder, args, ctx.quiet)?;
        if !args.follow || stopping {
            break;
        }
        while started.elapsed() < Duration::from_secs(args.flush_interval) {
            if cancel::requested() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("Wrote {total} changes to {}", folder.display());
    Ok(())
}

/// Reads everything available, a file per batch; returns the number of changes written.
fn drain(feed: &Feed, folder: &Path, args: &ChangesArgs, quiet: bool) -> Result<u64> {
    let encoding = Context::encoding(&args.output, None)?;
    let mut total = 0;
    loop {
        let from = feed.confirmed()?;
        files::remove_unconfirmed(folder, from)?;
        let mut file = files::ChangeFiles::create(
            folder,
            from,
            &args.output.format.0,
            &encoding,
            args.output.mode.unwrap_or(DEFAULT_MODE),
        )?;
        let batch = decode::read(feed, &mut file, args.max_changes)?;
        let Some(to) = batch.end else {
            return Ok(total);
        };
        cancel::check()?;
        let rows = file.rows();
        let written = file.finish(to)?;
        fault::point("changes.written");
        // Only now that the file is durable: from here on PostgreSQL may forget them.
        feed.query_one::<String>(&format!(
            "SELECT pg_replication_slot_advance('{}', '{to}')::text",
            feed.slot
        ))?;
        fault::point("changes.confirmed");
        total += rows;
        if let (Some(path), false) = (written.first(), quiet) {
            eprintln!(
                "export-events: {rows} changes ({from} to {to}) in {}",
                path.display()
            );
        }
        if !batch.full {
            return Ok(total);
        }
    }
}
