//! The resolved run, as ripgrep turns its low-level arguments into high-level ones: each command
//! turns what it parsed into a plan here, once, before anything touches a server or a file, and
//! every refusal that needs no server is made on the way. A plan holds decisions, not flags:
//! where the rows come from and how they are read, where they go and how they are encoded and
//! laid out, what is kept, and which cursor the run moves ([`Run`]). (The change feed's plan is
//! the feed's own, `feed::plan`, and holds an export's plan for its initial export.)
//!
//! [`export::resolve`] builds an export's, [`files`] resolves file outputs; what the runner
//! does with a plan is the runner's.

pub mod export;
pub mod files;

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::retention::Keep;
use crate::sink::dataset::PartitionBy;
use crate::sink::format::{Encoding, Format};
use crate::sink::table::TableOutput;
use crate::source::read::Options;
use crate::source::settings::Source;
use crate::store::{Location, Target, Wait};

/// One run of an export: a whole export, an incremental run, into files or a table.
#[derive(Debug)]
pub struct Run {
    pub source: Source,
    /// `--since`, as an instant.
    pub since: Option<DateTime<Utc>>,
    /// How PostgreSQL may be read.
    pub read: Options,
    pub output: Output,
    pub cursor: Cursor,
    /// When the run started: names its files (`{time}`) and dates what retention deletes.
    pub started: DateTime<Utc>,
    /// Where the demo database is made, when it is the source.
    pub cwd: PathBuf,
    pub quiet: bool,
    pub wait: Wait,
}

/// Where the rows go.
#[derive(Debug)]
pub enum Output {
    Files(Files),
    Table(Table),
}

/// Files: one per format, or a partitioned dataset per format.
#[derive(Debug)]
pub struct Files {
    /// The first format's file is `--output`; the others go beside it.
    pub targets: Vec<(Target, &'static Format)>,
    pub encoding: Encoding,
    pub layout: Layout,
    /// `--output` as a template (`{time}` in its name, in the first target's folder): its
    /// killed runs are recovered, and with `keep` earlier runs deleted.
    pub template: Option<Location>,
    pub keep: Keep,
    /// Each run writes new files (incremental runs): an existing one is refused, and a run that
    /// found nothing writes none unless `write_empty`.
    pub fresh: bool,
    pub write_empty: bool,
}

/// How rows are laid out in files: one file per format, or a partitioned dataset.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub partition_by: Option<PartitionBy>,
    pub max_rows_per_file: u64,
}

/// An Apache Iceberg table.
#[derive(Debug)]
pub struct Table {
    pub table: TableOutput,
    /// Its data files' codec.
    pub encoding: Encoding,
    /// `--partition-by` for a table created now.
    pub partition_by: Option<PartitionBy>,
}

/// What remembers where the last run stopped.
#[derive(Debug)]
pub enum Cursor {
    /// Nothing: a whole export (of the events from `--since`).
    None,
    /// A state file beside the outputs; `reset` forgets it.
    StateFile { state: Target, reset: bool },
    /// The table's snapshot summaries, committed with the rows.
    InTable,
}

impl Cursor {
    /// Whether the run exports what changed since the cursor (an incremental run).
    pub fn incremental(&self) -> bool {
        !matches!(self, Cursor::None)
    }
}
