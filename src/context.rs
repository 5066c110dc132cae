//! The resolved run, built once before any command starts (as ripgrep builds its arguments into
//! one plan): the working directory, the environment with `./.env` beneath it, the connection
//! flag, the start time, quietness and how to treat another run holding a lock. Commands read
//! their inputs through it, so `--since`, the source and the targets are resolved the same way
//! everywhere, and everything that can be checked without a database is checked first.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};

use crate::cli::{GlobalArgs, OutputArgs};
use crate::error::UsageError;
use crate::lock::Wait;
use crate::since;
use crate::sink::format::{Encoding, Format};
use crate::sink::registry;
use crate::sink::Target;
use crate::source::settings::{self, Env, PgConnection, Requested, Source};

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
    /// Reads the working directory and the environment (`./.env` included).
    pub fn new(global: &GlobalArgs) -> Result<Self> {
        let cwd = std::env::current_dir().context("reading the working directory")?;
        let env = Env::load(&cwd)?;
        Ok(Self {
            cwd,
            env,
            started: Utc::now(),
            quiet: global.quiet,
            wait: if global.wait {
                Wait::Yes {
                    quiet: global.quiet,
                }
            } else {
                Wait::No
            },
            database_url: global.database_url.clone(),
        })
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

    /// The files of an export: `--output` (or `default_stem` with the first format's extension)
    /// and, for further formats, files beside it.
    pub fn targets(
        &self,
        output: Option<&Path>,
        args: &OutputArgs,
        default_stem: &str,
    ) -> Result<Vec<(Target, &'static Format)>, UsageError> {
        registry::targets(output, &args.format, default_stem, &self.cwd)
    }

    /// How files are encoded.
    pub fn encoding(args: &OutputArgs) -> Encoding {
        Encoding {
            compression: args.compression,
        }
    }
}
