//! Every command-line type in one place; the doc comments are the `--help` text.
//!
//! The default command is the export (the drop-in for Django's `manage.py export_events`);
//! `changes` follows the change feed, `generate` builds fixture databases. The connection and
//! the run's behaviour ([`GlobalArgs`]: `--database-url`, `--quiet`, `--wait`) are declared once,
//! on the top level, and accepted before or after a subcommand; the output flags
//! ([`OutputArgs`]) are declared once and flattened into each command that writes files.
//! Parsing only: values are checked by the modules that own them.

use std::path::PathBuf;

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::feed::plan::Via;
use crate::fixtures::Shape;
use crate::retention;
use crate::sink::dataset::PartitionBy;
use crate::sink::format::Compression;
use crate::sink::registry::{self, Formats};
use crate::source::plan::Read;

/// Export the IoT Hub's events (joined to their rules) to CSV, newest first.
///
/// Reads PostgreSQL through an embedded DuckDB, or a DuckDB database file. The CSV is
/// byte-compatible with `python manage.py export_events`; the file appears atomically.
#[derive(Debug, Parser)]
#[command(name = "export-events", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub export: ExportArgs,
}

/// The command line of this process; exits with clap's message (status 2) when it is wrong.
pub fn parse() -> Cli {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parses `args` (the program name first). The export's own flags belong before nothing but
/// the export: with a subcommand they are refused rather than silently ignored, while the
/// [`GlobalArgs`] go anywhere.
pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(args)?;
    if let Some((name, _)) = matches.subcommand() {
        let export = ExportArgs::augment_args(clap::Command::new("export"));
        let given: Vec<String> = export
            .get_arguments()
            .filter(|arg| {
                matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine)
            })
            .map(|arg| format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str())))
            .collect();
        if !given.is_empty() {
            return Err(command.error(
                ErrorKind::ArgumentConflict,
                format!(
                    "{} belongs to the export, not to `{name}`: put the options of `{name}` \
                     after its name",
                    given.join(", ")
                ),
            ));
        }
    }
    Cli::from_arg_matches(&matches)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the rules and events tables and fill them with deterministic synthetic events.
    Generate(GenerateArgs),
    /// Write the inserts, updates and deletes of events (and rule renames) from a logical
    /// replication slot to change files, in commit order, resumable.
    Changes(Box<ChangesArgs>),
    /// Check an export against its manifest: every file's size and SHA-256, and (when the
    /// source can be read) how many rows it has now. Exit 0 only if every file matches.
    Verify(VerifyArgs),
}

/// The connection and how the run behaves; every command takes them, before or after its name.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// PostgreSQL connection: a postgres:// URL or a libpq "key=value" string. Without it,
    /// DATABASE_URL, DB_NAME/DB_USER/DB_PASSWORD/DB_HOST/DB_PORT (environment or ./.env), then
    /// libpq's PG* variables.
    #[arg(long, value_name = "URL", global = true)]
    pub database_url: Option<String>,

    /// No progress bar or notices on stderr (the success line and errors still appear).
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// When another run is writing the same output (state file, slot), wait for it to finish
    /// instead of failing.
    #[arg(long, global = true)]
    pub wait: bool,
}

/// Where files go and how they are encoded.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Where to write [export: a file, default exports/events_export.csv (or .parquet), folder
    /// created when missing; --incremental: a template where {time} becomes the run's UTC time,
    /// default exports/events_{time}.csv; changes: a folder, default exports/changes], or an
    /// Apache Iceberg table, iceberg:NAMESPACE.TABLE (with --catalog and --warehouse). With
    /// several formats the first format's file is this one and the others go beside it with the
    /// same stem.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Formats to write from one read of the source: csv (the compatible CSV), parquet (typed),
    /// a comma-separated list of them, or both.
    #[arg(long, value_name = "FORMATS", value_parser = registry::parse, default_value = "csv")]
    pub format: Formats,

    /// Compression: Parquet's codec [default: zstd], and for CSV gzip or zstd of the whole file
    /// (.csv.gz, .csv.zst; also chosen by an --output ending so) [default: none].
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,

    /// Permissions of the files written, in octal [default: 0600, owner only: events can hold
    /// personal data]; folders the tool creates get the matching execute bits.
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub mode: Option<u32>,

    /// With --output iceberg:NAMESPACE.TABLE: the Iceberg catalog that names the table,
    /// sqlite:PATH (a file, created when missing) or a postgres:// URL (Iceberg's SQL catalog,
    /// catalog name "default"), or an http(s):// REST catalog (its secret in
    /// ICEBERG_REST_TOKEN, or ICEBERG_REST_CREDENTIAL as CLIENT_ID:SECRET).
    #[arg(long, value_name = "CATALOG")]
    pub catalog: Option<String>,

    /// With --output iceberg:NAMESPACE.TABLE: where a new table's files go (its metadata and
    /// data files, under NAMESPACE/TABLE): a folder or s3://bucket/prefix. With a REST catalog,
    /// which places tables itself, optional: the name or location of one of its warehouses.
    #[arg(long, value_name = "FOLDER")]
    pub warehouse: Option<PathBuf>,
}

