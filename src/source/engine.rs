//! The embedded DuckDB: opens it, loads the `postgres` extension, and attaches the source as the
//! catalog [`CATALOG`], so every query reads `src.events` / `src.rules` whatever the source is.
//!
//! PostgreSQL is attached read-only for exports; connection errors pass through
//! [`PgConnection::redact`] so a password never reaches a message. Result rows leave the engine
//! as a stream of Arrow record batches ([`Engine::for_each_batch`]), fetched lazily: memory does
//! not grow with the number of rows.

use std::mem::ManuallyDrop;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, bail, Context as _, Result};
use arrow::record_batch::RecordBatch;
use duckdb::Connection;

use super::extension;
use super::settings::PgConnection;
use crate::cancel;
use crate::error::postgres::class_of_text;
use crate::error::{Class, Failure};

/// The catalog name every source is attached under.
pub const CATALOG: &str = "src";
/// DuckDB's memory during an export (measured: a DuckDB-file export peaks at 164 MB for 1M
/// events and 186 MB for 10M; below ~128 MB a 10M-row sort runs out).
const EXPORT_MEMORY_LIMIT: &str = "128MB";
/// Server settings for our sessions (unless the connection string sets `options` itself): no
/// JIT compilation, which PostgreSQL chooses for the export query by its cost estimate and
/// which only costs us (compiling takes longer than it saves on a streaming scan).
/// And UTC as the session's time zone: a `timestamp without time zone` column (a Hub with
/// `USE_TZ = False`) is read, and compared with `--since`, as wall-clock time in UTC, whatever
/// the server's default.
const SESSION_OPTIONS: &str = "-c jit=off -c TimeZone=UTC";
/// The start of the panic message duckdb-rs raises when fetching a streamed batch fails.
const FETCH_PANIC: &str = "Failed to fetch Arrow record batch";

/// An in-memory DuckDB with the source attached.
pub struct Engine {
    conn: ManuallyDrop<Connection>,
    /// Set when a query lost its PostgreSQL session mid-stream: the connection is then left
    /// open when the engine is dropped (see [`Drop`] below).
    lost: AtomicBool,
    /// DuckDB's spill folder, made by [`Engine::bound_memory`]: removed after the connection.
    spill: Option<tempfile::TempDir>,
}

impl From<Connection> for Engine {
    /// Another connection to the same DuckDB (from `Connection::try_clone`).
    fn from(conn: Connection) -> Self {
        Self {
            conn: ManuallyDrop::new(conn),
            lost: AtomicBool::new(false),
            spill: None,
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // DuckDB's postgres extension rolls back a transaction whose session the server ended
        // when the connection is closed, and that failure, thrown from a destructor, aborts the
        // process (cf. duckdb/duckdb-postgres#543, cleanup after a terminated connection). The
        // process is about to report the error and exit: leave such a connection as it is.
        if !self.lost.load(Ordering::SeqCst) {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.conn) };
        }
    }
}

/// How a source is attached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

impl Engine {
    /// A fresh in-memory DuckDB with nothing attached.
    pub fn new() -> Result<Self> {
        let conn = Connection::open_in_memory().context("starting the embedded DuckDB")?;
        Ok(Self::from(conn))
    }

    /// Caps DuckDB's memory so that sorting a large DuckDB-file source spills to a private
    /// temporary folder instead of growing with the table (PostgreSQL sources stream anyway).
    /// The folder is made here, owner-only and with a name no one can take in advance: DuckDB
    /// would use one that exists, whoever made it, and make its own readable by all.
    pub fn bound_memory(mut self) -> Result<Self> {
        crate::store::scratch::sweep_dead();
        let spill = crate::store::scratch::duckdb_spill()?;
        let sql = format!(
            "SET memory_limit = '{EXPORT_MEMORY_LIMIT}'; SET temp_directory = {}",
            literal(&spill.path().to_string_lossy())
        );
        self.conn
            .execute_batch(&sql)
            .context("configuring DuckDB's memory")?;
        self.spill = Some(spill);
        Ok(self)
    }

