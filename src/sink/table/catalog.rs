//! The catalog that names an Iceberg table (`--catalog`), and the tables export-events creates
//! in it: their schema, partitioning and sort order.
//!
//! `sqlite:PATH` and `postgres://` URLs are Iceberg's SQL catalog (the `iceberg-catalog-sql`
//! crate: the same `iceberg_tables` rows pyiceberg's and Java's SQL catalogs read), so the
//! Hub's own PostgreSQL can hold it. A table is created on first write from the event model:
//! exports and incremental runs partition by time (or rule bucket) and sort newest first; the
//! change feed partitions by the day of the commit and adds no sort order (its order is
//! `lsn`, `position`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use arrow::datatypes::Schema as ArrowSchema;
use iceberg::spec::{
    NullOrder, SortDirection, SortField, SortOrder, Transform, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder as _, Namespace, TableCreation, TableIdent};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};

use super::storage::WarehouseStorageFactory;
use super::Warehouse;
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
    /// missing. A warehouse in S3 is checked first: wrong credentials or a missing bucket stop
    /// the run in one line, before anything is read or written.
    pub fn open(&self, warehouse: &Warehouse) -> Result<SqlCatalog> {
        if let Warehouse::S3 { bucket, prefix } = warehouse {
            let check = format!("{prefix}/.export-events-check")
                .trim_start_matches('/')
                .to_owned();
            crate::sink::object::Bucket::open(bucket)?.check_write(&check)?;
        }
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
            .warehouse_location(warehouse.location())
            .sql_bind_style(style)
            .with_storage_factory(Arc::new(WarehouseStorageFactory));
        runtime()
            .block_on(builder.load(CATALOG_NAME, HashMap::new()))
            .with_context(|| format!("opening catalog {}", self.shown()))
    }
}

/// How a table export-events creates is partitioned and sorted.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The column partitioned on, the partition field's name, and the transform.
    pub partition: (&'static str, &'static str, Transform),
    /// The columns the rows are declared sorted by, newest first; none for no sort order.
    pub newest_first: &'static [&'static str],
    /// Whether the user chose the partitioning (`--partition-by`): an existing table
    /// partitioned otherwise is then refused instead of used as it is.
    pub chosen: bool,
}

impl Layout {
    /// Events, by `--partition-by` (the day of `timestamp` unless told): rules by a bucket of
    /// their name, never a folder per name; newest first.
    pub fn events(partition_by: Option<PartitionBy>) -> Self {
        let partition = match partition_by.unwrap_or(PartitionBy::Day) {
            PartitionBy::Day => ("timestamp", "timestamp_day", Transform::Day),
            PartitionBy::Month => ("timestamp", "timestamp_month", Transform::Month),
            PartitionBy::Rule => ("rule", "rule_bucket", Transform::Bucket(RULE_BUCKETS)),
        };
        Self {
            partition,
            newest_first: &["timestamp", "id"],
            chosen: partition_by.is_some(),
        }
    }

    /// Changes, by the day of their commit (a delete may carry no event timestamp).
    pub const CHANGES: Self = Self {
        partition: ("commit_time", "commit_time_day", Transform::Day),
        newest_first: &[],
        chosen: false,
    };
}

/// The table, created (with its namespace) from `schema` when missing, laid out as `layout`
/// says. An existing table must hold the columns of `schema` with the same types.
pub fn table(
    catalog: &SqlCatalog,
    ident: &TableIdent,
    schema: &ArrowSchema,
    layout: Layout,
) -> Result<Table> {
    let shown = super::dotted(ident);
    let wanted = iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(schema)
        .context("the event model as an Iceberg schema")?;
    let (column, name, transform) = layout.partition;
    let existing = |table: Table| -> Result<Table> {
        check_columns(&table, &wanted, &shown)?;
        let have = table.metadata();
        let source = have.current_schema().field_id_by_name(column);
        let spec = have.default_partition_spec();
        let same = spec
            .fields()
            .iter()
            .any(|f| Some(f.source_id) == source && f.transform == transform);
        if layout.chosen && !same {
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
            let source = wanted
                .field_id_by_name(column)
                .context("the model has the partition's column")?;
            let spec = UnboundPartitionSpec::builder()
                .add_partition_field(source, name, transform)?
                .build();
            let mut order = SortOrder::builder();
            for column in layout.newest_first {
                let source_id = wanted
                    .field_id_by_name(column)
                    .context("the model has the sort order's column")?;
                order.with_sort_field(SortField {
                    source_id,
                    transform: Transform::Identity,
                    direction: SortDirection::Descending,
                    null_order: NullOrder::First,
                });
            }
            // Order 1, or unsorted (order 0) without fields.
            let order = order.build(&wanted)?;
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
            None if field.name == crate::model::POSITION
                || crate::model::FEED.iter().any(|c| c.name == field.name) =>
            {
                bail!(UsageError(format!(
                    "table {shown} has no column {}: it holds events, not changes; give the \
                     change feed a table of its own, such as {shown}_changes",
                    field.name
                )))
            }
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
