//! The change feed into an Apache Iceberg table (`changes --output iceberg:hub.events_changes
//! --catalog … --warehouse …`): each batch of whole transactions becomes one snapshot, appended
//! onto the snapshot the batch started from, whose summary names the feed (server, database,
//! slot) and the LSN range it holds. Only after that commit may the slot be confirmed.
//!
//! A run killed between its commit and the confirmation re-reads changes the table holds. The
//! newest snapshot of this feed says where they end, and the changes of transactions committed
//! before that are skipped: each change is in the table once. A table another feed writes is
//! refused, as a folder or a subject is. The rows are the change columns and `position`, the
//! change's place in its transaction: readers replay them in (`lsn`, `position`) order.
//!
//! Data files are written as exports write theirs (`sink::table`): into a folder of the batch's
//! own, recorded first, so a batch that dies before its commit leaves one folder, which the
//! next run removes.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use arrow::array::Int64Builder;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use iceberg::table::Table;
use iceberg::Catalog;

use super::api::{ChangeBatch, ChangeSink, Registration, Request, SinkPlan};
use crate::error::UsageError;
use crate::feed::change::{Changes, Value};
use crate::feed::pgoutput::Lsn;
use crate::feed::rows::Rows;
use crate::model::{self, Zone};
use crate::plan::export::data_encoding;
use crate::runtime::runtime;
use crate::sink::format::Encoding;
use crate::sink::table::catalog::{self, Layout};
use crate::sink::table::pending::{self, Record};
use crate::sink::table::writer::TableSink;
use crate::sink::table::{commit, holds, rows_in, TableOutput, SCHEME};
use crate::sink::Sink;
use crate::store::{url, RunLock, Target, Wait, DEFAULT_MODE};

/// The registry's entry: `--output iceberg:NAMESPACE.TABLE`.
pub const SINK: Registration = Registration {
    example: "--output iceberg:NAMESPACE.TABLE",
    takes: |request| {
        request
            .output
            .is_some_and(|o| o.to_string_lossy().starts_with(SCHEME))
    },
    fallback: false,
    resolve,
};

/// A table of changes, resolved.
#[derive(Debug)]
struct ChangeTable {
    output: TableOutput,
    encoding: Encoding,
}

fn resolve(request: &Request) -> Result<Box<dyn SinkPlan>, UsageError> {
    let output = TableOutput::resolve(
        request.output,
        request.catalog,
        request.warehouse,
        request.cwd,
    )?
    .ok_or_else(|| UsageError("changes: --output names no table".into()))?;
    let encoding = data_encoding(
        request.formats,
        request.compression,
        &[(request.mode.is_some(), "--mode")],
    )?;
    Ok(Box::new(ChangeTable { output, encoding }))
}

impl SinkPlan for ChangeTable {
    /// The folder export-events keeps beside the table.
    fn record_folder(&self) -> Target {
        Target::owned(url::local(&self.output.own_folder()), DEFAULT_MODE)
    }

    fn open(&self, scope: &str, zone: Zone, quiet: bool) -> Result<Box<dyn ChangeSink + '_>> {
        Ok(Box::new(TableFeed::open(self, scope, zone, quiet)?))
    }
}

/// The summary properties of a batch's snapshot: whose changes, and which.
const FEED: &str = "export-events.feed";
const LSN_FROM: &str = "export-events.lsn-from";
const LSN_TO: &str = "export-events.lsn-to";

/// A table of changes, open.
struct TableFeed<'a> {
    output: &'a TableOutput,
    catalog: Arc<dyn Catalog>,
    /// The feed's scope (server, database, slot).
    scope: String,
    zone: Zone,
    encoding: Encoding,
    schema: SchemaRef,
    /// The end of this feed's changes the table holds: changes of transactions committed
    /// before it are in the table already.
    held: Cell<Lsn>,
}

