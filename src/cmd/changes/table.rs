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

use super::decode::Changes;
use super::files::Value;
use super::pgoutput::Lsn;
use super::rows::Rows;
use crate::cli::ChangesArgs;
use crate::error::UsageError;
use crate::model::{self, Zone};
use crate::runtime::runtime;
use crate::sink::format::Encoding;
use crate::sink::table::catalog::{self, Layout};
use crate::sink::table::pending::{self, Record};
use crate::sink::table::writer::TableSink;
use crate::sink::table::{commit, holds, rows_in, TableOutput};
use crate::sink::Sink;

/// The summary properties of a batch's snapshot: whose changes, and which.
const FEED: &str = "export-events.feed";
const LSN_FROM: &str = "export-events.lsn-from";
const LSN_TO: &str = "export-events.lsn-to";

/// A table of changes.
pub struct TableFeed {
    output: TableOutput,
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

impl TableFeed {
    /// The table `output`, created when missing; one that holds anything but this feed's
    /// changes is refused.
    pub fn open(output: TableOutput, args: &ChangesArgs, scope: &str, zone: Zone) -> Result<Self> {
        let encoding = crate::cmd::table::data_encoding(&args.output, &[])?;
        let catalog = output.catalog.open(&output.warehouse)?;
        let schema = model::change_table_schema(zone);
        let table = catalog::table(catalog.as_ref(), &output.ident, &schema, Layout::CHANGES)?;
        let held = held(&table, scope, &output)?;
        Ok(Self {
            output,
            catalog,
            scope: scope.to_owned(),
            zone,
            encoding,
            schema,
            held: Cell::new(held),
        })
    }

    /// Where export-events keeps this table's lock and pending records.
    pub fn own_folder(&self) -> PathBuf {
        self.output.own_folder()
    }

    /// `iceberg:hub.events_changes`.
    pub fn shown(&self) -> String {
        self.output.shown()
    }

    fn load(&self) -> Result<Table> {
        runtime()
            .block_on(self.catalog.load_table(&self.output.ident))
            .with_context(|| format!("loading table {}", self.shown()))
    }

    /// With the table's lock held: removes what batches that died before their commit left,
    /// and reads again how far the table holds this feed (a run that held the lock before
    /// may have committed since [`Self::open`]).
    pub fn prepare(&self) -> Result<()> {
        let table = self.load()?;
        pending::settle(&self.own_folder(), &table)?;
        self.held.set(held(&table, &self.scope, &self.output)?);
        Ok(())
    }

    /// Starts the batch of the changes from `from`.
    pub fn start(&self, from: Lsn) -> Result<TableBatch<'_>> {
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
        Ok(TableBatch {
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
        })
    }
}

/// Where the table holds this feed's changes up to: the end of the newest snapshot that has a
/// feed, walking back from the current one (another writer's snapshot, such as a compaction's,
/// may follow it). An empty table holds none; a table with rows but no feed's snapshot, or
/// another feed's, is refused. Summaries are read back, so a value that does not parse is
/// refused in one line, never guessed at.
fn held(table: &Table, scope: &str, output: &TableOutput) -> Result<Lsn> {
    let metadata = table.metadata();
    let mut at = metadata.current_snapshot();
    while let Some(snapshot) = at {
        let properties = &snapshot.summary().additional_properties;
        if let Some(feed) = properties.get(FEED) {
            if feed != scope {
                anyhow::bail!(UsageError(format!(
                    "table {} holds the changes of another feed ({feed:?}; this one is \
                     {scope:?}: server-database-slot): give each database and slot a table of \
                     its own",
                    output.shown()
                )));
            }
            let to = properties.get(LSN_TO).map(String::as_str).unwrap_or("");
            return to.parse().map_err(|_| {
                UsageError(format!(
                    "table {}: snapshot {} has an unreadable {LSN_TO} {to:?}; was the summary \
                     edited? Give the feed a new table",
                    output.shown(),
                    snapshot.snapshot_id()
                ))
                .into()
            });
        }
        at = snapshot
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id));
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

/// A batch of changes on its way into the table.
pub struct TableBatch<'a> {
    feed: &'a TableFeed,
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

    /// Commits the batch as the changes up to `to`, one snapshot; returns where it went (for
    /// the log line). A batch with nothing new commits nothing.
    pub fn finish(mut self, to: Lsn) -> Result<String> {
        let feed = self.feed;
        let shown = feed.shown();
        let skipped = match self.skipped {
            0 => String::new(),
            n => format!(" ({n} already in the table, skipped)"),
        };
        let written = self.flush().and_then(|()| self.sink.close());
        let files = match written {
            Ok(files) => files,
            Err(e) => {
                self.record.abandon(&self.table);
                return Err(e);
            }
        };
        if files.is_empty() {
            self.record.abandon(&self.table);
            return Ok(format!("{shown}, nothing new{skipped}"));
        }
        let summary = HashMap::from([
            (FEED.to_owned(), feed.scope.clone()),
            (LSN_FROM.to_owned(), self.from.to_string()),
            (LSN_TO.to_owned(), to.to_string()),
        ]);
        let snapshot = commit::commit_run(
            feed.catalog.as_ref(),
            &self.table,
            self.base,
            self.record,
            files,
            self.rows,
            summary,
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
        self.rows
    }
}
