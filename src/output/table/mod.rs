//! An Apache Iceberg table as an output (`--output iceberg:NAMESPACE.TABLE --catalog …
//! --warehouse …`): the rows become the table's data files, in a folder of the run's own
//! (recorded first), and one catalog commit, onto the snapshot the run started from, makes them
//! a snapshot whose summary names the run, the source and the PostgreSQL snapshot read (and an
//! incremental run's cursor). A run that fails before its commit removes its files; one a
//! SIGKILL stopped is settled by the next run on the warehouse.
//!
//! A whole export goes into a new (or empty) table. Replacing a table's rows in one snapshot is
//! an overwrite commit, which the `iceberg` crate (0.10) does not offer: a table that already
//! holds rows is refused, never given a second copy of them. Incremental runs append the changed
//! events as versions, with a `version` column (the run's snapshot horizon).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::Catalog;

pub mod summary;

use super::{Facts, Output};
use crate::error::UsageError;
use crate::model::{self, Zone};
use crate::plan;
use crate::runtime::runtime;
use crate::sink::table::catalog::{self, Layout};
use crate::sink::table::pending::{self, Record};
use crate::sink::table::writer::TableSink;
use crate::sink::table::{commit, holds, rows_in, TableOutput};
use crate::sink::threaded::Started;
use crate::sink::Sink;
use crate::source::identity::Identity;
use crate::store::{RunLock, Wait};

/// A table being written.
pub struct TableOut<'a> {
    plan: &'a plan::Table,
    quiet: bool,
    catalog: Option<Arc<dyn Catalog>>,
    table: Option<Table>,
    schema: Option<SchemaRef>,
    /// The snapshot the run started from: its commit is made onto it only.
    base: Option<i64>,
    /// The run's record, until its commit (or its removal).
    record: Option<Record>,
    writers: Started<Vec<DataFile>>,
    files: Vec<DataFile>,
}

impl<'a> TableOut<'a> {
    pub fn new(plan: &'a plan::Table, quiet: bool) -> Self {
        Self {
            plan,
            quiet,
            catalog: None,
            table: None,
            schema: None,
            base: None,
            record: None,
            writers: Started::default(),
            files: Vec::new(),
        }
    }

    fn output(&self) -> &TableOutput {
        &self.plan.table
    }

    fn catalog(&self) -> Result<&dyn Catalog> {
        self.catalog.as_deref().context("the catalog is open")
    }

    fn table(&self) -> Result<&Table> {
        self.table.as_ref().context("the table is loaded")
    }
}

impl Output for TableOut<'_> {
    /// One writer at a time per table, export or change feed.
    fn lock(&self, wait: Wait) -> Result<Vec<RunLock>> {
        let output = self.output();
        Ok(vec![pending::lock(
            &output.own_folder(),
            &output.shown(),
            wait,
        )?])
    }

    /// Opens the catalog (wrong credentials stop the run before anything is written), then
    /// settles what killed runs left in this table and its neighbours.
    fn recover(&mut self) -> Result<()> {
        let output = self.output();
        let catalog = output.catalog.open(&output.warehouse)?;
        let own = output.own_folder();
        pending::sweep_spool(&own)?;
        if runtime().block_on(catalog.table_exists(&output.ident))? {
            let table = runtime()
                .block_on(catalog.load_table(&output.ident))
                .with_context(|| format!("loading table {}", output.shown()))?;
            pending::settle(&own, &table)?;
        }
        let warehouse = output.warehouse.location();
        pending::settle_neighbours(&own, catalog.as_ref(), &warehouse, self.quiet);
        self.catalog = Some(catalog);
        Ok(())
    }

    fn check(&mut self) -> Result<()> {
        Ok(())
    }

    /// The table, created when missing; a whole export refuses one that holds rows.
    fn prepare(&mut self, zone: Zone, incremental: bool) -> Result<()> {
        let schema = match incremental {
            true => model::versions_schema(zone),
            false => model::event_schema(zone),
        };
        let layout = Layout::events(self.plan.partition_by);
        let table = catalog::table(self.catalog()?, &self.output().ident, &schema, layout)?;
        if let (Some((rows, snapshot)), false) = (rows_in(&table), incremental) {
            bail!(UsageError(format!(
                "table {} already holds {} (snapshot {snapshot}): a full export would add every \
                 event again, and replacing a table's rows in one commit is not supported yet; \
                 export to a new table name",
                self.output().shown(),
                holds(rows)
            )));
        }
        self.base = table.metadata().current_snapshot_id();
        self.table = Some(table);
        self.schema = Some(schema);
        Ok(())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone().expect("prepared before the rows")
    }

    fn by_rule(&self) -> bool {
        false
    }

    fn spool(&self) -> PathBuf {
        pending::spool(&self.output().own_folder())
    }

    fn names(&self) -> Vec<String> {
        vec![self.output().shown()]
    }

    fn stored_cursor(&self) -> Result<Option<(u64, Identity)>> {
        summary::cursor(self.table()?, &self.output().shown())
    }

    fn start(&mut self, version: Option<i64>) -> Result<()> {
        let table = self.table()?;
        let record = Record::create(&self.output().own_folder())?;
        let sink = TableSink::create(
            table,
            record.data_folder(table),
            &self.plan.encoding,
            version,
            Some("timestamp"),
        );
        self.record = Some(record);
        let sinks: Vec<Box<dyn Sink<_>>> = vec![Box::new(sink?)];
        self.writers.start(sinks)
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writers.write(batch)
    }

    fn finish(&mut self) -> Result<()> {
        self.files = self.writers.close()?.concat();
        Ok(())
    }

    /// One snapshot of the data files, with the run's summary; nothing new commits nothing
    /// (the cursor stays, and the next window starts where it did).
    fn commit(&mut self, facts: &Facts) -> Result<Vec<String>> {
        let shown = self.output().shown();
        let files = std::mem::take(&mut self.files);
        if files.is_empty() {
            return Ok(vec![format!("{shown} (nothing to add)")]);
        }
        let summary = summary::of_run(
            facts.since,
            facts.identity.as_ref(),
            facts.snapshot.as_deref(),
        )?;
        // The cursor is the horizon and the source it belongs to.
        let mut cursor = facts.cursor.clone();
        if let (false, Some(source)) = (cursor.is_empty(), summary.get(summary::SOURCE)) {
            cursor.insert(summary::SOURCE.to_owned(), source.clone());
        }
        let said = commit::Said { summary, cursor };
        let record = self.record.take().context("the run is recorded")?;
        let snapshot = commit::commit_run(
            self.catalog()?,
            self.table()?,
            self.base,
            record,
            files,
            facts.rows,
            said,
        )?;
        Ok(vec![format!("{shown} (snapshot {snapshot})")])
    }

    fn retain(&mut self, _now: DateTime<Utc>, _quiet: bool) -> Result<()> {
        Ok(())
    }
}

impl Drop for TableOut<'_> {
    /// A run that did not reach its commit removes its data files (its writers closed first).
    fn drop(&mut self) {
        self.writers = Started::default();
        if let (Some(record), Some(table)) = (self.record.take(), &self.table) {
            record.abandon(table);
        }
    }
}
