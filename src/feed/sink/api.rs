//! What a destination of the change feed is: resolved from the command line before anything is
//! opened ([`SinkPlan`]), then open for a feed ([`ChangeSink`]), taking one batch of whole
//! transactions at a time ([`ChangeBatch`]). A batch is delivered (files durable and in place,
//! every message acknowledged, a table's snapshot committed) when `finish` returns, and only
//! then may the slot move.

use std::path::Path;

use anyhow::Result;

use crate::error::UsageError;
use crate::feed::change::Changes;
use crate::feed::pgoutput::Lsn;
use crate::model::Zone;
use crate::sink::format::Compression;
use crate::sink::registry::Formats;
use crate::store::{RunLock, Target, Wait};

/// What the command line says about where the changes go.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `--to`: a server's URL.
    pub to: Option<&'a str>,
    /// `--output`: a folder, an `s3://` prefix or a table.
    pub output: Option<&'a Path>,
    /// `--subject`, `--stream`, `--create-stream` (messaging).
    pub subject: &'a str,
    pub stream: Option<&'a str>,
    pub create_stream: bool,
    /// How files are encoded.
    pub formats: &'a Formats,
    pub compression: Option<Compression>,
    pub mode: Option<u32>,
    /// A table's catalog and warehouse.
    pub catalog: Option<&'a str>,
    pub warehouse: Option<&'a Path>,
    pub cwd: &'a Path,
}

/// A kind of destination, in the registry: which requests it takes and how it resolves one.
pub struct Registration {
    /// An example of what it takes, for messages (`nats://127.0.0.1:4222`).
    pub example: &'static str,
    /// Whether `request` names this kind of destination.
    pub takes: fn(&Request) -> bool,
    /// Taken when no other kind takes the request (the default destination).
    pub fallback: bool,
    pub resolve: fn(&Request) -> Result<Box<dyn SinkPlan>, UsageError>,
}

/// A destination, resolved: nothing is opened yet.
pub trait SinkPlan: std::fmt::Debug {
    /// The folder where `--create-slot` records the slot.
    fn record_folder(&self) -> Target;
    /// Opens it for the feed `scope` (its server, database and slot): a destination that holds
    /// another feed's changes is refused, never shared silently.
    fn open(&self, scope: &str, zone: Zone, quiet: bool) -> Result<Box<dyn ChangeSink + '_>>;
}

/// A destination of the feed, open.
pub trait ChangeSink {
    /// How the final line names it.
    fn shown(&self) -> String;
    /// One run per slot and destination: another could confirm and then see its batch removed
    /// as unconfirmed.
    fn lock(&self, slot: &str, wait: Wait) -> Result<RunLock>;
    /// With the lock held: where this feed's changes the destination holds end (read back:
    /// file names, the last message, the newest snapshot's summary); `None` when it holds none.
    fn end(&self) -> Result<Option<Lsn>>;
    /// With the lock held: removes what runs interrupted before their confirmation left from
    /// `from` on, and reads again where the destination resumes (what it holds is skipped).
    fn prepare(&self, from: Lsn) -> Result<()>;
    /// Starts the batch of the changes from `from`.
    fn batch(&self, from: Lsn) -> Result<Box<dyn ChangeBatch + '_>>;
}

/// A batch being delivered.
pub trait ChangeBatch: Changes {
    /// Of the changes pushed, those the destination holds already (a run killed before its
    /// confirmation read them again), which it skips: the run's total counts the others.
    fn skipped(&self) -> u64;
    /// Delivers the batch as the changes up to `to`; returns where it went (for the log line).
    fn finish(self: Box<Self>, to: Lsn) -> Result<String>;
}
