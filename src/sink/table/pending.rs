//! Runs that may have left data files in a table: each run records its id before it writes a
//! data file and drops the record once its snapshot is committed or its files are removed.
//!
//! A record is an empty file named by the run's id (a UUID) in the warehouse's
//! `.export-events/<table>/pending/` folder, out of the table's location. Nothing is taken from
//! its contents: the data folder it stands for is always `<table location>/data/run-<id>`, so
//! an edited or planted record can only name a run folder of this table. The next run, holding
//! the table's lock (so no live run is mid-write), settles every record ([`settle`]): a run
//! whose snapshot is in the table was committed, and keeps its files; any other run's folder is
//! removed (and its unfinished uploads aborted), unless a committed snapshot references a file
//! in it (its snapshot may have been expired from the metadata while its files live on). A run
//! into any table of the warehouse also settles, best effort, the records of the others whose
//! lock is free ([`settle_neighbours`]): a table that is never written again keeps nothing a
//! killed run left.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use iceberg::spec::ManifestList;
use iceberg::table::Table;
use iceberg::Catalog;
use uuid::Uuid;

use crate::runtime::runtime;
use crate::store::{url, RunLock, Wait};

/// The snapshot summary property that names the run which committed a snapshot.
pub const RUN_PROPERTY: &str = "export-events.run";

/// The table's lock, in its private folder `own`: one writer at a time per table, export or
/// change feed, and a settling neighbour only where no run holds it.
pub fn lock(own: &Path, shown: &str, wait: Wait) -> Result<RunLock> {
    RunLock::acquire(&own.join("lock"), shown, wait)
}

/// This run's record. A run that fails before its commit [`abandon`](Record::abandon)s it; one
/// that dies leaves it to the next run's [`settle`].
pub struct Record {
    path: PathBuf,
    pub id: Uuid,
}

impl Record {
    /// Records a new run before it writes anything.
    pub fn create(own: &Path) -> Result<Self> {
        let folder = own.join("pending");
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating folder {}", folder.display()))?;
        let id = Uuid::new_v4();
        let path = folder.join(id.to_string());
        let file = std::fs::File::create(&path)
            .with_context(|| format!("recording the run in {}", path.display()))?;
        file.sync_all()?;
        sync_folder(&folder)?;
        Ok(Self { path, id })
    }

    /// The folder of this run's data files in `table`.
    pub fn data_folder(&self, table: &Table) -> String {
        data_folder(table, &self.id)
    }

    /// Drops the record: the run's files are committed.
    pub fn finish(self) -> Result<()> {
        std::fs::remove_file(&self.path)
            .with_context(|| format!("removing {}", self.path.display()))
    }

    /// Removes the run's data files, then the record: the run failed before its commit. What
    /// cannot be removed now stays recorded, for the next run.
    pub fn abandon(self, table: &Table) {
        let data = self.data_folder(table);
        if runtime()
            .block_on(table.file_io().delete_prefix(&data))
            .is_ok()
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn data_folder(table: &Table, id: &Uuid) -> String {
    format!(
        "{}/data/run-{id}",
        table.metadata().location().trim_end_matches('/')
    )
}

/// Settles what earlier runs recorded: removes the data folders of runs that did not commit,
/// then their records. Call with the table's lock held.
pub fn settle(own: &Path, table: &Table) -> Result<()> {
    let folder = own.join("pending");
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return Ok(());
    };
    let committed: HashSet<String> = table
        .metadata()
        .snapshots()
        .filter_map(|s| s.summary().additional_properties.get(RUN_PROPERTY).cloned())
        .collect();
    let mut referenced: Option<Vec<String>> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(id) = Uuid::parse_str(&name) else {
            continue; // not a record of ours
        };
        if !committed.contains(&id.to_string()) {
            let data = data_folder(table, &id);
            let files = match &referenced {
                Some(files) => files,
                None => referenced.insert(live_files(table)?),
            };
            let prefix = format!("{data}/");
            if !files.iter().any(|f| f.starts_with(&prefix)) {
                runtime()
                    .block_on(table.file_io().delete_prefix(&data))
                    .with_context(|| format!("removing {data}, left by an interrupted run"))?;
                let at = url::of_recorded(&data)?;
                at.store().recover(&[at.key()])?;
            }
        }
        std::fs::remove_file(entry.path())
            .with_context(|| format!("removing {}", entry.path().display()))?;
    }
    Ok(())
}

/// Settles, best effort, what killed runs left in the other tables of the warehouse whose
/// private folders are beside `own` (in the `warehouse` catalog records): each one's lock is
/// taken without waiting (a table being written is left alone), its records settled against
/// the table of that name in `catalog` if it lies in `warehouse`, and what its run read ahead
/// removed. Never fails the run: what cannot be settled now waits for that table's next run.
pub fn settle_neighbours(own: &Path, catalog: &dyn Catalog, warehouse: &str, quiet: bool) {
    let Some(Ok(entries)) = own.parent().map(std::fs::read_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let folder = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(ident) = super::parse_ident(&name) else {
            continue;
        };
        if folder == own || !has_leftovers(&folder) {
            continue;
        }
        let Ok(_lock) = lock(&folder, &name, Wait::No) else {
            continue;
        };
        let settled = (|| -> Result<()> {
            sweep_spool(&folder)?;
            if !runtime().block_on(catalog.table_exists(&ident))? {
                return Ok(());
            }
            let table = runtime().block_on(catalog.load_table(&ident))?;
            if table.metadata().location().starts_with(warehouse) {
                settle(&folder, &table)?;
            }
            Ok(())
        })();
        if let (Err(e), false) = (settled, quiet) {
            eprintln!(
                "export-events: what a killed run left in table {name} stays for its next run: {}",
                crate::error::one_line(&e)
            );
        }
    }
}

/// Whether a table's private folder holds anything a killed run left: records, a lock, or
/// what it read ahead.
fn has_leftovers(folder: &Path) -> bool {
    std::fs::read_dir(folder).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            name != "pending" || std::fs::read_dir(e.path()).is_ok_and(|mut r| r.next().is_some())
        })
    })
}

/// Removes the spool and spill files a killed run left in the private folder `own` (beside
/// its `export` path).
pub fn sweep_spool(own: &Path) -> Result<()> {
    let spool = url::local(&spool(own));
    spool.store().recover(&[spool.key()])
}

/// Where a run into the table of the private folder `own` spools what it reads ahead.
pub fn spool(own: &Path) -> PathBuf {
    own.join("export")
}

/// The data files the table's current snapshot references.
fn live_files(table: &Table) -> Result<Vec<String>> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(Vec::new());
    };
    let file_io = table.file_io();
    runtime()
        .block_on(async {
            let bytes = file_io.new_input(snapshot.manifest_list())?.read().await?;
            let list = ManifestList::parse_with_version(&bytes, table.metadata().format_version())?;
            let mut files = Vec::new();
            for manifest in list.entries() {
                let manifest = manifest.load_manifest(file_io).await?;
                files.extend(manifest.entries().iter().map(|e| e.file_path().to_owned()));
            }
            Ok::<_, iceberg::Error>(files)
        })
        .context("reading which data files the table references")
}

fn sync_folder(folder: &Path) -> Result<()> {
    std::fs::File::open(folder)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", folder.display()))
}
