//! Every command-line type in one place; the doc comments are the `--help` text.
//!
//! The default command is the export (the drop-in for Django's `manage.py export_events`);
//! `generate` builds deterministic fixture databases. Parsing only: values are checked by the
//! modules that own them (`since`, `settings`, `sink`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Export the IoT Hub's events (joined to their rules) to CSV, newest first.
///
/// Reads PostgreSQL through an embedded DuckDB, or a DuckDB database file. The CSV is
/// byte-compatible with `python manage.py export_events`; the file appears atomically.
#[derive(Debug, Parser)]
#[command(
    name = "export-events",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub export: ExportArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the rules and events tables and fill them with deterministic synthetic events.
    Generate(GenerateArgs),
    /// Write the inserts, updates and deletes of events (and rule renames) from a logical
    /// replication slot to change files, in commit order, resumable.
    Changes(ChangesArgs),
}

/// The export: the original command's flags plus where the rows come from.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Keep events with timestamp >= WHEN: an ISO 8601 date-time (2026-02-01T00:00:00Z; no
    /// offset means UTC), a date (2026-02-01, midnight UTC) or an age (90m, 24h, 7d).
    #[arg(long, value_name = "WHEN", allow_hyphen_values = true)]
    pub since: Option<String>,

    /// File to write [default: exports/events_export.csv, or .parquet; folder created when
    /// missing]. With --format both, the Parquet file goes beside it with the same stem. With
    /// --incremental, a template where {time} becomes the run's UTC time [default:
    /// exports/events_{time}.csv].
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// What to write: the compatible CSV, typed Parquet, or both from one read of the source.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,

    /// Parquet compression.
    #[arg(long, value_enum, default_value_t = Compression::Zstd)]
    pub compression: Compression,

    #[command(flatten)]
    pub source: SourceArgs,

    /// Write only the events inserted or changed since the last successful --incremental run
    /// (all events, or those from --since, the first time), each change exactly once; a new
    /// file per run. PostgreSQL only.
    #[arg(long)]
    pub incremental: bool,

    /// Where --incremental keeps its cursor [default: exports/.export-events-state.json].
    #[arg(long, value_name = "FILE", requires = "incremental")]
    pub state: Option<PathBuf>,

    /// With --incremental: write a file (header only) even when nothing changed.
    #[arg(long, requires = "incremental")]
    pub write_empty: bool,

    /// With --incremental: forget the state and export everything again.
    #[arg(long, requires = "incremental")]
    pub reset_state: bool,

    /// When another run is writing the same output (or using the same state), wait for it to
    /// finish instead of failing.
    #[arg(long)]
    pub wait: bool,

    /// No progress bar or notices on stderr (the success line and errors still appear).
    #[arg(long, short)]
    pub quiet: bool,
}

/// Output formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Parquet,
    Both,
}

/// Parquet compression codecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    Zstd,
    Snappy,
    Gzip,
    None,
}

/// Where the rows come from; at most one of these. Without any, PostgreSQL settings are read
/// from DATABASE_URL, DB_NAME/DB_USER/DB_PASSWORD/DB_HOST/DB_PORT (environment or ./.env),
/// then libpq's PG* variables.
#[derive(Debug, Args, Default)]
#[group(multiple = false)]
pub struct SourceArgs {
    /// PostgreSQL connection: a postgres:// URL or a libpq "key=value" string.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// Read the rules and events tables from this DuckDB database file instead.
    #[arg(long, value_name = "FILE")]
    pub duckdb: Option<PathBuf>,

    /// Use the demo database (exports/demo.duckdb, generated on first use).
    #[arg(long)]
    pub demo: bool,
}

/// `generate`: fixture databases of any size.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of events (the first 15 are the awkward sample events).
    #[arg(long, value_name = "N")]
    pub rows: u64,

    /// Seed of the pseudo-random values: the same seed gives the same rows.
    #[arg(long, value_name = "S", default_value_t = 42)]
    pub seed: u64,

    /// Number of rules (at least the 10 sample rules).
    #[arg(long, value_name = "R", default_value_t = 300, value_parser = clap::value_parser!(u32).range(10..))]
    pub rules: u32,

    /// Drop and recreate the tables when they exist.
    #[arg(long)]
    pub replace: bool,

    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub target: TargetArgs,
}

/// `changes`: the change feed.
#[derive(Debug, Args)]
pub struct ChangesArgs {
    /// Replication slot to read (also the name of its publication): lower-case letters, digits
    /// and underscores.
    #[arg(long, value_name = "NAME")]
    pub slot: String,

    /// Create the publication and the slot, print the LSN an initial export must follow, and
    /// stop.
    #[arg(long, conflicts_with_all = ["status", "drop_slot"])]
    pub create_slot: bool,

    /// Show how far behind the slot is and how much WAL it keeps, and stop.
    #[arg(long, conflicts_with = "drop_slot")]
    pub status: bool,

    /// Drop the slot and its publication, and stop.
    #[arg(long)]
    pub drop_slot: bool,

    /// Folder of the change files (created when missing).
    #[arg(long, short, value_name = "DIR", default_value = "exports/changes")]
    pub output: PathBuf,

    /// Format of the change files.
    #[arg(long, value_enum, default_value_t = ChangeFormat::Csv)]
    pub format: ChangeFormat,

    /// Changes per file at most (whole transactions: a larger one gets a file of its own).
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_changes: u64,

    /// Keep reading until SIGINT/SIGTERM, writing what arrived every --flush-interval.
    #[arg(long)]
    pub follow: bool,

    /// When another run is reading the same slot, wait for it to finish instead of failing.
    #[arg(long)]
    pub wait: bool,

    /// Seconds between files with --follow.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub flush_interval: u64,

    /// PostgreSQL connection: a postgres:// URL or a libpq "key=value" string.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// No notices on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Formats of change files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChangeFormat {
    Csv,
    Parquet,
}

/// Where `generate` writes: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// PostgreSQL database to fill: a postgres:// URL or a libpq "key=value" string.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// DuckDB database file to fill (created when missing).
    #[arg(long, value_name = "FILE")]
    pub duckdb: Option<PathBuf>,
}
