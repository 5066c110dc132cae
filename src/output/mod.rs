//! What a run writes, behind one trait the runner calls in its one order: files (one per
//! format, or partitioned datasets; in any store) or an Apache Iceberg table. An output locks
//! itself, recovers what killed runs left, checks what it can before the source is read,
//! prepares once the source is open, takes the rows, and commits them whole; retention after.
//!
//! A new output kind is a module here implementing [`Output`] and one arm in [`open`].

mod files;
pub mod table;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use crate::model::Zone;
use crate::plan::{self, Run};
use crate::sink::manifest;
use crate::source::identity::Identity;
use crate::store::{RunLock, Wait};

/// An output of a run.
pub trait Output {
    /// One run at a time per output: its locks, taken before anything else.
    fn lock(&self, wait: Wait) -> Result<Vec<RunLock>>;
    /// Makes whole what killed runs left (interrupted commits, temporaries, uploads, a table's
    /// uncommitted data files).
    fn recover(&mut self) -> Result<()>;
    /// What can be checked before the source is read: credentials, files that must not exist.
    fn check(&mut self) -> Result<()>;
    /// Once the source is open and its time zone known: what needs the schema (a table is
    /// created or loaded, and checked).
    fn prepare(&mut self, zone: Zone, incremental: bool) -> Result<()>;
    /// The columns of the rows it takes.
    fn schema(&self) -> SchemaRef;
    /// Whether it takes rows ordered by rule first (a dataset partitioned by rule).
    fn by_rule(&self) -> bool;
    /// Where rows read ahead wait for it (a local path, beside which temporaries go).
    fn spool(&self) -> PathBuf;
    /// What a run writes, named before it is written (what an interrupted run may leave).
    fn names(&self) -> Vec<String>;
    /// The cursor this output keeps itself, if it keeps one: the previous run's horizon and
    /// what it belongs to.
    fn stored_cursor(&self) -> Result<Option<(u64, Identity)>> {
        Ok(None)
    }
    /// Starts writing; `version` is the value of a versioned table's version column.
    fn start(&mut self, version: Option<i64>) -> Result<()>;
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Finishes writing: everything is complete, not yet visible.
    fn finish(&mut self) -> Result<()>;
    /// Makes what was written visible, whole, described by `facts`; returns how the report
    /// names it (nothing when the run wrote nothing).
    fn commit(&mut self, facts: &Facts) -> Result<Vec<String>>;
    /// Deletes earlier runs' outputs that are not to be kept.
    fn retain(&mut self, now: DateTime<Utc>, quiet: bool) -> Result<()>;
}

/// What the commit records of a run.
pub struct Facts {
    pub rows: u64,
    pub since: Option<DateTime<Utc>>,
    /// Where the rows came from.
    pub source: manifest::Source,
    /// PostgreSQL's snapshot the run read (`pg_current_snapshot()`), when it is known.
    pub snapshot: Option<String>,
    /// The source's identity, when it is PostgreSQL.
    pub identity: Option<Identity>,
    /// Summary properties a cursor commits with the rows.
    pub cursor: HashMap<String, String>,
}

/// The output `run` writes.
pub fn open(run: &Run) -> Box<dyn Output + '_> {
    match &run.output {
        plan::Output::Files(files) => Box::new(files::FileSet::new(files)),
        plan::Output::Table(table) => Box::new(table::TableOut::new(table, run.quiet)),
    }
}
