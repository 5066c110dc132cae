//! The change feed's plan: which slot, and what to do with it ([`SlotAction`]): create it (with
//! its publication, and an initial export planned in full here, so that an export that would be
//! refused stops the run before the server has a slot), show it, drop it, or read it into a
//! destination resolved from the registry of change sinks.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::sink::{self, api::Request as SinkRequest, api::SinkPlan};
use crate::context::Context;
use crate::error::UsageError;
use crate::plan::export::{self, Request as ExportRequest};
use crate::plan::Run;
use crate::retention::Keep;
use crate::source::plan::Read;
use crate::source::settings::PgConnection;
use crate::store::{Target, Wait};

/// How `changes` reads the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// The replication protocol.
    Stream,
    /// Peeking through SQL, for servers that refuse replication connections.
    Sql,
}

/// A run of `changes`.
#[derive(Debug)]
pub struct Feed {
    pub pg: PgConnection,
    pub slot: String,
    pub action: SlotAction,
    pub quiet: bool,
    pub wait: Wait,
}

/// What is done with the slot.
#[derive(Debug)]
pub enum SlotAction {
    /// Create the publication and the slot; record it in `record`; with `initial`, take that
    /// export in the slot's snapshot.
    Create {
        record: Target,
        initial: Option<Box<Run>>,
    },
    /// Show how far behind it is.
    Status,
    /// Drop it and its publication.
    Drop,
    /// Deliver its changes.
    Read(Reading),
}

/// How the slot's changes are delivered.
#[derive(Debug)]
pub struct Reading {
    pub sink: Box<dyn SinkPlan>,
    pub via: Via,
    /// With `--follow`, how often a batch is delivered.
    pub follow: Option<Duration>,
    /// Changes per batch at most (whole transactions).
    pub max_changes: u64,
    /// With `--follow`: how often a heartbeat is written into the WAL.
    pub heartbeat: Option<Duration>,
    /// With `--follow`: where the metrics are served.
    pub metrics: Option<SocketAddr>,
}

/// What the command line says about the feed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub slot: &'a str,
    pub create_slot: bool,
    pub initial_export: Option<&'a Path>,
    pub status: bool,
    pub drop_slot: bool,
    pub sink: SinkRequest<'a>,
    pub via: Via,
    pub follow: bool,
    pub flush_interval: u64,
    pub max_changes: u64,
    pub heartbeat: Duration,
    pub metrics: Option<SocketAddr>,
    /// `--memory`'s default, for the initial export.
    pub memory: u64,
}

/// The plan of `request`.
pub fn resolve(ctx: &Context, request: &Request) -> Result<Feed, UsageError> {
    check_slot_name(request.slot)?;
    let pg = ctx.postgres()?;
    let action = match request {
        Request {
            create_slot: true, ..
        } => SlotAction::Create {
            record: sink::resolve(&request.sink)?.record_folder(),
            initial: request
                .initial_export
                .map(|path| initial_export(ctx, request, path).map(Box::new))
                .transpose()?,
        },
        Request { status: true, .. } => SlotAction::Status,
        Request {
            drop_slot: true, ..
        } => SlotAction::Drop,
        _ => SlotAction::Read(Reading {
            sink: sink::resolve(&request.sink)?,
            via: request.via,
            follow: request
                .follow
                .then(|| Duration::from_secs(request.flush_interval)),
            max_changes: request.max_changes,
            heartbeat: (request.follow && !request.heartbeat.is_zero())
                .then_some(request.heartbeat),
            metrics: request.metrics.filter(|_| request.follow),
        }),
    };
    Ok(Feed {
        pg,
        slot: request.slot.to_owned(),
        action,
        quiet: ctx.quiet,
        wait: ctx.wait,
    })
}

/// The export `--initial-export PATH` takes: the change files' formats and encoding, or (for
/// `iceberg:NAMESPACE.TABLE`) the feed's catalog and warehouse.
fn initial_export(ctx: &Context, request: &Request, path: &Path) -> Result<Run, UsageError> {
    let sink = &request.sink;
    let table = path
        .to_string_lossy()
        .starts_with(crate::sink::table::SCHEME);
    export::resolve(
        ctx,
        &ExportRequest {
            since: None,
            output: Some(path),
            formats: sink.formats,
            compression: sink.compression,
            mode: sink.mode,
            catalog: sink.catalog.filter(|_| table),
            warehouse: sink.warehouse.filter(|_| table),
            duckdb: None,
            demo: false,
            jobs: None,
            read: Read::Auto,
            memory: request.memory,
            partition_by: None,
            max_rows_per_file: 1_000_000,
            keep: Keep::default(),
            incremental: None,
        },
    )
}

/// Slot names are what PostgreSQL accepts, and safe to put in SQL.
pub fn check_slot_name(slot: &str) -> Result<(), UsageError> {
    let valid = !slot.is_empty()
        && slot.len() <= 63
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        return Ok(());
    }
    Err(UsageError(format!(
        "--slot {slot}: use 1 to 63 lower-case letters, digits and underscores, such as \
         export_events"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_checked_before_reaching_sql() {
        assert!(check_slot_name("nightly_2").is_ok());
        for bad in [
            "",
            "Nightly",
            "a-b",
            "x'; DROP TABLE events; --",
            &"a".repeat(64),
        ] {
            assert!(check_slot_name(bad).is_err(), "{bad}");
        }
    }
}
