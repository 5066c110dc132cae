//! export-events: the IoT Hub's `events` table (joined to `rules`) exported from PostgreSQL,
//! through an embedded DuckDB, to the CSV the Django `export_events` command wrote, to Parquet,
//! to Iceberg tables, incrementally, or as a change feed.
//!
//! The flow: [`cli`] parses; [`cmd`] turns each command's flags into a [`plan`] (resolved
//! against the [`context`], every refusal that needs no server made there); the [`runner`] runs
//! an export's plan in its one order over an [`output`] and a [`cursor`]: [`source`] reads the
//! rows of the event [`model`], [`sink`] encodes them, and the [`store`] (a local folder or
//! object storage) makes them appear whole. The change feed ([`feed`]) reads a replication slot
//! into a destination of its registry. Around them: [`confine`] (paths read back from files,
//! untrusted), [`cancel`] (signals), [`fault`] (test seams), [`error`] (classified failures, one
//! line and an exit status), [`retention`] and [`template`] (runs named by their time),
//! [`fixtures`] (generated data), [`progress`], [`since`], [`runtime`] (the async clients).

pub mod cancel;
pub mod cli;
pub mod cmd;
pub mod confine;
pub mod context;
pub mod cursor;
pub mod error;
pub mod fault;
pub mod feed;
pub mod fixtures;
pub mod model;
pub mod output;
pub mod plan;
pub mod progress;
pub mod retention;
pub mod runner;
pub mod runtime;
pub mod since;
pub mod sink;
pub mod source;
pub mod store;
pub mod template;

/// Runs the command the user asked for. Whatever fails after a signal asked the run to stop is
/// reported as the interruption it is; once the outputs were put in place, with what failed
/// after that (never as "no output file was changed").
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    source::engine::install_panic_policy();
    cmd::run(&cli).map_err(|e| match cancel::check() {
        Err(interrupted) if cancel::was_committed() => e.context(interrupted),
        Err(interrupted) => interrupted.into(),
        Ok(()) => e,
    })
}
