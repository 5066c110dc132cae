//! The one kind of commit export-events makes to a table: an append of one snapshot, and only
//! onto the snapshot the run started from. The crate's `Transaction::commit` rebases an append
//! onto whatever another writer committed meanwhile, which would silently put two runs'
//! overlapping rows in the table (or a change twice in a table of changes). [`Expecting`]
//! wraps the catalog so that the compare-and-swap also requires the table to be where the run
//! found it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context as _, Result};
use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction as _, Transaction};
use iceberg::{
    Catalog, Error, ErrorKind, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent,
};

use super::pending::{Record, RUN_PROPERTY};
use crate::runtime::runtime;
use crate::{cancel, fault};

/// What a run says in its snapshot besides Iceberg's counts: its summary, and its cursor (where
/// the next run resumes), which goes in the summary and, in the same commit, in the table's
/// properties too: another engine's maintenance may expire the snapshot (its summary goes with
/// it), but not the properties.
pub struct Said {
    pub summary: HashMap<String, String>,
    pub cursor: HashMap<String, String>,
}

/// What runs said, read back: `read` applied to each snapshot's summary, newest first through
/// the parents (another writer's snapshot, such as a compaction's, may follow ours), then to
/// the table's properties, where the cursor outlives snapshots another engine expired; the
/// first it finds. `read` is told where it reads, for its messages.
pub fn read_back<T>(
    table: &Table,
    read: impl Fn(&HashMap<String, String>, &dyn Fn() -> String) -> Result<Option<T>>,
) -> Result<Option<T>> {
    let metadata = table.metadata();
    let mut at = metadata.current_snapshot();
    while let Some(snapshot) = at {
        let place = || format!("snapshot {}", snapshot.snapshot_id());
        if let Some(found) = read(&snapshot.summary().additional_properties, &place)? {
            return Ok(Some(found));
        }
        at = snapshot
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id));
    }
    read(metadata.properties(), &|| "its properties".to_owned())
}

/// The end of every run into a table, export or change batch: its data files `files` (`rows`
/// rows, written in `record`'s folder) become one snapshot of `table` if it is still at
/// `base`, with what the run `said` plus what every export-events snapshot says (the run, its
/// rows, the version). A signal before the commit stops the run and removes the files; a failed
/// commit leaves the record, for the next run to settle; once the commit is made, it
/// completes. Returns the snapshot's id.
pub fn commit_run(
    catalog: &dyn Catalog,
    table: &Table,
    base: Option<i64>,
    record: Record,
    files: Vec<DataFile>,
    rows: u64,
    said: Said,
) -> Result<i64> {
    let Said {
        mut summary,
        cursor,
    } = said;
    summary.extend(cursor.clone());
    fault::point("table.files-written");
    // The last moment a signal stops the run: from here the commit completes.
    if let Err(e) = cancel::check() {
        record.abandon(table);
        return Err(e.into());
    }
    summary.extend([
        (RUN_PROPERTY.to_owned(), record.id.to_string()),
        ("export-events.rows".to_owned(), rows.to_string()),
        (
            "export-events.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
    ]);
    let snapshot = append(catalog, table, base, files, summary, cursor)?;
    cancel::committed();
    fault::point("table.committed");
    record.finish()?;
    Ok(snapshot)
}

/// Appends `files` as one snapshot with `summary` in its summary, and `properties` set on the
/// table in the same commit, if the table's current snapshot is still `base` (what the run read
/// its state from); returns the new snapshot's id.
fn append(
    catalog: &dyn Catalog,
    table: &Table,
    base: Option<i64>,
    files: Vec<DataFile>,
    summary: HashMap<String, String>,
    properties: HashMap<String, String>,
) -> Result<i64> {
    let shown = super::dotted(table.identifier());
    let guarded = Expecting {
        inner: catalog,
        base,
        moved: AtomicBool::new(false),
    };
    let transaction = Transaction::new(table);
    let action = transaction
        .fast_append()
        .add_data_files(files)
        .set_snapshot_properties(summary);
    let committed = runtime().block_on(async {
        let mut transaction = action.apply(transaction)?;
        if !properties.is_empty() {
            let mut update = transaction.update_table_properties();
            for (key, value) in properties {
                update = update.set(key, value);
            }
            transaction = update.apply(transaction)?;
        }
        transaction.commit(&guarded).await
    });
    match committed {
        Ok(table) => table
            .metadata()
            .current_snapshot_id()
            .context("the committed table has a snapshot"),
        Err(_) if guarded.moved.load(Ordering::SeqCst) => bail!(
            "table {shown} was changed by another writer while this run exported (its snapshot \
             is no longer the one this run started from); nothing was committed: run again"
        ),
        Err(e) => Err(e).with_context(|| format!("committing to table {shown}")),
    }
}

/// The catalog, refusing a commit unless the table's current snapshot is `base`.
#[derive(Debug)]
struct Expecting<'a> {
    inner: &'a dyn Catalog,
    base: Option<i64>,
    moved: AtomicBool,
}

#[async_trait::async_trait]
impl Catalog for Expecting<'_> {
    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        let now = self.inner.load_table(commit.identifier()).await?;
        if now.metadata().current_snapshot_id() != self.base {
            self.moved.store(true, Ordering::SeqCst);
            return Err(Error::new(
                ErrorKind::CatalogCommitConflicts,
                "the table moved past the snapshot this run started from",
            ));
        }
        // The append's own requirement (the snapshot it was built on, read after `base`)
        // makes the swap fail if the table moves between this check and the commit.
        self.inner.update_table(commit).await
    }

    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.inner.namespace_exists(namespace).await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.inner.drop_namespace(namespace).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        self.inner.create_table(namespace, creation).await
    }
    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        self.inner.load_table(table).await
    }
    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
}
