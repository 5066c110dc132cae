//! Where the feed's batches go: change files in a folder (local or `s3://`), a JetStream
//! subject, or an Iceberg table. Either way a batch is started at the slot's confirmed
//! position, fed change rows, and finished at the end of its last transaction; it is delivered
//! (files durable and in place, every message acknowledged, or the table's snapshot committed)
//! when `finish` returns, and only then may the slot move.

use anyhow::Result;

use super::decode::Changes;
use super::files::{self, ChangeFiles, Value};
use super::nats::{Nats, Publishing};
use super::pgoutput::Lsn;
use super::table::{TableBatch, TableFeed};
use crate::cli::ChangesArgs;
use crate::context::Context;
use crate::error::UsageError;
use crate::model::Zone;
use crate::sink::format::Encoding;
use crate::sink::object;
use crate::sink::table::TableOutput;
use crate::sink::target::{Target, DEFAULT_MODE};

/// Where change files go without `--output`.
const DEFAULT_FOLDER: &str = "exports/changes";

/// A destination of the feed.
pub enum Destination {
    Files {
        folder: Target,
        formats: Vec<&'static crate::sink::format::Format>,
        encoding: Encoding,
        mode: u32,
        /// How the table keeps its timestamp (Django's USE_TZ).
        zone: Zone,
    },
    Nats(Box<Nats>),
    Table(Box<TableFeed>),
}

impl Destination {
    /// `--to nats://...` or the `--output` folder, for the feed `scope` (its server, database
    /// and slot): a subject or folder that holds another feed's changes is refused, never
    /// shared silently.
    pub fn open(ctx: &Context, args: &ChangesArgs, scope: &str, zone: Zone) -> Result<Self> {
        if let Some(table) = table(ctx, args)? {
            return Ok(Self::Table(Box::new(TableFeed::open(
                table, args, scope, zone,
            )?)));
        }
        if let Some(url) = &args.to {
            return Ok(Self::Nats(Box::new(Nats::connect(
                url,
                &args.subject,
                args.stream.as_deref(),
                args.create_stream,
                scope,
                zone,
            )?)));
        }
        let folder = Self::folder(ctx, args)?;
        let mode = args.output.mode.unwrap_or(DEFAULT_MODE);
        files::claim(&folder.clone().with_mode(mode), scope)?;
        Ok(Self::Files {
            folder,
            formats: args.output.format.0.clone(),
            encoding: Context::encoding(&args.output, None)?,
            mode,
            zone,
        })
    }

    /// The change files' folder of `--output` (for a table, the folder export-events keeps
    /// beside it), where `--create-slot` records the slot.
    pub fn folder(ctx: &Context, args: &ChangesArgs) -> Result<Target> {
        if let Some(table) = table(ctx, args)? {
            return Ok(Target::folder(Some(&table.own_folder()), "", &ctx.cwd)?);
        }
        Ok(Target::folder(
            args.output.output.as_deref(),
            DEFAULT_FOLDER,
            &ctx.cwd,
        )?)
    }

    /// The lock of one run per slot and destination.
    pub fn lock_path(&self, slot: &str) -> std::path::PathBuf {
        match self {
            Self::Files { folder, .. } if folder.remote.is_none() => {
                folder.path.join(format!(".{slot}.lock"))
            }
            Self::Files { folder, .. } => {
                object::local_name(&format!("{} {slot}", folder.shown()), "lock")
            }
            Self::Nats(_) => object::local_name(&format!("nats {slot}"), "lock"),
            // The table's lock: one writer at a time, feed or export.
            Self::Table(table) => table.own_folder().join("lock"),
        }
    }

    /// Removes what runs interrupted before their confirmation left from `from` on (files,
    /// and a table's uncommitted data files: JetStream and the table skip what they hold).
    pub fn prepare(&self, from: Lsn) -> Result<()> {
        match self {
            Self::Files { folder, .. } => files::remove_unconfirmed(folder, from),
            Self::Nats(_) => Ok(()),
            Self::Table(table) => table.prepare(),
        }
    }

    /// Starts the batch of the changes from `from`.
    pub fn start(&self, from: Lsn) -> Result<Batch<'_>> {
        Ok(match self {
            Self::Files {
                folder,
                formats,
                encoding,
                mode,
                zone,
            } => Batch::Files(ChangeFiles::create(
                folder, from, formats, encoding, *mode, *zone,
            )?),
            Self::Nats(nats) => Batch::Nats(nats.batch()),
            Self::Table(table) => Batch::Table(Box::new(table.start(from)?)),
        })
    }

    /// How the final line names it.
    pub fn shown(&self, args: &ChangesArgs) -> String {
        match self {
            Self::Files { folder, .. } => folder.shown(),
            Self::Nats(_) => format!(
                "{} ({})",
                args.subject,
                args.to.as_deref().unwrap_or_default()
            ),
            Self::Table(table) => table.shown(),
        }
    }
}

/// A batch being delivered.
pub enum Batch<'a> {
    Files(ChangeFiles),
    Nats(Publishing<'a>),
    Table(Box<TableBatch<'a>>),
}

impl Batch<'_> {
    /// Delivers the batch as the changes up to `to`; returns where it went (for the log line).
    pub fn finish(self, to: Lsn) -> Result<String> {
        match self {
            Batch::Files(files) => Ok(files
                .finish(to)?
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default()),
            Batch::Nats(publishing) => {
                let (published, skipped) = publishing.finish()?;
                Ok(match skipped {
                    0 => format!("{published} messages"),
                    s => format!("{published} messages ({s} already in the stream, skipped)"),
                })
            }
            Batch::Table(table) => table.finish(to),
        }
    }
}

impl Changes for Batch<'_> {
    fn push(&mut self, row: &[Value]) -> Result<()> {
        match self {
            Batch::Files(f) => f.push(row),
            Batch::Nats(n) => n.push(row),
            Batch::Table(t) => t.push(row),
        }
    }
    fn rows(&self) -> u64 {
        match self {
            Batch::Files(f) => f.rows(),
            Batch::Nats(n) => n.rows(),
            Batch::Table(t) => t.rows(),
        }
    }
}

/// The table of `--output iceberg:…`, `None` for other outputs; a table and `--to` at once are
/// refused.
fn table(ctx: &Context, args: &ChangesArgs) -> Result<Option<TableOutput>, UsageError> {
    let output = &args.output;
    let table = TableOutput::resolve(
        output.output.as_deref(),
        output.catalog.as_deref(),
        output.warehouse.as_deref(),
        &ctx.cwd,
    )?;
    if table.is_some() && args.to.is_some() {
        return Err(UsageError(
            "changes: give --to (NATS) or --output iceberg:NAMESPACE.TABLE, not both".into(),
        ));
    }
    Ok(table)
}