    /// One DuckDB thread, for reading a query PostgreSQL runs whole: its rows come through one
    /// connection anyway, and with more threads DuckDB's streaming result hands batches between
    /// threads under mutexes (perf: two thirds of our CPU time; 12 s of user time for 10M
    /// events, 3.9 s with one thread), CPU that PostgreSQL's scan needs on a small machine.
    pub fn single_threaded(self) -> Result<Self> {
        self.conn
            .execute_batch("SET threads = 1")
            .context("configuring DuckDB's threads")?;
        Ok(self)
    }

    /// A fresh in-memory DuckDB with the postgres extension loaded (its signature checked) and
    /// PostgreSQL attached as [`CATALOG`].
    pub fn postgres(pg: &PgConnection, access: Access) -> Result<Self> {
        let engine = Self::new()?;
        engine.load_postgres_extension()?;
        engine.attach_postgres(pg, access)
    }

    fn attach_postgres(self, pg: &PgConnection, access: Access) -> Result<Self> {
        let read_only = if access == Access::ReadOnly {
            ", READ_ONLY"
        } else {
            ""
        };
        let sql = format!(
            "ATTACH {} AS {CATALOG} (TYPE postgres{read_only})",
            literal(&session_conninfo(pg))
        );
        self.conn
            .execute_batch(&sql)
            .map_err(|e| connect_error(&pg.redact(&e.to_string()), pg.origin))?;
        Ok(self)
    }

    /// Attaches a DuckDB database file as [`CATALOG`]; read-only access requires the file.
    pub fn attach_duckdb(self, path: &Path, access: Access) -> Result<Self> {
        if access == Access::ReadOnly {
            super::settings::require_file(path)?;
        }
        let read_only = if access == Access::ReadOnly {
            " (READ_ONLY)"
        } else {
            ""
        };
        let sql = format!(
            "ATTACH {} AS {CATALOG}{read_only}",
            literal(&path.to_string_lossy())
        );
        self.conn
            .execute_batch(&sql)
            .with_context(|| format!("opening DuckDB file {}", path.display()))?;
        Ok(self)
    }

