//! Apache Iceberg tables as an output: `--output iceberg:NAMESPACE.TABLE`, named in a catalog
//! (`--catalog`, [`catalog`]) with its files in a warehouse (`--warehouse`). Readers that know
//! Iceberg (Spark, Trino, DuckDB, pyiceberg) then see one table with a schema, partitions and
//! snapshots, instead of globbing folders.
//!
//! How a run is whole or absent: its data files go to a folder of its own under the table's
//! `data/` ([`writer`]), recorded before the first is written ([`pending`]); the catalog commit,
//! one snapshot made by compare-and-swap of the table's metadata, is the only moment readers can
//! see them. A run that dies before it leaves an unreferenced folder, which the next run
//! (holding the table's lock) removes; one that dies after leaves only its record, dropped.

pub mod catalog;
pub mod check;
pub mod commit;
pub mod pending;
pub mod storage;
pub mod writer;

use std::path::{Path, PathBuf};

use iceberg::table::Table;
use iceberg::{NamespaceIdent, TableIdent};

use crate::error::UsageError;
use catalog::CatalogSpec;

/// How `--output` names a table.
pub const SCHEME: &str = "iceberg:";

/// The table an export writes, resolved from the command line.
#[derive(Debug)]
pub struct TableOutput {
    pub ident: TableIdent,
    pub catalog: CatalogSpec,
    pub warehouse: Warehouse,
}

/// Where new tables' files go (`--warehouse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warehouse {
    /// A local folder, absolute.
    Local(PathBuf),
    /// `s3://bucket/prefix`, reached with the AWS settings of `s3://` outputs.
    S3 { bucket: String, prefix: String },
    /// A REST catalog's: it places new tables itself; `--warehouse`, when given, is passed to it
    /// as written (the name or location of one of its warehouses).
    Catalog(Option<String>),
}

