//! Which database and table an export or a cursor belongs to, and the snapshot a read saw: the
//! server's system identifier (`pg_control_system()`, readable by any role), the database's name
//! and OID and the `events` table's OID (both change when they are recreated).

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::engine::Engine;
use super::query::in_postgres;
use crate::error::UsageError;

/// What an export or a state belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub system_identifier: String,
    pub database: String,
    pub database_oid: u32,
    pub events_oid: u32,
}

impl Identity {
    /// Refuses a cursor that belongs to `self` (`whose`: "state file x") for a run that reads
    /// `now`, saying how to `fix` it.
    pub fn check_same(&self, now: &Identity, whose: &str, fix: &str) -> Result<(), UsageError> {
        if self == now {
            return Ok(());
        }
        Err(UsageError(format!(
            "{whose} belongs to database {} (OID {}, events table OID {}, server {}), not this \
             one ({}, OID {}, events table OID {}, server {}): {fix}",
            self.database,
            self.database_oid,
            self.events_oid,
            self.system_identifier,
            now.database,
            now.database_oid,
            now.events_oid,
            now.system_identifier
        )))
    }

    /// The database, as a manifest names its source.
    pub fn manifest_source(self) -> crate::sink::manifest::Source {
        crate::sink::manifest::Source {
            kind: "postgres".into(),
            system_identifier: Some(self.system_identifier),
            database: Some(self.database),
            database_oid: Some(self.database_oid),
            events_oid: Some(self.events_oid),
            path: None,
        }
    }
}

/// The identity of the attached PostgreSQL database, and the snapshot of the current
/// transaction (`pg_current_snapshot()`): call it inside the transaction that reads.
pub fn read(engine: &Engine) -> Result<(Identity, String)> {
    let sql = in_postgres(
        "SELECT (SELECT system_identifier FROM pg_control_system())::text, \
         current_database()::text, \
         (SELECT oid FROM pg_database WHERE datname = current_database())::bigint, \
         'events'::regclass::oid::bigint, pg_current_snapshot()::text",
    );
    engine
        .connection()
        .query_row(&sql, [], |row| {
            Ok((
                Identity {
                    system_identifier: row.get(0)?,
                    database: row.get(1)?,
                    database_oid: row.get::<_, i64>(2)? as u32,
                    events_oid: row.get::<_, i64>(3)? as u32,
                },
                row.get(4)?,
            ))
        })
        .context("reading which database this is")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_of_another_table_is_refused() {
        let cursor = Identity {
            system_identifier: "7712251575486687360".into(),
            database: "hub".into(),
            database_oid: 16384,
            events_oid: 16390,
        };
        let mut other = cursor.clone();
        assert!(cursor.check_same(&other, "state file s", "fix").is_ok());
        other.events_oid += 1;
        let err = cursor
            .check_same(&other, "state file s", "fix")
            .unwrap_err()
            .0;
        assert!(
            err.contains("state file s belongs to database hub"),
            "{err}"
        );
    }
}
