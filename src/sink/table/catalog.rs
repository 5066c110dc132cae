//! The catalog that names an Iceberg table (`--catalog`), and the one kind of commit
//! export-events makes to it.
//!
//! `sqlite:PATH` and `postgres://` URLs are Iceberg's SQL catalog (the `iceberg-catalog-sql`
//! crate: the same `iceberg_tables` rows pyiceberg's and Java's SQL catalogs read), so the
//! Hub's own PostgreSQL can hold it. A table is created on first write from the event model.
//!
//! A commit appends one snapshot, and only onto the snapshot the run started from: the crate's
//! `Transaction::commit` rebases an append onto whatever another writer committed meanwhile,
//! which would silently put two runs' overlapping rows in the table. [`Expecting`] wraps the
//! catalog so that the compare-and-swap also requires the table to be where the run found it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use arrow::datatypes::Schema as ArrowSchema;
use iceberg::io::LocalFsStorageFactory;
use iceberg::spec::{
    DataFile, NullOrder, SortDirection, SortField, SortOrder, Transform, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction as _, Transaction};
use iceberg::{
    Catalog, CatalogBuilder as _, Error, ErrorKind, Namespace, NamespaceIdent, TableCommit,
    TableCreation, TableIdent,
};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};

use crate::error::{self, UsageError};
use crate::runtime::runtime;
use crate::sink::dataset::PartitionBy;

/// The name export-events gives the catalog in the SQL catalog's rows (`catalog_name`): a
/// reader opens it under the same name (pyiceberg: `SqlCatalog("default", uri=...)`).
pub const CATALOG_NAME: &str = "default";

/// Where a catalog is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogSpec {
    /// A SQLite file (created when missing), absolute.
    Sqlite(PathBuf),
    /// A PostgreSQL database, as a URL.
    Postgres(String),
}

