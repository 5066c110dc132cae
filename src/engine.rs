//! The embedded DuckDB: opens it, loads the `postgres` extension, and attaches the source as the
//! catalog [`CATALOG`], so every query reads `src.events` / `src.rules` whatever the source is.
//!
//! PostgreSQL is attached read-only for exports; connection errors pass through
//! [`PgConnection::redact`] so a password never reaches a message. Result rows leave the engine
//! as a stream of Arrow record batches ([`Engine::for_each_batch`]), fetched lazily: memory does
//! not grow with the number of rows.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use arrow::record_batch::RecordBatch;
use duckdb::{Config, Connection};

use crate::extension;
use crate::settings::PgConnection;

/// The catalog name every source is attached under.
pub const CATALOG: &str = "src";
/// DuckDB's memory during an export (measured: a DuckDB-file export peaks at 164 MB for 1M
/// events and 186 MB for 10M; below ~128 MB a 10M-row sort runs out).
const EXPORT_MEMORY_LIMIT: &str = "128MB";
/// The start of the panic message duckdb-rs raises when fetching a streamed batch fails.
const FETCH_PANIC: &str = "Failed to fetch Arrow record batch";

/// An in-memory DuckDB with the source attached.
pub struct Engine {
    conn: Connection,
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
        Ok(Self { conn })
    }

    /// Caps DuckDB's memory so that sorting a large DuckDB-file source spills to a private
    /// temporary folder instead of growing with the table (PostgreSQL sources stream anyway).
    pub fn bound_memory(self) -> Result<Self> {
        let spill =
            std::env::temp_dir().join(format!("export-events-{}.spill", std::process::id()));
        let sql = format!(
            "SET memory_limit = '{EXPORT_MEMORY_LIMIT}'; SET temp_directory = {}",
            literal(&spill.to_string_lossy())
        );
        self.conn
            .execute_batch(&sql)
            .context("configuring DuckDB's memory")?;
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

    /// A fresh in-memory DuckDB with the postgres extension loaded and PostgreSQL attached as
    /// [`CATALOG`].
    pub fn postgres(pg: &PgConnection, access: Access) -> Result<Self> {
        let verified = extension::default_path().filter(|path| extension::verified(path));
        let engine = match &verified {
            // The same file passed DuckDB's signature check before (see `extension`).
            Some(_) => Self {
                conn: Config::default()
                    .allow_unsigned_extensions()
                    .and_then(Connection::open_in_memory_with_flags)
                    .context("starting the embedded DuckDB")?,
            },
            None => Self::new()?,
        };
        engine.load_postgres_extension(verified.as_deref())?;
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
            literal(pg.conninfo())
        );
        self.conn.execute_batch(&sql).map_err(|e| {
            anyhow!(
                "could not connect to PostgreSQL (settings from {}): {}",
                pg.origin,
                pg.redact(&e.to_string())
            )
        })?;
        Ok(self)
    }

    /// Attaches a DuckDB database file as [`CATALOG`]; read-only access requires the file.
    pub fn attach_duckdb(self, path: &Path, access: Access) -> Result<Self> {
        if access == Access::ReadOnly && !path.is_file() {
            bail!(crate::error::UsageError(format!(
                "DuckDB file {} does not exist: pass an existing file to --duckdb, or use --demo",
                path.display()
            )));
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

    /// The DuckDB connection, for statements that return no rows.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Checks that the attached source has the tables the export reads.
    pub fn require_tables(&self, tables: &[&str], source: &str) -> Result<()> {
        for table in tables {
            if let Some(e) = self.table_error(table) {
                bail!(
                    "table {table} not found in {source} ({}): point export-events at the IoT \
                     Hub's database (the one `manage.py migrate` created)",
                    first_line(&e.to_string())
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
        let mut statement = self
            .conn
            .prepare(sql)
            .context("preparing the export query")?;
        let mut batches = statement
            .stream_arrow([])
            .context("running the export query")?;
        let mut rows = 0u64;
        // duckdb-rs panics when fetching a later batch fails (a dropped connection, say):
        // turn that into an error, and keep its panic message off stderr.
        let _quiet = QuietFetchPanics::install();
        loop {
            let next = panic::catch_unwind(AssertUnwindSafe(|| batches.next()))
                .map_err(|payload| anyhow!(panic_text(payload.as_ref())))
                .context("reading the query result")?;
            let Some(batch) = next else { return Ok(rows) };
            each(&batch)?;
            rows += batch.num_rows() as u64;
        }
    }

    /// Loads the extension file already verified, or else `LOAD postgres` (signature checked,
    /// then recorded), else `INSTALL` then `LOAD`, else an error saying how to install it.
    fn load_postgres_extension(&self, verified: Option<&Path>) -> Result<()> {
        if let Some(path) = verified {
            return self
                .conn
                .execute_batch(&format!("LOAD {}", literal(&path.to_string_lossy())))
                .with_context(|| {
                    format!("loading DuckDB's postgres extension {}", path.display())
                });
        }
        let check = extension::default_path().map(|path| extension::Check::start(&path));
        let Err(load) = self.conn.execute_batch("LOAD postgres") else {
            if let Some(check) = check.filter(|c| self.loaded_from(c.path())) {
                check.passed();
            }
            return Ok(());
        };
        let Err(install) = self.conn.execute_batch("INSTALL postgres; LOAD postgres") else {
            return Ok(());
        };
        match check.map(|c| c.path().to_owned()).filter(|p| p.exists()) {
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

    /// Whether the loaded postgres extension is the file at `path`.
    fn loaded_from(&self, path: &Path) -> bool {
        self.conn
            .query_row(
                "SELECT install_path FROM duckdb_extensions() \
                 WHERE extension_name = 'postgres_scanner' AND loaded",
                [],
                |row| row.get::<_, String>(0),
            )
            .is_ok_and(|installed| Path::new(&installed) == path)
    }
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

/// While alive, the panic hook stays silent for duckdb-rs's fetch panics (reported as errors
/// instead) and prints every other panic as before.
struct QuietFetchPanics;

impl QuietFetchPanics {
    fn install() -> Self {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !payload_text(info.payload()).is_some_and(|t| t.starts_with(FETCH_PANIC)) {
                previous(info);
            }
        }));
        Self
    }
}

impl Drop for QuietFetchPanics {
    fn drop(&mut self) {
        // The default hook again; nothing else in the program installs one.
        drop(panic::take_hook());
    }
}
