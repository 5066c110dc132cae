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
mod existing;
pub mod pending;
pub mod writer;

use std::path::{Path, PathBuf};

use iceberg::table::Table;
use iceberg::{NamespaceIdent, TableIdent};

use crate::error::UsageError;
use crate::store::Location;
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
#[derive(Debug, Clone)]
pub enum Warehouse {
    /// A folder, or a bucket's prefix (reached with the AWS settings of `s3://` outputs).
    Store(Location),
    /// A REST catalog's: it places new tables itself; `--warehouse`, when given, is passed to it
    /// as written (the name or location of one of its warehouses).
    Catalog(Option<String>),
}

impl Warehouse {
    /// As the catalog records it: the folder's path, or the bucket's URL.
    pub fn location(&self) -> String {
        match self {
            Self::Catalog(warehouse) => warehouse.clone().unwrap_or_default(),
            Self::Store(at) => at.shown(),
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
        let warehouse = crate::store::url::locate_folder(&warehouse.to_string_lossy(), cwd)
            .map_err(|e| UsageError(format!("--warehouse {}", e.0)))?;
        Ok(Some(Self {
            ident,
            catalog,
            warehouse: Warehouse::Store(warehouse),
        }))
    }

    /// `iceberg:hub.events`, as the user wrote it.
    pub fn shown(&self) -> String {
        format!("{SCHEME}{}", dotted(&self.ident))
    }

    /// Where export-events keeps what it needs beside this table (its lock and pending
    /// records), out of every table's location: the warehouse store's private folder for it (a
    /// local warehouse's `.export-events/<table>`, or a folder of this machine's state); for a
    /// REST catalog's table, a folder of this machine's state.
    pub fn own_folder(&self) -> PathBuf {
        match &self.warehouse {
            Warehouse::Store(at) => at.store().private_folder(at.key(), &dotted(&self.ident)),
            Warehouse::Catalog(_) => crate::store::scratch::state_file(
                &format!("{} {}", self.catalog.shown(), self.warehouse.location()),
                "warehouse",
            )
            .join(dotted(&self.ident)),
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
pub(super) fn parse_ident(name: &str) -> Result<TableIdent, UsageError> {
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
        assert_eq!(table.warehouse.location(), "/work/wh");
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
        assert!(matches!(rest.warehouse, Warehouse::Catalog(None)));
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