impl<'a> TableFeed<'a> {
    /// The table, created when missing; one that holds anything but this feed's changes is
    /// refused. What killed runs left in the warehouse's other tables is settled too.
    fn open(plan: &'a ChangeTable, scope: &str, zone: Zone, quiet: bool) -> Result<Self> {
        let output = &plan.output;
        let catalog = output.catalog.open(&output.warehouse)?;
        let schema = model::change_table_schema(zone);
        let table = catalog::table(catalog.as_ref(), &output.ident, &schema, Layout::CHANGES)?;
        let held = held(&table, scope, output)?;
        let location = output.warehouse.location();
        pending::settle_neighbours(&output.own_folder(), catalog.as_ref(), &location, quiet);
        Ok(Self {
            output,
            catalog,
            scope: scope.to_owned(),
            zone,
            encoding: plan.encoding,
            schema,
            held: Cell::new(held),
        })
    }

    /// Where export-events keeps this table's lock and pending records.
    fn own_folder(&self) -> PathBuf {
        self.output.own_folder()
    }

    fn load(&self) -> Result<Table> {
        runtime()
            .block_on(self.catalog.load_table(&self.output.ident))
            .with_context(|| format!("loading table {}", self.shown()))
    }
}

impl ChangeSink for TableFeed<'_> {
    /// `iceberg:hub.events_changes`.
    fn shown(&self) -> String {
        self.output.shown()
    }

    /// The table's lock: one writer at a time, feed or export.
    fn lock(&self, _slot: &str, wait: Wait) -> Result<RunLock> {
        pending::lock(&self.own_folder(), &self.output.shown(), wait)
    }

    /// The `lsn-to` of this feed's newest snapshot.
    fn end(&self) -> Result<Option<Lsn>> {
        let end = held(&self.load()?, &self.scope, self.output)?;
        Ok((end > Lsn(0)).then_some(end))
    }

    /// With the table's lock held: removes what batches that died before their commit left,
    /// and reads again how far the table holds this feed (a run that held the lock before
    /// may have committed since it was opened).
    fn prepare(&self, _from: Lsn) -> Result<()> {
        let table = self.load()?;
        pending::settle(&self.own_folder(), &table)?;
        self.held.set(held(&table, &self.scope, self.output)?);
        Ok(())
    }

    /// Starts the batch of the changes from `from`.
    fn batch(&self, from: Lsn) -> Result<Box<dyn ChangeBatch + '_>> {
        let table = self.load()?;
        let base = table.metadata().current_snapshot_id();
        let record = Record::create(&self.own_folder())?;
        let sink = match TableSink::create(
            &table,
            record.data_folder(&table),
            &self.encoding,
            None,
            None,
        ) {
            Ok(sink) => Box::new(sink),
            Err(e) => {
                record.abandon(&table);
                return Err(e);
            }
        };
        Ok(Box::new(TableBatch {
            feed: self,
            table,
            base,
            record,
            sink,
            gathered: Rows::new(self.zone),
            positions: Int64Builder::new(),
            from: from.max(self.held.get()),
            lsn: String::new(),
            position: 0,
            in_table: false,
            rows: 0,
            skipped: 0,
        }))
    }
}

/// Where the table holds this feed's changes up to: the end of the newest snapshot that has a
/// feed, walking back from the current one (another writer's snapshot, such as a compaction's,
/// may follow it), else the table's properties (`commit::read_back`). An empty table holds none; a table with rows but no feed's snapshot, or
/// another feed's, is refused. Summaries are read back, so a value that does not parse is
/// refused in one line, never guessed at.
fn held(table: &Table, scope: &str, output: &TableOutput) -> Result<Lsn> {
    if let Some(end) = commit::read_back(table, |said, place| read_end(said, place, scope, output))?
    {
        return Ok(end);
    }
    if let Some((rows, _)) = rows_in(table) {
        anyhow::bail!(UsageError(format!(
            "table {} holds {} the change feed did not write: give the feed a table of its own, \
             such as {}_changes",
            output.shown(),
            holds(rows),
            output.shown()
        )));
    }
    Ok(Lsn(0))
}

