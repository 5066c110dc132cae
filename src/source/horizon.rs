//! PostgreSQL's snapshot horizon: the cursor of incremental exports, whether it is kept in a
//! state file (`cursor::state_file`) or in an Iceberg table's snapshot summary (`output::table::summary`).
//!
//! In one REPEATABLE READ transaction, `pg_snapshot_xmin(pg_current_snapshot())` is H: every
//! transaction with an id below H has finished, and every later one has an id of at least H. A
//! run exports the visible rows whose writing transaction (`xmin`) lies in [previous H, this H),
//! so each committed transaction's rows fall into exactly one run. `xmin` is 32 bits and wraps
//! around, so windows are compared as `age(xmin)` against one reference per run, from the 64-bit
//! H; a window wider than ages can tell apart exports every event instead.

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, Utc};

use super::engine::Engine;
use super::query::{in_postgres, Window};

/// The widest window `age()` can tell apart.
const AGE_LIMIT: i64 = i32::MAX as i64;

/// Where a run's snapshot stands among the server's transactions.
pub struct Horizon {
    /// 64-bit id below which every transaction had finished.
    pub horizon: u64,
    /// `age()` of the horizon: ages are relative to horizon + this.
    pub horizon_age: i64,
}

impl Horizon {
    const SQL: &'static str = "SELECT s.horizon::text::bigint AS horizon, \
        age((s.horizon::text::bigint % 4294967296)::text::xid)::bigint AS horizon_age \
        FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon) AS s";

    /// Inside the run's transaction (`source::read::begin`): its horizon.
    pub fn read(engine: &Engine) -> Result<Self> {
        let (horizon, horizon_age) = engine
            .connection()
            .query_row(&in_postgres(Self::SQL), [], |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get(1)?))
            })
            .context("reading PostgreSQL's snapshot horizon")?;
        Ok(Self {
            horizon,
            horizon_age,
        })
    }

    /// The rows of this run: from the previous horizon (or everything) to this one.
    pub fn window(
        &self,
        previous: Option<u64>,
        since: Option<DateTime<Utc>>,
        quiet: bool,
        origin: &str,
    ) -> Result<Window> {
        let reference = self.horizon + self.horizon_age as u64;
        let start_age = match previous {
            None => None,
            Some(previous) if previous > self.horizon => bail!(
                "the state's horizon {previous} is ahead of this server's ({}; settings from \
                 {origin}): was the database restored from a backup? Pass --reset-state to \
                 export everything again",
                self.horizon
            ),
            Some(previous) => {
                let age = (reference - previous) as i64;
                if age >= AGE_LIMIT {
                    if !quiet {
                        eprintln!(
                            "export-events: the last run was over 2 billion transactions ago, \
                             too far to tell its rows apart: exporting every event this time"
                        );
                    }
                    None
                } else {
                    Some(age)
                }
            }
        };
        Ok(Window {
            end_age: self.horizon_age,
            start_age,
            since,
        })
    }
}
