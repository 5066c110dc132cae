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

use anyhow::{Context as _, Result};
use arrow::datatypes::Schema as ArrowSchema;
use iceberg::spec::{
    NullOrder, SortDirection, SortField, SortOrder, Transform, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder as _, Namespace, TableCreation, TableIdent};
use iceberg_catalog_rest::{
    RestCatalogBuilder, REST_CATALOG_PROP_URI, REST_CATALOG_PROP_WAREHOUSE,
};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};

use super::Warehouse;
use crate::error::{self, UsageError};
use crate::runtime::runtime;
use crate::sink::dataset::PartitionBy;

/// The name export-events gives the catalog in the SQL catalog's rows (`catalog_name`): a
/// reader opens it under the same name (pyiceberg: `SqlCatalog("default", uri=...)`).
pub const CATALOG_NAME: &str = "default";

/// The variables that hold a REST catalog's secret: a bearer token, or an OAuth2 client
/// credential (`CLIENT_ID:SECRET`) exchanged for one at the catalog's token endpoint.
pub const REST_TOKEN: &str = "ICEBERG_REST_TOKEN";
pub const REST_CREDENTIAL: &str = "ICEBERG_REST_CREDENTIAL";

/// Where a catalog is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogSpec {
    /// A SQLite file (created when missing), absolute.
    Sqlite(PathBuf),
    /// A PostgreSQL database, as a URL.
    Postgres(String),
    /// An Iceberg REST catalog at this `http(s)://` URL (no secret in it: those come from
    /// [`REST_TOKEN`] or [`REST_CREDENTIAL`]).
    Rest(String),
}

impl CatalogSpec {
    /// `sqlite:PATH` (relative to `cwd`), `postgres://…` or `http(s)://…`, by its scheme.
    pub fn parse(text: &str, cwd: &Path) -> Result<Self, UsageError> {
        let (scheme, rest) = text.split_once(':').unwrap_or_default();
        match scheme {
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() || path.contains('?') {
                    return Err(UsageError(format!(
                        "--catalog {text}: give the SQLite file's path, such as \
                         sqlite:exports/lake.db"
                    )));
                }
                Ok(Self::Sqlite(cwd.join(path)))
            }
            "postgres" | "postgresql" if rest.starts_with("//") => {
                error::keep_secret(text);
                Ok(Self::Postgres(text.to_owned()))
            }
            "http" | "https" if rest.starts_with("//") => {
                let authority = rest
                    .trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or_default();
                if authority.contains('@') {
                    error::keep_secret(text);
                    return Err(UsageError(format!(
                        "--catalog {}: put no credentials in a REST catalog's URL; set \
                         {REST_TOKEN} (a bearer token) or {REST_CREDENTIAL} (CLIENT_ID:SECRET)",
                        error::redact(text)
                    )));
                }
                Ok(Self::Rest(text.trim_end_matches('/').to_owned()))
            }
            _ => Err(UsageError(format!(
                "--catalog {}: unknown catalog; use sqlite:PATH (a file, created when missing), a \
                 postgres:// URL (Iceberg's SQL catalog) or an http(s):// REST catalog",
                error::redact(text)
            ))),
        }
    }

    /// As messages show it (no password).
    pub fn shown(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite:{}", path.display()),
            Self::Postgres(url) => error::redact(url),
            Self::Rest(url) => url.clone(),
        }
    }

    /// Connects (a SQLite file is created, with its folder), creating the catalog's tables when
    /// missing. A warehouse in S3 is checked first: wrong credentials or a missing bucket stop
    /// the run in one line, before anything is read or written.
    pub fn open(&self, warehouse: &Warehouse) -> Result<Arc<dyn Catalog>> {
        if let Warehouse::Store(at) = warehouse {
            let check = at.join(".export-events-check");
            at.store().check_write(check.key())?;
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
            Self::Rest(url) => return rest(url, warehouse),
        };
        let builder = SqlCatalogBuilder::default()
            .uri(uri)
            .warehouse_location(warehouse.location())
            .sql_bind_style(style)
            .with_storage_factory(Arc::new(crate::store::iceberg::WarehouseStorageFactory));
        let catalog = runtime()
            .block_on(builder.load(CATALOG_NAME, HashMap::new()))
            .with_context(|| format!("opening catalog {}", self.shown()))?;
        Ok(Arc::new(catalog))
    }
}

