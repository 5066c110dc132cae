//! export-events: the IoT Hub's `events` table (joined to `rules`) exported from PostgreSQL,
//! through an embedded DuckDB, to the CSV the Django `export_events` command wrote.
//!
//! The pipeline, one module a step: [`cli`] parses, [`settings`] and [`since`] resolve what the
//! user asked for, [`engine`] opens the source, [`query`] builds the SQL, [`sink`] writes the
//! files atomically, [`progress`] shows how far it got, [`export`] ties them together and reports. [`generate`] makes fixtures.

pub mod cancel;
pub mod changes;
pub mod cli;
pub mod engine;
pub mod error;
pub mod export;
pub mod extension;
pub mod fault;
pub mod generate;
pub mod incremental;
pub mod lock;
pub mod progress;
pub mod query;
pub mod settings;
pub mod since;
pub mod sink;
pub mod state;

/// Runs the command the user asked for.
/// Runs the command the user asked for. Whatever fails after a signal asked the run to stop is
/// reported as the interruption it is.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    let result = match &cli.command {
        Some(cli::Command::Generate(args)) => generate::run(args),
        Some(cli::Command::Changes(args)) => changes::run(args),
        None => export::run(&cli.export),
    };
    result.map_err(|e| match cancel::check() {
        Err(interrupted) => interrupted.into(),
        Ok(()) => e,
    })
}
