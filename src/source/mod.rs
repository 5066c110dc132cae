//! Where the rows come from: the settings that name the source ([`settings`]), the embedded
//! DuckDB that attaches it ([`engine`], with the `postgres` extension from [`extension`]), and
//! the SQL that reads it ([`query`]).

pub mod conninfo;
pub mod engine;
pub mod extension;
pub mod identity;
pub mod parallel;
pub mod plan;
pub mod query;
pub mod settings;

use std::path::Path;

use anyhow::Result;

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
}

/// Attaches the source read-only and checks that it has the tables an export reads. The demo
/// must have been made a DuckDB file first (`fixtures::demo`).
pub fn open(source: &Source) -> Result<Opened> {
    let opened = match source {
        Source::Postgres(pg) => Opened {
            engine: Engine::postgres(pg, Access::ReadOnly)?
                .bound_memory()?
                .single_threaded()?,
            dialect: Dialect::Postgres,
            described: format!("the PostgreSQL database (settings from {})", pg.origin),
        },
        Source::DuckDbFile(path) => duckdb_file(path, format!("DuckDB file {}", path.display()))?,
        Source::Demo => anyhow::bail!("the demo database is opened as a DuckDB file"),
    };
    opened.engine.require_tables(
        &["events", "rules"],
        &opened.described,
        opened.dialect == Dialect::Postgres,
    )?;
    Ok(opened)
}

fn duckdb_file(path: &Path, described: String) -> Result<Opened> {
    Ok(Opened {
        engine: Engine::new()?
            .bound_memory()?
            .attach_duckdb(path, Access::ReadOnly)?,
        dialect: Dialect::DuckDb,
        described,
    })
}
