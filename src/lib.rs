//! export-events: the IoT Hub's `events` table (joined to `rules`) exported from PostgreSQL,
//! through an embedded DuckDB, to the CSV the Django `export_events` command wrote, to Parquet,
//! incrementally, or as a change feed.
//!
//! The pipeline, one module a step: [`cli`] parses and [`context`] resolves what was asked
//! ([`since`], [`source::settings`]); [`source`] opens the source and builds the query over the
//! event [`model`]; [`pipeline`] streams the rows into [`sink`]s (the format registry, files that
//! appear whole) with [`progress`], and reports. [`cmd`] has one module a command. Around them:
//! [`confine`] (paths read back from files, untrusted), [`cancel`] (signals), [`lock`] (one run per output), [`fault`] (test seams), [`error`] (one
//! line and an exit status), [`fixtures`] (generated data), [`runtime`] (the async clients: object
//! storage, replication, NATS).

pub mod cancel;
pub mod cli;
pub mod cmd;
pub mod confine;
pub mod context;
pub mod error;
pub mod fault;
pub mod fixtures;
pub mod lock;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod retention;
pub mod runtime;
pub mod since;
pub mod sink;
pub mod source;

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
