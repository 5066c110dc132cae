//! Runs that may have left data files in a table: each run records its id before it writes a
//! data file and drops the record once its snapshot is committed or its files are removed.
//!
//! A record is an empty file named by the run's id (a UUID) in the warehouse's
//! `.export-events/<table>/pending/` folder, out of the table's location. Nothing is taken from
//! its contents: the data folder it stands for is always `<table location>/data/run-<id>`, so
//! an edited or planted record can only name a run folder of this table. The next run, holding
//! the table's lock (so no live run is mid-write), settles every record ([`settle`]): a run
//! whose snapshot is in the table was committed, and keeps its files; any other run's folder is
//! removed, unless a committed snapshot references a file in it (its snapshot may have been
//! expired from the metadata while its files live on).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use iceberg::spec::ManifestList;
use iceberg::table::Table;
use uuid::Uuid;

use crate::runtime::runtime;

/// The snapshot summary property that names the run which committed a snapshot.
pub const RUN_PROPERTY: &str = "export-events.run";

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
            }
        }
        std::fs::remove_file(entry.path())
            .with_context(|| format!("removing {}", entry.path().display()))?;
    }
    Ok(())
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