/// Where this feed's changes end by `properties` (a snapshot's summary, or the table's
/// properties: `place`), if they name a feed: another feed's is refused, and so is an end that
/// does not parse.
fn read_end(
    properties: &HashMap<String, String>,
    place: &dyn Fn() -> String,
    scope: &str,
    output: &TableOutput,
) -> Result<Option<Lsn>> {
    let Some(feed) = properties.get(FEED) else {
        return Ok(None);
    };
    if feed != scope {
        anyhow::bail!(UsageError(format!(
            "table {} holds the changes of another feed ({feed:?}; this one is {scope:?}: \
             server-database-slot): give each database and slot a table of its own",
            output.shown()
        )));
    }
    let to = properties.get(LSN_TO).map(String::as_str).unwrap_or("");
    let end = to.parse().map_err(|_| {
        UsageError(format!(
            "table {}: {} has an unreadable {LSN_TO} {to:?}; was it edited? Give the feed a new \
             table",
            output.shown(),
            place()
        ))
    })?;
    Ok(Some(end))
}

/// A batch of changes on its way into the table.
struct TableBatch<'a> {
    feed: &'a TableFeed<'a>,
    table: Table,
    /// The snapshot the batch appends onto.
    base: Option<i64>,
    record: Record,
    sink: Box<TableSink>,
    gathered: Rows,
    positions: Int64Builder,
    /// The first change this batch may hold: the slot's position, or the end of what the table
    /// holds when that is further.
    from: Lsn,
    /// The commit LSN of the transaction being gathered, the next position in it, and whether
    /// the table holds it already.
    lsn: String,
    position: i64,
    in_table: bool,
    rows: u64,
    skipped: u64,
}

impl TableBatch<'_> {
    fn flush(&mut self) -> Result<()> {
        let Some(batch) = self.gathered.take()? else {
            return Ok(());
        };
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(self.positions.finish()));
        let batch = RecordBatch::try_new(self.feed.schema.clone(), columns)
            .context("a batch of change rows with their positions")?;
        self.sink.write_batch(&batch)
    }
}

impl ChangeBatch for TableBatch<'_> {
    fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Commits the batch as the changes up to `to`, one snapshot; returns where it went (for
    /// the log line). A batch with nothing new commits nothing.
    fn finish(self: Box<Self>, to: Lsn) -> Result<String> {
        let mut this = *self;
        let feed = this.feed;
        let shown = feed.shown();
        let skipped = match this.skipped {
            0 => String::new(),
            n => format!(" ({n} already in the table, skipped)"),
        };
        let written = this.flush().and_then(|()| this.sink.close());
        let files = match written {
            Ok(files) => files,
            Err(e) => {
                this.record.abandon(&this.table);
                return Err(e);
            }
        };
        if files.is_empty() {
            this.record.abandon(&this.table);
            return Ok(format!("{shown}, nothing new{skipped}"));
        }
        let said = commit::Said {
            summary: HashMap::from([(LSN_FROM.to_owned(), this.from.to_string())]),
            cursor: HashMap::from([
                (FEED.to_owned(), feed.scope.clone()),
                (LSN_TO.to_owned(), to.to_string()),
            ]),
        };
        let snapshot = commit::commit_run(
            feed.catalog.as_ref(),
            &this.table,
            this.base,
            this.record,
            files,
            this.rows,
            said,
        )?;
        feed.held.set(to);
        Ok(format!("snapshot {snapshot} of {shown}{skipped}"))
    }
}

impl Changes for TableBatch<'_> {
    fn push(&mut self, row: &[Value]) -> Result<()> {
        let Some(Value::Text(lsn)) = row.first() else {
            anyhow::bail!("a change without its LSN");
        };
        if *lsn != self.lsn {
            self.lsn.clone_from(lsn);
            self.position = 0;
            // A transaction committed before the end of what the table holds is in it.
            self.in_table = lsn.parse::<Lsn>()? < self.from;
        }
        let position = self.position;
        self.position += 1;
        if self.in_table {
            self.skipped += 1;
            return Ok(());
        }
        self.gathered.push(row)?;
        self.positions.append_value(position);
        self.rows += 1;
        if self.gathered.full() {
            self.flush()?;
        }
        Ok(())
    }

    fn rows(&self) -> u64 {
        self.rows + self.skipped
    }
}