/// The REST catalog at `url`, asked for its namespaces now, so that a wrong URL or secret stops
/// the run before anything is read. `--warehouse`, when given, is sent as the catalog's
/// `warehouse` (the name or location of one of its warehouses); the catalog places new tables.
/// Their files are reached as for SQL catalogs: a local path, or S3 with the AWS settings.
fn rest(url: &str, warehouse: &Warehouse) -> Result<Arc<dyn Catalog>> {
    let mut props = HashMap::from([(REST_CATALOG_PROP_URI.to_owned(), url.to_owned())]);
    if let Warehouse::Catalog(Some(warehouse)) = warehouse {
        props.insert(REST_CATALOG_PROP_WAREHOUSE.to_owned(), warehouse.clone());
    }
    for (variable, property) in [(REST_TOKEN, "token"), (REST_CREDENTIAL, "credential")] {
        if let Ok(secret) = std::env::var(variable) {
            error::keep_secret(&secret);
            props.insert(property.to_owned(), secret);
        }
    }
    let builder = RestCatalogBuilder::default()
        .with_storage_factory(Arc::new(crate::store::iceberg::WarehouseStorageFactory));
    let catalog = runtime().block_on(async {
        let catalog = builder.load(CATALOG_NAME, props).await?;
        catalog.list_namespaces(None).await.map(|_| catalog)
    });
    let catalog = catalog.map_err(|e| {
        let text = rest_error(&error::redact(&e.to_string()));
        anyhow::anyhow!(
            "catalog {url}: {text}; check the URL, and {REST_TOKEN} or {REST_CREDENTIAL} if it \
             needs a secret"
        )
    })?;
    Ok(Arc::new(catalog))
}

/// A REST catalog's refusal as its status and message (the client's error text carries every
/// response header besides); other errors as they are.
fn rest_error(text: &str) -> String {
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next());
    let message = text
        .split("\"message\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next());
    match (status, message) {
        (Some(status), Some(message)) => format!("{status}: {message}"),
        (Some(status), None) => status.to_owned(),
        _ => text.to_owned(),
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
    catalog: &dyn Catalog,
    ident: &TableIdent,
    schema: &ArrowSchema,
    layout: Layout,
) -> Result<Table> {
    let shown = super::dotted(ident);
    let wanted = iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(schema)
        .context("the event model as an Iceberg schema")?;
    let (column, _, transform) = layout.partition;
    let existing = |table: Table| {
        super::existing::check(table, &wanted, (column, transform), layout.chosen, &shown)
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
            let creation = creation(ident, &wanted, layout)?;
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

/// A new table of `wanted`'s columns, partitioned and sorted as `layout` says.
fn creation(
    ident: &TableIdent,
    wanted: &iceberg::spec::Schema,
    layout: Layout,
) -> Result<TableCreation> {
    let (column, name, transform) = layout.partition;
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
    let order = order.build(wanted)?;
    Ok(TableCreation::builder()
        .name(ident.name().to_owned())
        .schema(wanted.clone())
        .partition_spec(spec)
        .sort_order(order)
        .properties([(
            "write.parquet.compression-codec".to_owned(),
            "zstd".to_owned(),
        )])
        .build())
}

/// Buckets of `--partition-by rule`: a few files per export, whatever the number of rules.
const RULE_BUCKETS: u32 = 16;

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
            ("http://user:pw@rest:8181", "put no credentials"),
            ("mysql://x@y/z", "unknown catalog"),
            ("sqlite:", "give the SQLite file's path"),
            ("sqlite:x.db?mode=ro", "give the SQLite file's path"),
        ] {
            let err = CatalogSpec::parse(text, cwd).unwrap_err().0;
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn a_rest_refusal_is_its_status_and_message() {
        let text = "Unexpected, context: { status: 401 Unauthorized, headers: {\"vary\": \"x\"}, \
                    json: {\"error\":{\"code\":401,\"message\":\"Needs a credential.\"}} }";
        assert_eq!(rest_error(text), "401 Unauthorized: Needs a credential.");
        assert_eq!(rest_error("connection refused"), "connection refused");
    }
}