/// `--mode 0640`.
fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "invalid mode {text:?}: expected octal permissions such as 0600 or 0640"
        )),
    }
}

/// The export: the original command's flags plus where the rows come from.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Keep events with timestamp >= WHEN: an ISO 8601 date-time (2026-02-01T00:00:00Z; no
    /// offset means UTC), a date (2026-02-01, midnight UTC) or an age (90m, 24h, 7d).
    #[arg(long, value_name = "WHEN", allow_hyphen_values = true)]
    pub since: Option<String>,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Read the rules and events tables from this DuckDB database file instead of PostgreSQL.
    #[arg(long, value_name = "FILE")]
    pub duckdb: Option<PathBuf>,

    /// Use the demo database (exports/demo.duckdb, generated on first use).
    #[arg(long, conflicts_with = "duckdb")]
    pub demo: bool,

    /// PostgreSQL connections a large export reads with at once (time windows in one snapshot)
    /// [default: the number of cores, at most what the server has free]; 1 reads with one
    /// ordered query.
    #[arg(long, value_name = "N", value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=64), usize::from))]
    pub jobs: Option<usize>,

    /// How PostgreSQL serves a large export: `scan` reads the table sequentially in page ranges
    /// on --jobs connections and sorts the rows here within --memory (spilled to disk beside
    /// the output, in $TMPDIR for s3://, or for a table in the warehouse's .export-events
    /// folder, in ~/.local/state/export-events for an S3 or REST warehouse; a killed run's
    /// spill is removed by the next run); `index` reads in order along the timestamp index;
    /// `auto` picks by cost from the table's statistics.
    #[arg(long, value_enum, value_name = "HOW", default_value_t = Read::Auto)]
    pub read: Read,

    /// What the run may hold in memory while it sorts (256MB, 1GiB, ...); the rest waits on
    /// disk.
    #[arg(long, value_name = "SIZE", default_value = DEFAULT_MEMORY, value_parser = parse_size)]
    pub memory: u64,

    /// Write a partitioned dataset instead of one file: a folder with one subfolder per UTC
    /// day (date=2026-02-01), month (month=2026-02) or rule (rule_id=7), Hive-style.
    #[arg(long, value_enum, value_name = "BY")]
    pub partition_by: Option<PartitionBy>,

    /// With --partition-by: rows per file at most; a larger partition gets part-1, part-2, ...
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..), requires = "partition_by")]
    pub max_rows_per_file: u64,

    /// With an --output template holding {time}: keep the newest N runs' outputs, delete older
    /// ones (only what their manifests list).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: Option<u64>,

    /// With an --output template holding {time}: delete outputs of runs older than this age
    /// (30d, 12h, 2w), except the newest.
    #[arg(long, value_name = "AGE", value_parser = retention::parse_age)]
    pub keep_for: Option<std::time::Duration>,

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

    /// The shape of the data: hub (timestamps follow insertion with jitter, ties and back-dated
    /// events) or ordered (strictly increasing timestamps, long rule names).
    #[arg(long, value_enum, default_value_t = Shape::Hub)]
    pub shape: Shape,

    /// DuckDB database file to fill (created when missing), instead of the PostgreSQL database
    /// of --database-url (one of the two is required: generate never writes to a database
    /// named only by the environment).
    #[arg(long, value_name = "FILE")]
    pub duckdb: Option<PathBuf>,
}

/// `verify`: an export against its manifest.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The manifest (`<output>.manifest.json`), or an Iceberg table (iceberg:NAMESPACE.TABLE,
    /// with --catalog and --warehouse), whose current snapshot is checked.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,

    /// With iceberg:NAMESPACE.TABLE: the table's catalog, as for exports.
    #[arg(long, value_name = "CATALOG")]
    pub catalog: Option<String>,

    /// With iceberg:NAMESPACE.TABLE: the table's warehouse, as for exports.
    #[arg(long, value_name = "FOLDER")]
    pub warehouse: Option<PathBuf>,
}

/// `changes`: the change feed.
#[derive(Debug, Args)]
pub struct ChangesArgs {
    /// Replication slot to read (also the name of its publication): lower-case letters, digits
    /// and underscores.
    #[arg(long, value_name = "NAME")]
    pub slot: String,

    /// Create the publication and the slot (with an exported snapshot, over a replication
    /// connection), print its LSN, and stop.
    #[arg(long, conflicts_with_all = ["status", "drop_slot"])]
    pub create_slot: bool,

    /// With --create-slot: take the initial export to PATH (in the change files' --format, or
    /// into iceberg:NAMESPACE.TABLE of the feed's catalog) inside the slot's snapshot, so that it
    /// plus the feed is the table, with no overlap.
    #[arg(long, value_name = "PATH", requires = "create_slot")]
    pub initial_export: Option<PathBuf>,

