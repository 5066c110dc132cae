//! Where the rows come from: the settings that name the source ([`settings`]), the embedded
//! DuckDB that attaches it ([`engine`], with the `postgres` extension from [`extension`]), a
//! run's read of it ([`read`]: one transaction, its identity and snapshot), and the SQL that
//! reads it ([`query`]), in the plan the export's size calls for ([`plan`]: one ordered query,
//! time windows read at once ([`parallel`]), or a sequential read ([`scan`]) sorted locally
//! ([`distribute`])). A DuckDB-file source sorts within bounded memory, spilling to a folder of
//! the run's own (`store::scratch`).

pub mod conninfo;
pub mod distribute;
pub mod engine;
pub mod extension;
pub mod horizon;
pub mod identity;
pub mod parallel;
pub mod plan;
pub mod query;
pub mod read;
pub mod rules;
pub mod scan;
pub mod settings;

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::model::Zone;
use engine::{Access, Engine};
use query::Dialect;
use settings::Source;

/// An attached source, ready for queries.
pub struct Opened {
    pub engine: Engine,
    /// The SQL dialect that reads it.
    pub dialect: Dialect,
    /// For messages: `the PostgreSQL database (settings from DATABASE_URL)`.
    pub described: String,
    /// How its `events.timestamp` keeps time (Django's `USE_TZ`), from the catalog.
    pub zone: Zone,
    /// Whether the catalog lets `events.timestamp` be NULL (a Hub's later migration).
    pub nullable_timestamp: bool,
}

/// Attaches the source read-only and checks that it has the tables an export reads. The demo
/// must have been made a DuckDB file first (`fixtures::demo`).
pub fn open(source: &Source) -> Result<Opened> {
    let mut opened = match source {
        Source::Postgres(pg) => Opened {
            engine: Engine::postgres(pg, Access::ReadOnly)?
                .bound_memory()?
                .single_threaded()?,
            dialect: Dialect::Postgres,
            described: format!("the PostgreSQL database (settings from {})", pg.origin),
            zone: Zone::Aware,
            nullable_timestamp: false,
        },
        Source::DuckDbFile(path) => duckdb_file(path, format!("DuckDB file {}", path.display()))?,
        Source::Demo => anyhow::bail!("the demo database is opened as a DuckDB file"),
    };
    opened.engine.require_tables(
        &["events", "rules"],
        &opened.described,
        opened.dialect == Dialect::Postgres,
    )?;
    (opened.zone, opened.nullable_timestamp) = timestamp_column(&opened.engine, opened.dialect)?;
    Ok(opened)
}

/// How the source's `events.timestamp` keeps time: its type in the catalog.
pub fn zone(engine: &Engine, dialect: Dialect) -> Result<Zone> {
    timestamp_column(engine, dialect).map(|(zone, _)| zone)
}

/// The source's `events.timestamp` in the catalog: how it keeps time (its type), and whether
/// it may be NULL.
fn timestamp_column(engine: &Engine, dialect: Dialect) -> Result<(Zone, bool)> {
    let sql = match dialect {
        Dialect::Postgres => query::in_postgres(
            "SELECT format_type(atttypid, atttypmod), NOT attnotnull FROM pg_attribute \
             WHERE attrelid = 'events'::regclass AND attname = 'timestamp'",
        ),
        Dialect::DuckDb => format!(
            "SELECT data_type, is_nullable = 'YES' FROM information_schema.columns WHERE \
             table_catalog = '{}' AND table_name = 'events' AND column_name = 'timestamp'",
            engine::CATALOG
        ),
    };
    let (name, nullable): (String, bool) = engine
        .connection()
        .query_row(&sql, [], |row| Ok((row.get(0)?, row.get(1)?)))
        .context("reading the type of events.timestamp")?;
    Ok((Zone::of_type(&name), nullable))
}

fn duckdb_file(path: &Path, described: String) -> Result<Opened> {
    Ok(Opened {
        engine: Engine::new()?
            .bound_memory()?
            .attach_duckdb(path, Access::ReadOnly)?,
        dialect: Dialect::DuckDb,
        described,
        zone: Zone::Aware,
        nullable_timestamp: false,
    })
}
