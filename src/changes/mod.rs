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

mod files;
pub mod pgoutput;
mod stream;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::cancel::{self, Mode};
use crate::cli::ChangesArgs;
use crate::engine::{literal, Access, Engine, CATALOG};
use crate::error::UsageError;
use crate::fault;
use crate::lock::{RunLock, Wait};
use crate::query::in_postgres;
use crate::settings::{self, Env, PgConnection};
use pgoutput::Lsn;

/// Retained WAL beyond which `--status` warns.
const WAL_WARNING_BYTES: i64 = 1 << 30;

/// `export-events changes`.
pub fn run(args: &ChangesArgs) -> Result<()> {
    check_slot_name(&args.slot)?;
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let pg = settings::resolve_postgres(args.database_url.as_deref(), &Env::load(&cwd)?)?;
    let engine = Engine::postgres(&pg, Access::ReadWrite)?.single_threaded()?;
    let feed = Feed {
        engine: &engine,
        pg: &pg,
        slot: &args.slot,
    };
    let folder = cwd.join(&args.output);
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
    let wait = if args.wait {
        Wait::Yes { quiet: args.quiet }
    } else {
        Wait::No
    };
    // One run per slot: another one could confirm and then see its file removed as unconfirmed.
    let _lock = RunLock::acquire(
        &folder.join(format!(".{}.lock", args.slot)),
        &format!("slot {}", args.slot),
        wait,
    )?;
    let mut total = 0;
    loop {
        let started = Instant::now();
        // Read before draining: a stop that comes during a drain gets one more, which holds
        // everything committed before the signal.
        let stopping = cancel::requested();
        total += feed.drain(&folder, args)?;
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

/// Slot names are what PostgreSQL accepts, and safe to put in SQL.
fn check_slot_name(slot: &str) -> Result<(), UsageError> {
    let valid = !slot.is_empty()
        && slot.len() <= 63
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        return Ok(());
    }
    Err(UsageError(format!(
        "--slot {slot}: use 1 to 63 lower-case letters, digits and underscores, such as \
         export_events"
    )))
}

/// One slot on one server.
struct Feed<'a> {
    engine: &'a Engine,
    pg: &'a PgConnection,
    slot: &'a str,
}

