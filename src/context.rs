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
use crate::sink::compress::TextCompression;
use crate::sink::format::{Compression, Encoding, Format};
use crate::sink::registry;
use crate::sink::target::DEFAULT_MODE;
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

    /// The run's UTC time as output templates write it for `{time}` (names sort in run order).
    pub fn stamp(&self) -> String {
        self.started
            .format(crate::retention::STAMP_FORMAT)
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

    /// The files (or dataset folders) of an export: `--output` (or `default_stem` with the
    /// first format's extension) and, for further formats, files beside it; all with the
    /// permissions of `--mode`.
    pub fn targets(
        &self,
        output: Option<&Path>,
        args: &OutputArgs,
        default_stem: &str,
        encoding: &Encoding,
        dataset: bool,
    ) -> Result<Vec<(Target, &'static Format)>, UsageError> {
        let targets = registry::targets(
            output,
            &args.format,
            default_stem,
            &self.cwd,
            encoding,
            dataset,
        )?;
        let mode = args.mode.unwrap_or(DEFAULT_MODE);
        Ok(targets
            .into_iter()
            .map(|(t, f)| (t.with_mode(mode), f))
            .collect())
    }

    /// How files are encoded: `--compression` for every format (gzip and zstd compress whole
    /// CSV files, snappy is Parquet's only); without it, Parquet's zstd and a CSV compressed
    /// only if `output` ends with `.gz` or `.zst`.
    pub fn encoding(args: &OutputArgs, output: Option<&Path>) -> Result<Encoding, UsageError> {
        let text_formats = args.format.0.iter().any(|f| f.text);
        let Some(compression) = args.compression else {
            let name = output
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Ok(Encoding {
                compression: Compression::Zstd,
                text: TextCompression::of_name(&name),
            });
        };
        let text = match compression {
            Compression::Gzip => TextCompression::Gzip,
            Compression::Zstd => TextCompression::Zstd,
            Compression::None => TextCompression::None,
            Compression::Snappy if text_formats => {
                return Err(UsageError(
                    "--compression snappy is Parquet's only: for CSV use gzip or zstd (or \
                     --format parquet)"
                        .into(),
                ))
            }
            Compression::Snappy => TextCompression::None,
        };
        Ok(Encoding { compression, text })
    }
}