impl CatalogSpec {
    /// `sqlite:PATH` (relative to `cwd`) or `postgres://…`.
    pub fn parse(text: &str, cwd: &Path) -> Result<Self, UsageError> {
        if let Some(path) = text.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() || path.contains('?') {
                return Err(UsageError(format!(
                    "--catalog {text}: give the SQLite file's path, such as sqlite:exports/lake.db"
                )));
            }
            return Ok(Self::Sqlite(cwd.join(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            error::keep_secret(text);
            return Ok(Self::Postgres(text.to_owned()));
        }
        let scheme = text.split_once(':').map_or(text, |(s, _)| s);
        let why = match scheme {
            "http" | "https" => "REST catalogs are not supported yet",
            _ => "unknown catalog",
        };
        Err(UsageError(format!(
            "--catalog {}: {why}; use sqlite:PATH (a file, created when missing) or a \
             postgres:// URL (Iceberg's SQL catalog)",
            error::redact(text)
        )))
    }

    /// As messages show it (no password).
    pub fn shown(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite:{}", path.display()),
            Self::Postgres(url) => error::redact(url),
        }
    }

    /// Connects (a SQLite file is created, with its folder), creating the catalog's tables when
    /// missing.
    pub fn open(&self, warehouse: &Path) -> Result<SqlCatalog> {
        let (uri, style) = match self {
            Self::Sqlite(path) => {
                if let Some(folder) = path.parent() {
                    std::fs::create_dir_all(folder)
                        .with_context(|| format!("creating folder {}", folder.display()))?;
                }
                (
                    format!("sqlite:{}?mode=rwc", path.display()),
                    SqlBindStyle::QMark,
                )
            }
            Self::Postgres(url) => (url.clone(), SqlBindStyle::DollarNumeric),
        };
        let builder = SqlCatalogBuilder::default()
            .uri(uri)
            .warehouse_location(warehouse.display().to_string())
            .sql_bind_style(style)
            .with_storage_factory(Arc::new(LocalFsStorageFactory));
        runtime()
            .block_on(builder.load(CATALOG_NAME, HashMap::new()))
            .with_context(|| format!("opening catalog {}", self.shown()))
    }
}

/// The table, created (with its namespace) from `schema` when missing: partitioned by
/// `partition_by` (day of `timestamp` unless told), sorted newest first. An existing table must
/// hold the columns of `schema` with the same types.
pub fn table(
    catalog: &SqlCatalog,
    ident: &TableIdent,
    schema: &ArrowSchema,
    partition_by: Option<PartitionBy>,
) -> Result<Table> {
    let shown = super::dotted(ident);
    let wanted = iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(schema)
        .context("the event model as an Iceberg schema")?;
    let (column, name, transform) = partitioning(partition_by);
    let existing = |table: Table| -> Result<Table> {
        check_columns(&table, &wanted, &shown)?;
        let have = table.metadata();
        let source = have.current_schema().field_id_by_name(column);
        let spec = have.default_partition_spec();
        let same = spec
            .fields()
            .iter()
            .any(|f| Some(f.source_id) == source && f.transform == transform);
        if partition_by.is_some() && !same {
            bail!(UsageError(format!(
                "table {shown} is partitioned as {:?}, not by {column} {transform}: drop \
                 --partition-by (the table's own partitioning is used) or export to a new table",
                spec.fields()
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
            )));
        }
        Ok(table)
    };
    runtime()
        .block_on(async {
            if catalog.table_exists(ident).await? {
                return existing(catalog.load_table(ident).await?);
            }
            if !catalog.namespace_exists(ident.namespace()).await? {
                match catalog
                    .create_namespace(ident.namespace(), HashMap::new())
                    .await
                {
                    Ok(Namespace { .. }) => {}
                    // Another run created it meanwhile.
                    Err(_) if catalog.namespace_exists(ident.namespace()).await? => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let timestamp = wanted
                .field_id_by_name("timestamp")
                .context("the event model has a timestamp")?;
            let source = wanted
                .field_id_by_name(column)
                .context("the event model has the partition's column")?;
            let spec = UnboundPartitionSpec::builder()
                .add_partition_field(source, name, transform)?
                .build();
            let newest_first = |source_id| SortField {
                source_id,
                transform: Transform::Identity,
                direction: SortDirection::Descending,
                null_order: NullOrder::First,
            };
            let id = wanted
                .field_id_by_name("id")
                .context("the event model has an id")?;
            let order = SortOrder::builder()
                .with_order_id(1)
                .with_sort_field(newest_first(timestamp))
                .with_sort_field(newest_first(id))
                .build(&wanted)?;
            let creation = TableCreation::builder()
                .name(ident.name().to_owned())
                .schema(wanted.clone())
                .partition_spec(spec)
                .sort_order(order)
                .properties([(
                    "write.parquet.compression-codec".to_owned(),
                    "zstd".to_owned(),
                )])
                .build();
            match catalog.create_table(ident.namespace(), creation).await {
                Ok(table) => Ok(table),
                // Another run created it meanwhile: the same table.
                Err(_) if catalog.table_exists(ident).await? => {
                    existing(catalog.load_table(ident).await?)
                }
                Err(e) => Err(anyhow::Error::from(e)),
            }
        })
        .with_context(|| format!("creating or loading table {shown}"))
}

/// The column, partition field name and transform of `--partition-by` (by day without it):
/// rules by a bucket of their name, never a folder per name.
fn partitioning(partition_by: Option<PartitionBy>) -> (&'static str, &'static str, Transform) {
    match partition_by.unwrap_or(PartitionBy::Day) {
        PartitionBy::Day => ("timestamp", "timestamp_day", Transform::Day),
        PartitionBy::Month => ("timestamp", "timestamp_month", Transform::Month),
        PartitionBy::Rule => ("rule", "rule_bucket", Transform::Bucket(RULE_BUCKETS)),
    }
}

/// Buckets of `--partition-by rule`: a few files per export, whatever the number of rules.
const RULE_BUCKETS: u32 = 16;

/// Every column of `wanted` in `table`, with the same type.
fn check_columns(table: &Table, wanted: &iceberg::spec::Schema, shown: &str) -> Result<()> {
    let have = table.metadata().current_schema();
    for field in wanted.as_struct().fields() {
        match have.field_by_name(&field.name) {
            Some(found) if found.field_type == field.field_type => {}
            Some(found) => bail!(UsageError(format!(
                "table {shown} has column {} as {}, not {} as export-events writes it: export to \
                 a new table",
                field.name, found.field_type, field.field_type
            ))),
            None if field.name == crate::model::VERSION => bail!(UsageError(format!(
                "table {shown} has no column {}: it holds a full export, not the versions of \
                 incremental runs; give the incremental runs a table of their own, such as \
                 {shown}_versions",
                field.name
            ))),
            None => bail!(UsageError(format!(
                "table {shown} has no column {}: it was not created by export-events; export to \
                 a new table",
                field.name
            ))),
        }
    }
    Ok(())
}

/// Appends `files` as one snapshot with `summary` in its summary, if the table's current
/// snapshot is still `base` (what the run read its state from); returns the new snapshot's id.
pub fn append(
    catalog: &SqlCatalog,
    table: &Table,
    base: Option<i64>,
    files: Vec<DataFile>,
    summary: HashMap<String, String>,
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
        let transaction = action.apply(transaction)?;
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
    inner: &'a SqlCatalog,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogs_are_sqlite_files_or_postgres_urls() {
        let cwd = Path::new("/work");
        assert_eq!(
            CatalogSpec::parse("sqlite:exports/lake.db", cwd).unwrap(),
            CatalogSpec::Sqlite(PathBuf::from("/work/exports/lake.db"))
        );
        assert_eq!(
            CatalogSpec::parse("sqlite:///abs/lake.db", cwd).unwrap(),
            CatalogSpec::Sqlite(PathBuf::from("/abs/lake.db"))
        );
        let pg = CatalogSpec::parse("postgres://hub:s3cret@db/iot_hub", cwd).unwrap();
        assert!(!pg.shown().contains("s3cret"), "{}", pg.shown());
        for (text, says) in [
            ("http://rest:8181", "REST catalogs are not supported yet"),
            ("mysql://x@y/z", "unknown catalog"),
            ("sqlite:", "give the SQLite file's path"),
            ("sqlite:x.db?mode=ro", "give the SQLite file's path"),
        ] {
            let err = CatalogSpec::parse(text, cwd).unwrap_err().0;
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
