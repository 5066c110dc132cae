//! What every plan is resolved against, read once before any command starts: the working
//! directory, the environment with `./.env` beneath it, the connection flag, the start time,
//! quietness and how to treat another run holding a lock. `--since` and the source are resolved
//! through it the same way for every command; the plans themselves are made in `plan`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};

use crate::error::UsageError;
use crate::since;
use crate::source::settings::{self, Env, PgConnection, Requested, Source};
use crate::store::Wait;

/// What every command knows about its run.
#[derive(Debug)]
pub struct Context {
    pub cwd: PathBuf,
    pub env: Env,
    /// When the run started: anchors `--since 24h` and names incremental files.
    pub started: DateTime<Utc>,
    pub quiet: bool,
    pub wait: Wait,
    database_url: Option<String>,
}

impl Context {
    /// Reads the working directory and the environment (`./.env` included); `database_url` is
    /// `--database-url`, `quiet` and `wait` the flags of that name.
    pub fn new(database_url: Option<String>, quiet: bool, wait: bool) -> Result<Self> {
        let cwd = std::env::current_dir().context("reading the working directory")?;
        let env = Env::load(&cwd)?;
        Ok(Self {
            cwd,
            env,
            started: Utc::now(),
            quiet,
            wait: match wait {
                true => Wait::Yes { quiet },
                false => Wait::No,
            },
            database_url,
        })
    }

    /// The run's UTC time as output templates write it for `{time}` (names sort in run order).
    pub fn stamp(&self) -> String {
        self.started
            .format(crate::template::STAMP_FORMAT)
            .to_string()
    }

    /// `--since`, as an instant.
    pub fn since(&self, text: Option<&str>) -> Result<Option<DateTime<Utc>>, UsageError> {
        text.map(|text| since::parse(text, self.started))
            .transpose()
    }

    /// The export's source: `--duckdb`, `--demo`, or PostgreSQL from the flag or environment.
    pub fn source(&self, duckdb: Option<&Path>, demo: bool) -> Result<Source, UsageError> {
        let requested = Requested {
            database_url: self.database_url.as_deref(),
            duckdb,
            demo,
        };
        settings::resolve(requested, &self.env)
    }

    /// PostgreSQL, from the flag or environment.
    pub fn postgres(&self) -> Result<PgConnection, UsageError> {
        settings::resolve_postgres(self.database_url.as_deref(), &self.env)
    }

    /// PostgreSQL named by `--database-url` itself, never by the environment (for commands that
    /// create tables).
    pub fn explicit_postgres(&self) -> Option<Result<PgConnection, UsageError>> {
        let url = self.database_url.as_deref()?;
        Some(PgConnection::new(url, "--database-url"))
    }
}