impl Feed<'_> {
    /// The publication of both tables, then the slot; prints its LSN and records it in
    /// `<folder>/<slot>.slot.json`.
    fn create(&self, folder: &Path) -> Result<()> {
        let exists = self.query_one::<i64>(&format!(
            "SELECT count(*) FROM pg_publication WHERE pubname = '{}'",
            self.slot
        ))? > 0;
        if !exists {
            self.execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE events, rules",
                self.slot
            ))?;
        }
        let lsn = self.query_one::<String>(&format!(
            "SELECT lsn::text FROM pg_create_logical_replication_slot('{}', 'pgoutput')",
            self.slot
        ))?;
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating folder {}", folder.display()))?;
        let record = folder.join(format!("{}.slot.json", self.slot));
        let text = serde_json::json!({
            "slot": self.slot,
            "publication": self.slot,
            "created_at_lsn": lsn,
            "created_at": chrono::Utc::now().to_rfc3339(),
            "initial_export": "take it after this LSN; replay the change files on it",
        });
        std::fs::write(&record, format!("{text:#}\n"))
            .with_context(|| format!("writing {}", record.display()))?;
        println!(
            "Created slot {} at LSN {lsn}: take the initial export now; replaying the change \
             files on it gives the table (changes from {lsn} on may be in both, and replay the \
             same)",
            self.slot
        );
        Ok(())
    }

    fn require_slot(&self) -> Result<()> {
        let sql = format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'",
            self.slot
        );
        if self.query_one::<i64>(&sql)? == 0 {
            bail!(
                "slot {} does not exist on this server: create it with --create-slot",
                self.slot
            );
        }
        Ok(())
    }

    fn drop(&self) -> Result<()> {
        self.query_one::<String>(&format!(
            "SELECT pg_drop_replication_slot('{}')::text",
            self.slot
        ))?;
        self.execute(&format!("DROP PUBLICATION IF EXISTS {}", self.slot))?;
        println!("Dropped slot {} and its publication", self.slot);
        Ok(())
    }

    /// How far behind the slot is, and how much WAL the server keeps for it.
    fn status(&self) -> Result<()> {
        let sql = format!(
            "SELECT active::text || ' ' || confirmed_flush_lsn::text || ' ' || \
             (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint::text || ' ' || \
             (pg_current_wal_lsn() - restart_lsn)::bigint::text \
             FROM pg_replication_slots WHERE slot_name = '{}'",
            self.slot
        );
        let row = self.query_one::<String>(&sql)?;
        let fields: Vec<&str> = row.split(' ').collect();
        let [active, confirmed, lag, retained] = fields[..] else {
            bail!("unexpected slot status {row:?}");
        };
        let retained: i64 = retained.parse()?;
        println!(
            "slot {}: active {active}, confirmed up to {confirmed}, {lag} bytes of changes \
             not yet read, {retained} bytes of WAL retained",
            self.slot
        );
        if retained > WAL_WARNING_BYTES {
            eprintln!(
                "warning: slot {} keeps {} MB of WAL on the server; read it (export-events \
                 changes --slot {0}) or drop it (--drop-slot) before the disk fills",
                self.slot,
                retained >> 20
            );
        }
        Ok(())
    }

    /// Reads everything available, a file per batch; returns the number of changes written.
    fn drain(&self, folder: &Path, args: &ChangesArgs) -> Result<u64> {
        let mut total = 0;
        loop {
            let from = self.confirmed()?;
            files::remove_unconfirmed(folder, from)?;
            let mut file = files::ChangeFile::create(folder, from, args.format)?;
            let batch = stream::read(self, &mut file, args.max_changes)?;
            let Some(to) = batch.end else {
                return Ok(total);
            };
            cancel::check()?;
            let rows = file.rows();
            let written = file.finish(to)?;
            fault::point("changes.written");
            // Only now that the file is durable: from here on PostgreSQL may forget them.
            self.query_one::<String>(&format!(
                "SELECT pg_replication_slot_advance('{}', '{to}')::text",
                self.slot
            ))?;
            fault::point("changes.confirmed");
            total += rows;
            if let (Some(path), false) = (written, args.quiet) {
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

    /// Where the slot's confirmed position is: the start of the next file.
    fn confirmed(&self) -> Result<Lsn> {
        self.query_one::<String>(&format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{}'",
            self.slot
        ))?
        .parse()
    }

    /// The single value PostgreSQL's `sql` returns.
    fn query_one<T: duckdb::types::FromSql>(&self, sql: &str) -> Result<T> {
        self.engine
            .connection()
            .query_row(&in_postgres(sql), [], |row| row.get(0))
            .map_err(|e| self.explain(&e.to_string()))
    }

    fn execute(&self, sql: &str) -> Result<()> {
        self.engine
            .connection()
            .execute_batch(&format!(
                "CALL postgres_execute('{CATALOG}', {})",
                literal(sql)
            ))
            .map_err(|e| self.explain(&e.to_string()))
    }

    /// PostgreSQL's reason, with what to change when it is a setting or a privilege.
    fn explain(&self, error: &str) -> anyhow::Error {
        anyhow!(explain(&self.pg.redact(error), self.slot))
    }
}

/// PostgreSQL's reason (first line), with what to change when it is a setting, a privilege or
/// a missing slot.
fn explain(error: &str, slot: &str) -> String {
    let first = error.lines().next().unwrap_or(error);
    if error.contains("wal_level") {
        return format!(
            "logical decoding is off on this server ({first}): set wal_level = logical \
             (ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL"
        );
    }
    if error.contains("replication role") || error.contains("REPLICATION attribute") {
        return format!(
            "this role may not use replication slots ({first}): ALTER ROLE <role> \
             REPLICATION, as a superuser"
        );
    }
    if error.contains("does not exist") && error.contains(slot) {
        return format!("slot {slot} does not exist ({first}): create it with --create-slot");
    }
    first.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_say_what_to_change() {
        // PostgreSQL 15's wording for each case.
        let wal = explain("ERROR: logical decoding requires wal_level >= logical", "s");
        assert!(
            wal.contains("ALTER SYSTEM SET wal_level = logical"),
            "{wal}"
        );
        let role = explain(
            "ERROR: must be superuser or replication role to use replication slots",
            "s",
        );
        assert!(role.contains("ALTER ROLE <role> REPLICATION"), "{role}");
        let slot = explain(
            "ERROR: replication slot \"nightly\" does not exist",
            "nightly",
        );
        assert!(slot.contains("create it with --create-slot"), "{slot}");
        assert_eq!(explain("ERROR: other\ndetail", "s"), "ERROR: other");
    }

    #[test]
    fn slot_names_are_checked_before_reaching_sql() {
        assert!(check_slot_name("nightly_2").is_ok());
        for bad in [
            "",
            "Nightly",
            "a-b",
            "x'; DROP TABLE events; --",
            &"a".repeat(64),
        ] {
            assert!(check_slot_name(bad).is_err(), "{bad}");
        }
    }
}