    /// Show how far behind the slot is and how much WAL it keeps, and stop.
    #[arg(long, conflicts_with = "drop_slot")]
    pub status: bool,

    /// Drop the slot and its publication, and stop.
    #[arg(long)]
    pub drop_slot: bool,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Changes per file at most (whole transactions: a larger one gets a file of its own).
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_changes: u64,

    /// Keep reading until SIGINT/SIGTERM, writing what arrived every --flush-interval.
    #[arg(long)]
    pub follow: bool,

    /// Seconds between files with --follow.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub flush_interval: u64,

    /// With --follow: how often to write a heartbeat into the database's WAL
    /// (pg_logical_emit_message), so that the slot moves on while events is idle and the rest
    /// of the server writes (30s, 5m; 0 for none).
    #[arg(long, value_name = "INTERVAL", default_value = "30s", value_parser = humantime::parse_duration, requires = "follow")]
    pub heartbeat: std::time::Duration,

    /// With --follow: serve Prometheus metrics (/metrics) and health (/healthz) at this
    /// address, such as 127.0.0.1:9187.
    #[arg(long, value_name = "ADDRESS", requires = "follow")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Publish the changes instead of writing files: to NATS JetStream (nats://host:4222), one
    /// JSON message a change, deduplicated by a Nats-Msg-Id per change; or to Kafka
    /// (kafka://host:9092), the same messages keyed by event id, one transaction per batch.
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,

    /// With --to: the NATS subject, or the Kafka topic (--topic), to publish on.
    #[arg(
        long,
        visible_alias = "topic",
        value_name = "SUBJECT",
        default_value = "iot.events.changes",
        requires = "to"
    )]
    pub subject: String,

    /// With --to and --create-stream: the name of the stream to create [default: the subject in
    /// capitals, dots as underscores].
    #[arg(long, value_name = "NAME", requires = "create_stream")]
    pub stream: Option<String>,

    /// With --to: create the JetStream stream for --subject, or the Kafka topic, when there is
    /// none (otherwise that is an error).
    #[arg(long, requires = "to")]
    pub create_stream: bool,

    /// How to read the slot: stream (the replication protocol) or sql (peeking through SQL,
    /// for servers that refuse replication connections).
    #[arg(long, value_enum, default_value_t = Via::Stream)]
    pub via: Via,
}

/// `--memory` unless given.
pub const DEFAULT_MEMORY: &str = "256MB";

/// A size in bytes: a number (`1.5` too) with an optional unit (`k`/`KB`, `M`/`MB`, `G`/`GB`:
/// powers of 1000; `KiB`, `MiB`, `GiB`: powers of 1024), at least 16 MB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit in {text:?}: use MB or GB, as in 256MB"
            ))
        }
    };
    // A whole number, or a decimal one such as 1.5 (digits and dots only, so Rust's float
    // parser refuses `1.2.3` and `.`; a fraction of a byte rounds).
    let bytes = match number.contains('.') {
        false => number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale)),
        true => number
            .parse::<f64>()
            .ok()
            .map(|n| (n * scale as f64).round())
            .filter(|b| *b < u64::MAX as f64)
            .map(|b| b as u64),
    }
    .ok_or_else(|| format!("{text:?} is not a size: write it as 256MB, 1.5GB or 1GB"))?;
    if bytes < 16_000_000 {
        return Err(format!(
            "{text} is too little to sort in: give at least 16MB"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        try_parse_from(std::iter::once("export-events").chain(args.iter().copied()))
    }

    #[test]
    fn connection_and_quiet_go_before_or_after_the_subcommand() {
        for args in [
            &["--database-url", "x=y", "-q", "changes", "--slot", "s"][..],
            &["changes", "--slot", "s", "--database-url", "x=y", "-q"],
        ] {
            let cli = parse(args).unwrap();
            assert_eq!(cli.global.database_url.as_deref(), Some("x=y"), "{args:?}");
            assert!(cli.global.quiet);
            assert!(matches!(cli.command, Some(Command::Changes(_))));
        }
    }

    #[test]
    fn export_flags_before_a_subcommand_are_refused() {
        let err = parse(&["--since", "1d", "changes", "--slot", "s"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        assert!(
            err.to_string().contains("--since belongs to the export"),
            "{err}"
        );
        let cli = parse(&[
            "changes", "--slot", "s", "--output", "d", "--format", "both",
        ])
        .unwrap();
        let Some(Command::Changes(changes)) = cli.command else {
            panic!("changes")
        };
        assert_eq!(changes.output.format.0.len(), 2);
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_size("256MB"), Ok(256_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size(" 64 mib"), Ok(64 << 20));
        assert!(parse_size("1MB").unwrap_err().contains("at least 16MB"));
        assert!(parse_size("12XB").unwrap_err().contains("unknown unit"));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("0.5GiB"), Ok(1 << 29));
        for bad in ["1.2.3GB", ".GB", "1..5GB", "99999999999999999999.5GB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("99999999999999999999GB").is_err());
        assert!(parse_size("").is_err());
    }
}