    /// Leaves the connection open when the engine is dropped: for a transaction that failed,
    /// whose session may be gone (see [`Drop`]).
    pub fn abandon(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    /// The DuckDB connection, for statements that return no rows.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Runs `sql`, statements that return no rows.
    pub fn execute(&self, sql: &str) -> Result<()> {
        Ok(self.conn.execute_batch(sql)?)
    }

    /// Checks that the attached source has the tables the export reads. PostgreSQL is asked
    /// directly (`to_regclass`), without loading DuckDB's view of its catalog, which the
    /// export (all through `postgres_query`) never needs.
    pub fn require_tables(&self, tables: &[&str], source: &str, postgres: bool) -> Result<()> {
        for table in tables {
            let missing = if postgres {
                let sql = format!(
                    "SELECT * FROM postgres_query('{CATALOG}', \
                     'SELECT (to_regclass(''{table}'') IS NULL)::int')"
                );
                (self.count(&sql)? == 1).then(|| "no such relation in the search path".into())
            } else {
                self.table_error(table)
                    .map(|e| first_line(&e.to_string()).to_owned())
            };
            if let Some(why) = missing {
                bail!(
                    "table {table} not found in {source} ({why}): point export-events at the IoT \
                     Hub's database (the one `manage.py migrate` created)"
                );
            }
        }
        Ok(())
    }

    /// Whether the attached source has `table`.
    pub fn has_table(&self, table: &str) -> bool {
        self.table_error(table).is_none()
    }

    /// Why `table` cannot be read from the attached source, if it cannot.
    fn table_error(&self, table: &str) -> Option<duckdb::Error> {
        self.conn
            .prepare(&format!("SELECT * FROM {CATALOG}.{table} LIMIT 0"))
            .err()
    }

    /// The single number `sql` returns (a count).
    pub fn count(&self, sql: &str) -> Result<u64> {
        let n: i64 = self.conn.query_row(sql, [], |row| row.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Runs `sql` and hands each result batch to `each`, in order, as DuckDB
    /// produces them. Returns the number of rows.
    pub fn for_each_batch(
        &self,
        sql: &str,
        mut each: impl FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<u64> {
        // A session ended by the server can show at any step, preparing included (a window's
        // reader prepares while another reads).
        // A failure before the first batch may be a lost session too: the engine is then never
        // rolled back (see `Drop`).
        let lost = |e: duckdb::Error| {
            self.abandon();
            session_error(&e.to_string())
        };
        let mut statement = self
            .conn
            .prepare(sql)
            .map_err(lost)
            .context("preparing the export query")?;
        let mut batches = statement
            .stream_arrow([])
            .map_err(lost)
            .context("running the export query")?;
        let mut rows = 0u64;
        let _watch = cancel::Watch::new(&self.conn);
        let result = loop {
            // duckdb-rs panics when fetching a later batch fails: see `install_panic_policy`.
            let next = match fetching(|| panic::catch_unwind(AssertUnwindSafe(|| batches.next()))) {
                Ok(next) => next,
                Err(payload) => {
                    break Err(session_error(&panic_text(payload.as_ref()))
                        .context("reading the query result"))
                }
            };
            if let Err(interrupted) = cancel::check() {
                break Err(interrupted.into());
            }
            let Some(batch) = next else { break Ok(rows) };
            if let Err(e) = each(&batch) {
                break Err(e);
            }
            crate::fault::point("stream.batch");
            rows += batch.num_rows() as u64;
        };
        if result.is_err() {
            // A query that stopped half-way may have lost its session: closing it (and the
            // connection) would make DuckDB roll back on a dead session, which aborts the
            // process (see `Drop`). The run ends with this error; leave them as they are.
            self.abandon();
            std::mem::forget(statement);
        }
        result
    }

    /// `LOAD postgres` (DuckDB checks its signature), else `INSTALL` then `LOAD`, else an
    /// error saying how to install it.
    fn load_postgres_extension(&self) -> Result<()> {
        let Err(load) = self.conn.execute_batch("LOAD postgres") else {
            return Ok(());
        };
        let Err(install) = self.conn.execute_batch("INSTALL postgres; LOAD postgres") else {
            return Ok(());
        };
        match extension::default_path().filter(|p| p.exists()) {
            Some(path) => bail!(
                "DuckDB's postgres extension {} could not be loaded ({}): reinstall it: {}",
                path.display(),
                first_line(&load.to_string()),
                extension::install_hint()
            ),
            None => bail!(
                "DuckDB's postgres extension is not installed and could not be downloaded ({}): {}",
                first_line(&install.to_string()),
                extension::install_hint()
            ),
        }
    }
}

/// Why PostgreSQL could not be reached, without the connection string DuckDB echoes (it may
/// hold a password; `redacted` is masked anyway), classified, with what to check.
fn connect_error(redacted: &str, origin: &str) -> anyhow::Error {
    // DuckDB: `IO Error: Unable to connect to Postgres at "<conninfo>": <libpq's reason>`.
    let reason = match redacted.split_once(" at \"") {
        Some((_, rest)) => rest.split_once("\": ").map_or(rest, |(_, reason)| reason),
        None => redacted,
    };
    let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    let class = match class_of_text(&reason) {
        Some(class @ (Class::AuthFailed | Class::Tls)) => class,
        _ => Class::Unreachable,
    };
    let reason = reason
        .strip_prefix("connection to server at ")
        .and_then(|r| r.split_once(" failed: "))
        .map_or(reason.as_str(), |(_, why)| why)
        .trim_start_matches("FATAL: ")
        .to_owned();
    anyhow::Error::new(Failure::new(class, &reason, origin)).context(format!(
        "could not connect to PostgreSQL (settings from {origin})"
    ))
}

/// A failure while rows stream, classified: the server ending the session, or having no
/// connection left, are told by their class (the line says so plainly); anything else is
/// DuckDB's text.
pub(crate) fn session_error(text: &str) -> anyhow::Error {
    match class_of_text(text) {
        Some(class @ (Class::SessionLost | Class::TooManyConnections)) => {
            Failure::new(class, first_line(text), "").into()
        }
        _ => anyhow!("{text}"),
    }
}

/// The connection string with [`SESSION_OPTIONS`], unless the user sets server options
/// themselves (`options` in the string, or `PGOPTIONS`, which libpq would otherwise override).
fn session_conninfo(pg: &PgConnection) -> String {
    if std::env::var_os("PGOPTIONS").is_some_and(|o| !o.is_empty()) {
        return pg.conninfo().to_owned();
    }
    pg.conninfo_with_options(SESSION_OPTIONS)
}

/// A SQL string literal: `'` doubled. For connection strings and paths, never for user values
/// that belong in a query.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// The message of a panic, when it has one.
fn payload_text(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload_text(payload).unwrap_or("the query failed");
    text.strip_prefix(FETCH_PANIC)
        .map_or(text, |rest| rest.trim_start_matches(": "))
        .to_owned()
}

thread_local! {
    /// Set while this thread fetches a streamed batch, the one place a panic is expected.
    static FETCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `fetch` (a fetch of a streamed batch) with [`FETCHING`] set.
fn fetching<T>(fetch: impl FnOnce() -> T) -> T {
    FETCHING.with(|f| f.set(true));
    let fetched = fetch();
    FETCHING.with(|f| f.set(false));
    fetched
}

/// duckdb-rs panics when fetching a streamed batch fails (a dropped connection, say) instead of
/// returning an error (<https://github.com/duckdb/duckdb-rs/pull/664> changes that).
/// [`Engine::for_each_batch`] catches that panic and reports it as an error; this hook, installed
/// once at start, keeps the message of a panic raised while fetching off stderr and hands every
/// other panic to the previous hook.
pub fn install_panic_policy() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !FETCHING.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_drop_the_connection_string_and_say_what_to_check() {
        let duckdb = "IO Error: Unable to connect to Postgres at \"host=db password=********\": \
                      connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password \
                      authentication failed for user \"hub\"";
        assert_eq!(
            crate::error::one_line(&connect_error(duckdb, "DATABASE_URL")),
            "could not connect to PostgreSQL (settings from DATABASE_URL): password \
             authentication failed for user \"hub\"; check the user and password of DATABASE_URL"
        );
        let refused = crate::error::one_line(&connect_error(
            "IO Error: Unable to connect to Postgres at \"\": \
            connection to server at \"127.0.0.1\", port 1 failed: Connection refused",
            "PG*",
        ));
        assert!(
            refused.ends_with(
                "Connection refused; check the host, port and database of \
            PG*, and that the server is up"
            ),
            "{refused}"
        );
    }

    #[test]
    fn a_terminated_session_is_named() {
        let text = session_error(
            "IO Error: FATAL: terminating connection due to administrator command\nmore",
        )
        .to_string();
        assert!(
            text.starts_with("the PostgreSQL server closed the connection"),
            "{text}"
        );
        assert!(!text.contains("more"));
        let tls = session_error(
            "IO Error: Unable to read binary COPY data from Postgres: SSL error: unexpected eof \
             while reading",
        )
        .to_string();
        assert!(
            tls.starts_with("the PostgreSQL server closed the connection"),
            "{tls}"
        );
        assert_eq!(
            session_error("Conversion Error: x").to_string(),
            "Conversion Error: x"
        );
    }
}
