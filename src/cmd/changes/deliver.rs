//! Where the feed's batches go: change files in a folder (local or `s3://`), or a JetStream
//! subject. Either way a batch is started at the slot's confirmed position, fed change rows, and
//! finished at the end of its last transaction; it is delivered (files durable and in place,
//! or every message acknowledged) when `finish` returns, and only then may the slot move.

use anyhow::Result;

use super::decode::Changes;
use super::files::{self, ChangeFiles, Value};
use super::nats::{Nats, Publishing};
use super::pgoutput::Lsn;
use crate::cli::ChangesArgs;
use crate::context::Context;
use crate::error::UsageError;
use crate::model::Zone;
use crate::sink::format::Encoding;
use crate::sink::object;
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
}

impl Destination {
    /// `--to nats://...` or the `--output` folder, for the feed `scope` (its server, database
    /// and slot): a subject or folder that holds another feed's changes is refused, never
    /// shared silently.
    pub fn open(ctx: &Context, args: &ChangesArgs, scope: &str, zone: Zone) -> Result<Self> {
        refuse_tables(args)?;
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

    /// The change files' folder of `--output`.
    pub fn folder(ctx: &Context, args: &ChangesArgs) -> Result<Target> {
        refuse_tables(args)?;
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
        }
    }

    /// Removes what runs interrupted before their confirmation left from `from` on (files
    /// only: JetStream drops or skips what it already holds).
    pub fn prepare(&self, from: Lsn) -> Result<()> {
        match self {
            Self::Files { folder, .. } => files::remove_unconfirmed(folder, from),
            Self::Nats(_) => Ok(()),
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
        }
    }
}

/// A batch being delivered.
pub enum Batch<'a> {
    Files(ChangeFiles),
    Nats(Publishing<'a>),
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
        }
    }
}

impl Changes for Batch<'_> {
    fn push(&mut self, row: &[Value]) -> Result<()> {
        match self {
            Batch::Files(f) => f.push(row),
            Batch::Nats(n) => n.push(row),
        }
    }
    fn rows(&self) -> u64 {
        match self {
            Batch::Files(f) => f.rows(),
            Batch::Nats(n) => n.rows(),
        }
    }
}

/// The feed does not go to Iceberg tables yet: their flags are refused, not ignored.
fn refuse_tables(args: &ChangesArgs) -> Result<(), UsageError> {
    let output = &args.output;
    let table = output.output.as_deref().map(|o| o.to_string_lossy());
    if output.catalog.is_some()
        || output.warehouse.is_some()
        || table.is_some_and(|o| o.starts_with(crate::sink::table::SCHEME))
    {
        return Err(UsageError(
            "changes: the change feed goes to files or NATS so far, not to Iceberg tables \
             (tables take exports: export-events --output iceberg:NAMESPACE.TABLE)"
                .into(),
        ));
    }
    Ok(())
}
