//! A slot's lifecycle and the SQL that talks to it: create the publication and the slot, check
//! it exists, drop it, show its lag, read its confirmed position; PostgreSQL's errors turned into
//! what to change (a setting, a privilege, a missing slot).

use anyhow::{anyhow, bail, Result};

use super::pgoutput::Lsn;
use crate::error::postgres::class_of_text;
use crate::error::{Class, Failure};
use crate::source::engine::{literal, Engine, CATALOG};
use crate::source::query::in_postgres;
use crate::source::settings::PgConnection;
use crate::store::{scratch, url, Target, DEFAULT_MODE};

/// Retained WAL beyond which `--status` warns.
const WAL_WARNING_BYTES: i64 = 1 << 30;

/// One slot on one server.
pub struct Feed<'a> {
    pub engine: &'a Engine,
    pub pg: &'a PgConnection,
    pub slot: &'a str,
}

impl Feed<'_> {
    /// The publication of both tables, named after the slot, unless it exists. A partitioned
    /// `events` table (partitions by month at scale) publishes its changes through the root,
    /// under the name `events`, not under each partition's: an existing publication is set so.
    pub fn ensure_publication(&self) -> Result<()> {
        let via_root = self.query_one::<i64>(&format!(
            "SELECT coalesce(max(pubviaroot::int), -1) FROM pg_publication WHERE pubname = '{}'",
            self.slot
        ))?;
        match via_root {
            -1 => self.execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE events, rules \
                 WITH (publish_via_partition_root = true)",
                self.slot
            ))?,
            0 => self.execute(&format!(
                "ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
                self.slot
            ))?,
            _ => {}
        }
        Ok(())
    }

    /// Who writes this feed, for ids and markers that must never be taken for another
    /// feed's: the server's system identifier, the database's OID and the slot
    /// (`7712251575486687360-16384-nightly`). LSNs mean something only within one of these.
    pub fn scope(&self) -> Result<String> {
        let server = self.query_one::<String>(
            "SELECT (SELECT system_identifier FROM pg_control_system())::text || '-' || \
             (SELECT oid FROM pg_database WHERE datname = current_database())::text",
        )?;
        Ok(format!("{server}-{}", self.slot))
    }

    /// The slot, created through SQL (no snapshot to take an initial export in); its LSN.
    pub fn create_by_sql(&self) -> Result<Lsn> {
        self.query_one::<String>(&format!(
            "SELECT lsn::text FROM pg_create_logical_replication_slot('{}', 'pgoutput')",
            self.slot
        ))?
        .parse()
    }

    /// Records the slot in `<folder>/<slot>.slot.json`: where it starts and how the initial
    /// export relates to it.
    pub fn record(&self, folder: &Target, lsn: Lsn, initial: &str) -> Result<()> {
        let record = folder.at.join(&format!("{}.slot.json", self.slot));
        let text = serde_json::json!({
            "slot": self.slot,
            "publication": self.slot,
            "created_at_lsn": lsn.to_string(),
            "created_at": chrono::Utc::now().to_rfc3339(),
            "initial_export": initial,
        });
        // Whole, owner-only (the folder's --mode), never through a symlink at its name.
        folder.at(record).replace(format!("{text:#}\n").as_bytes())
    }

    /// The server's WAL position now.
    pub fn current_wal(&self) -> Result<Lsn> {
        self.query_one::<String>("SELECT pg_current_wal_lsn()::text")?
            .parse()
    }

    /// Waits until the server has `lsn` as the slot's confirmed position (the standby status
    /// update is asynchronous), at most `limit`.
    pub fn wait_confirmed(&self, lsn: Lsn, limit: std::time::Duration) -> Result<()> {
        let started = std::time::Instant::now();
        while self.confirmed()? < lsn {
            if started.elapsed() > limit {
                bail!(
                    "the server did not take the confirmation of {lsn} for slot {} within {} s",
                    self.slot,
                    limit.as_secs()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }

    /// Notes locally when `lsn` was confirmed, for `--status` (the server keeps no time).
    pub fn record_confirmed(&self, lsn: Lsn) {
        let note = serde_json::json!({
            "confirmed": lsn.to_string(),
            "at": chrono::Utc::now().to_rfc3339(),
        });
        let note_file = Target::owned(url::local(&self.note_path()), DEFAULT_MODE);
        let _ = note_file.replace(note.to_string().as_bytes());
    }

    fn note_path(&self) -> std::path::PathBuf {
        scratch::state_file(
            &format!("slot {} {}", self.slot, self.pg.redact(self.pg.conninfo())),
            "confirmed",
        )
    }

    /// The slot exists and can still be read: a missing slot, or one the server invalidated
    /// (`wal_status` lost: it removed WAL the slot still needed), ends the run with what to do.
    pub fn require_slot(&self) -> Result<()> {
        let sql = format!(
            "SELECT coalesce(max(coalesce(wal_status, 'unknown')), 'missing') \
             FROM pg_replication_slots WHERE slot_name = '{}'",
            self.slot
        );
        let subject = format!("slot {}", self.slot);
        match self.query_one::<String>(&sql)?.as_str() {
            "missing" => {
                Err(
                    Failure::new(Class::MissingSlot, "no such slot on this server", &subject)
                        .into(),
                )
            }
            "lost" => Err(Failure::new(Class::SlotLost, "wal_status lost", &subject).into()),
            "unreserved" => {
                eprintln!(
                    "warning: slot {} is about to be invalidated (wal_status unreserved: it \
                     keeps more WAL than max_slot_wal_keep_size allows); read it now",
                    self.slot
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Writes a message into the WAL of this database (`pg_logical_emit_message`, not
    /// transactional, not published): the slot's stream then moves past writes to other
    /// tables and databases, and its confirmed position with it, so an idle `events` table
    /// never pins WAL.
    pub fn heartbeat(&self) -> Result<()> {
        self.query_one::<String>(
            "SELECT pg_logical_emit_message(false, 'export-events.heartbeat', '')::text",
        )
        .map(drop)
    }

    pub fn drop(&self) -> Result<()> {
        self.query_one::<String>(&format!(
            "SELECT pg_drop_replication_slot('{}')::text",
            self.slot
        ))?;
        self.execute(&format!("DROP PUBLICATION IF EXISTS {}", self.slot))?;
        println!("Dropped slot {} and its publication", self.slot);
        Ok(())
    }

    /// How far behind the slot is, and how much WAL the server keeps for it.
    pub fn status(&self) -> Result<()> {
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
        let current = self.current_wal()?;
        let since = std::fs::read_to_string(self.note_path())
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc3339(v["at"].as_str()?).ok())
            .map_or_else(
                || "no confirmation from this machine yet".to_owned(),
                |at| {
                    let ago = chrono::Utc::now().signed_duration_since(at);
                    format!("last confirmed {} s ago", ago.num_seconds())
                },
            );
        println!(
            "slot {}: active {active}, confirmed up to {confirmed}, server WAL at {current}, \
             {lag} bytes of changes not yet read, {retained} bytes of WAL retained, {since}",
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

    /// Where the slot's confirmed position is: the start of the next file.
    pub fn confirmed(&self) -> Result<Lsn> {
        self.query_one::<String>(&format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{}'",
            self.slot
        ))?
        .parse()
    }

    /// The single value PostgreSQL's `sql` returns.
    pub fn query_one<T: duckdb::types::FromSql>(&self, sql: &str) -> Result<T> {
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

    /// PostgreSQL's reason (its first line, secrets masked), with what to change when it is a
    /// setting, a privilege or a missing slot.
    pub fn explain(&self, error: &str) -> anyhow::Error {
        let redacted = self.pg.redact(error);
        let first = redacted.lines().next().unwrap_or_default();
        let slot = format!("slot {}", self.slot);
        match class_of_text(&redacted) {
            Some(
                class @ (Class::Prerequisite
                | Class::NotAllowed
                | Class::MissingSlot
                | Class::SlotLost),
            ) => Failure::new(class, first, &slot).into(),
            // Retried by `--follow`: a new session mends them.
            Some(class @ (Class::SessionLost | Class::Unreachable | Class::TooManyConnections)) => {
                Failure::new(class, first, self.pg.origin).into()
            }
            _ => anyhow!("{first}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_say_what_to_change() {
        let pg = PgConnection::new("host=x", "--database-url").unwrap();
        let engine = Engine::new().unwrap();
        let feed = Feed {
            engine: &engine,
            pg: &pg,
            slot: "nightly",
        };
        // PostgreSQL 15's wording for each case.
        let wal = feed.explain("ERROR: logical decoding requires wal_level >= logical");
        assert!(
            wal.to_string()
                .contains("ALTER SYSTEM SET wal_level = logical"),
            "{wal}"
        );
        let role =
            feed.explain("ERROR: must be superuser or replication role to use replication slots");
        assert!(
            role.to_string().contains("ALTER ROLE <role> REPLICATION"),
            "{role}"
        );
        let slot = feed.explain("ERROR: replication slot \"nightly\" does not exist");
        assert!(
            slot.to_string().contains("create it with --create-slot"),
            "{slot}"
        );
        assert_eq!(
            feed.explain("ERROR: other\ndetail").to_string(),
            "ERROR: other"
        );
    }
}