impl Warehouse {
    /// A folder (relative to `cwd`) or `s3://bucket[/prefix]`.
    fn parse(warehouse: &Path, cwd: &Path) -> Result<Self, UsageError> {
        let text = warehouse.to_string_lossy();
        if let Some(rest) = text.strip_prefix("s3://") {
            let rest = rest.trim_end_matches('/');
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let part = |p: &str| !p.is_empty() && p != "." && p != "..";
            let valid = part(bucket) && (prefix.is_empty() || prefix.split('/').all(part));
            if !valid {
                return Err(UsageError(format!(
                    "--warehouse {text}: give a bucket and a prefix, such as s3://lake/warehouse"
                )));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if text.contains("://") {
            return Err(UsageError(format!(
                "--warehouse {text}: give a local folder (such as exports/lake) or \
                 s3://bucket/prefix"
            )));
        }
        Ok(Self::Local(cwd.join(warehouse)))
    }

    /// As the catalog records it: the folder's path, or the `s3://` URL.
    pub fn location(&self) -> String {
        match self {
            Self::Catalog(warehouse) => warehouse.clone().unwrap_or_default(),
            Self::Local(path) => path.display().to_string(),
            Self::S3 { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}"),
            Self::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

impl TableOutput {
    /// `--output iceberg:NS.TABLE` with `--catalog` and `--warehouse`; `None` for any other
    /// output (which may then take neither flag).
    pub fn resolve(
        output: Option<&Path>,
        catalog: Option<&str>,
        warehouse: Option<&Path>,
        cwd: &Path,
    ) -> Result<Option<Self>, UsageError> {
        let name = output
            .map(|o| o.to_string_lossy())
            .and_then(|o| o.strip_prefix(SCHEME).map(str::to_owned));
        let Some(name) = name else {
            if catalog.is_some() || warehouse.is_some() {
                return Err(UsageError(
                    "--catalog and --warehouse name an Iceberg table: use them with --output \
                     iceberg:NAMESPACE.TABLE"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let ident = parse_ident(&name)?;
        let catalog = catalog.ok_or_else(|| {
            UsageError(format!(
                "--output {SCHEME}{name} needs --catalog: sqlite:PATH (a file, created when \
                 missing) or a postgres:// URL"
            ))
        })?;
        let catalog = CatalogSpec::parse(catalog, cwd)?;
        if let CatalogSpec::Rest(_) = catalog {
            let warehouse = warehouse.map(|w| w.to_string_lossy().into_owned());
            return Ok(Some(Self {
                ident,
                catalog,
                warehouse: Warehouse::Catalog(warehouse),
            }));
        }
        let warehouse = warehouse.ok_or_else(|| {
            UsageError(format!(
                "--output {SCHEME}{name} needs --warehouse: the folder that holds the table's \
                 files, such as exports/lake"
            ))
        })?;
        Ok(Some(Self {
            ident,
            catalog,
            warehouse: Warehouse::parse(warehouse, cwd)?,
        }))
    }

    /// `iceberg:hub.events`, as the user wrote it.
    pub fn shown(&self) -> String {
        format!("{SCHEME}{}", dotted(&self.ident))
    }

    /// Where export-events keeps what it needs beside the tables of this warehouse (locks and
    /// pending records), out of every table's location: in a local warehouse, its
    /// `.export-events/<table>` folder; for one in S3 or a REST catalog's, a folder of this
    /// machine's state (as S3 outputs keep their upload journals).
    pub fn own_folder(&self) -> PathBuf {
        match &self.warehouse {
            Warehouse::Local(path) => path.join(".export-events").join(dotted(&self.ident)),
            Warehouse::S3 { .. } | Warehouse::Catalog(_) => crate::sink::object::local_name(
                &format!(
                    "{} {} {}",
                    self.catalog.shown(),
                    self.warehouse.location(),
                    dotted(&self.ident)
                ),
                "table",
            ),
        }
    }
}

/// `hub.events`.
pub fn dotted(ident: &TableIdent) -> String {
    let mut parts = ident.namespace().clone().inner();
    parts.push(ident.name().to_owned());
    parts.join(".")
}

/// The rows the table's current snapshot holds, from its summary (unknown: treated as some).
pub fn rows_in(table: &Table) -> Option<(u64, i64)> {
    let snapshot = table.metadata().current_snapshot()?;
    let rows = snapshot
        .summary()
        .additional_properties
        .get("total-records")
        .and_then(|r| r.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    (rows > 0).then_some((rows, snapshot.snapshot_id()))
}

/// `N rows`, or `rows` when the summary does not say how many.
pub fn holds(rows: u64) -> String {
    match rows {
        u64::MAX => "rows".to_owned(),
        n => format!("{n} rows"),
    }
}

/// `NAMESPACE.TABLE` (a namespace may itself have dots: `lake.hub.events`): parts of letters,
/// digits and underscores, so that no name becomes a path of its own choosing.
fn parse_ident(name: &str) -> Result<TableIdent, UsageError> {
    let parts: Vec<&str> = name.split('.').collect();
    let valid = |part: &&str| {
        !part.is_empty()
            && part.len() <= 128
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if parts.len() < 2 || !parts.iter().all(valid) {
        return Err(UsageError(format!(
            "--output {SCHEME}{name}: name a table as {SCHEME}NAMESPACE.TABLE (letters, digits \
             and underscores, such as {SCHEME}hub.events)"
        )));
    }
    let (table, namespace) = parts.split_last().expect("two parts or more");
    let namespace = NamespaceIdent::from_strs(namespace.iter())
        .map_err(|e| UsageError(format!("--output {SCHEME}{name}: {e}")))?;
    Ok(TableIdent::new(namespace, (*table).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(
        output: &str,
        catalog: Option<&str>,
        warehouse: Option<&str>,
    ) -> Result<Option<TableOutput>, UsageError> {
        TableOutput::resolve(
            Some(Path::new(output)),
            catalog,
            warehouse.map(Path::new),
            Path::new("/work"),
        )
    }

    #[test]
    fn a_table_is_named_by_its_namespace_and_name() {
        let table = resolve(
            "iceberg:lake.hub.events",
            Some("sqlite:lake.db"),
            Some("wh"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(table.shown(), "iceberg:lake.hub.events");
        assert_eq!(table.ident.name(), "events");
        assert_eq!(table.warehouse, Warehouse::Local("/work/wh".into()));
        let table = resolve(
            "iceberg:hub.events",
            Some("sqlite:l.db"),
            Some("s3://lake/wh/"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(table.warehouse.location(), "s3://lake/wh");
        // A REST catalog places tables itself: --warehouse is optional, passed as written.
        let rest = resolve("iceberg:hub.events", Some("https://cat/api"), None)
            .unwrap()
            .unwrap();
        assert_eq!(rest.warehouse, Warehouse::Catalog(None));
    }

    #[test]
    fn bad_names_and_missing_flags_are_refused_in_one_line() {
        for (output, catalog, warehouse, says) in [
            (
                "iceberg:events",
                Some("sqlite:x"),
                Some("w"),
                "NAMESPACE.TABLE",
            ),
            (
                "iceberg:a..b",
                Some("sqlite:x"),
                Some("w"),
                "NAMESPACE.TABLE",
            ),
            (
                "iceberg:../x.y",
                Some("sqlite:x"),
                Some("w"),
                "NAMESPACE.TABLE",
            ),
            ("iceberg:a.b", None, Some("w"), "needs --catalog"),
            ("iceberg:a.b", Some("sqlite:x"), None, "needs --warehouse"),
            (
                "iceberg:a.b",
                Some("sqlite:x"),
                Some("gs://b/w"),
                "give a local folder",
            ),
            (
                "iceberg:a.b",
                Some("sqlite:x"),
                Some("s3://b/../w"),
                "give a bucket and a prefix",
            ),
            (
                "x.csv",
                Some("sqlite:x"),
                None,
                "use them with --output iceberg:",
            ),
        ] {
            let err = resolve(output, catalog, warehouse).unwrap_err().0;
            assert!(err.contains(says), "{output}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(resolve("x.csv", None, None).unwrap().is_none());
    }
}
