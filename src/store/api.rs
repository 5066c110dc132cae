//! What every store offers: the one interface that files, pairs, datasets, manifests, retention,
//! journals, change files and the Iceberg storage adapter are built on. A store is a local
//! folder tree or an object storage bucket; callers hold a key and never ask which.
//!
//! Keys are `/`-separated: a local store's are absolute paths, a bucket's are object keys.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use super::file::{AtomicFile, Body, Written};
use super::lock::{RunLock, Wait};
use crate::confine::Refused;
use crate::error::UsageError;

/// The marker inside every dataset folder (or prefix) export-events writes, holding the token
/// of the run that staged it: tells a new dataset from the one it replaced when a killed commit
/// is completed, and a folder of ours (which a later run may replace) from anyone else's, even
/// with no manifest beside it (the second format's folder, or a commit killed after the old
/// manifest was removed). Readers skip it: hidden, and no data file's extension.
pub const DATASET_MARKER: &str = ".export-events-dataset";

/// What the manifest of the output `x` is named: `x.manifest.json` (a dataset is ours when one
/// is beside it).
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// A place outputs go.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// How `key` is shown to users: its path, or its URL.
    fn url(&self, key: &str) -> String;

    /// What can be checked of a target at `key` without any server: refuses in one line what
    /// cannot be written there (`given` says how the user named it).
    fn check(&self, key: &str, kind: Kind, given: &Given) -> Result<(), UsageError>;
    /// Whether writing at `key` is allowed (credentials, bucket, permission): before any row is
    /// read, so a wrong key fails fast.
    fn check_write(&self, key: &str) -> Result<()>;

    /// Starts a file at `key`: nothing there changes until the commit puts it in place.
    fn create_file(&self, key: &str, options: &Options) -> Result<Box<dyn Body>>;
    /// Starts a dataset (a folder of part files) at `key`, refusing one export-events did not
    /// write.
    fn create_dir(&self, key: &str, options: &Options) -> Result<Box<dyn StagedDir>>;
    /// Prepares a group commit of `staged` (all in this store): whatever lets it complete after
    /// a SIGKILL, or be undone after a failure.
    fn prepare_commit(&self, staged: &[Staged]) -> Result<Box<dyn Prepared>>;

    /// The whole file at `key`; `None` when there is none.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// The size and SHA-256 (hex) of the file at `key`, read as a stream; `None` if missing.
    fn hash(&self, key: &str) -> Result<Option<(u64, String)>>;
    /// Whether a file (or a dataset) is at `key`.
    fn exists(&self, key: &str) -> Result<bool>;
    /// The names of the files directly in the folder `key` (hidden ones included).
    fn list(&self, folder: &str) -> Result<Vec<String>>;
    /// Removes the file at `key`; a missing one is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// Removes the folder `key` if it is empty (where folders exist).
    fn prune(&self, folder: &str);
    /// Removes whatever is at `key`: a file or a dataset, and unfinished uploads there. Returns
    /// whether anything was.
    fn remove_all(&self, key: &str) -> Result<bool>;
    /// `name`, read back from a file in `folder` (a manifest, a state), as a key inside
    /// `folder`: a plain relative name that reaches nothing outside it (through no symlink).
    fn confine(&self, folder: &str, name: &str) -> Result<String, Refused>;
    /// Refuses a file at `key` that another user put there (a manifest planted in a shared
    /// folder): only this user's files may steer what a run deletes. In a bucket every object is
    /// its credentials' own.
    fn owned(&self, key: &str) -> Result<(), Refused>;

    /// One run at a time per output: a lock for `key` (`what` names it in messages).
    fn lock(&self, key: &str, what: &str, wait: Wait) -> Result<RunLock>;
    /// Makes the outputs at `keys` whole again after a killed run, for the holder of their
    /// locks: completes interrupted commits, removes temporaries and aborts unfinished uploads
    /// at or under them (an object store also aborts, best effort, the uploads of any process
    /// that is gone, whatever output they were for).
    fn recover(&self, keys: &[&str]) -> Result<()>;
    /// The hidden files killed runs of a `{time}` template left in `folder` (runs whose file
    /// names start with `prefix` and a stamp), grouped by run: each run whose files no live run
    /// holds is recovered. `current` are this run's own targets, left alone.
    fn recover_runs(&self, folder: &str, prefix: &str, current: &[&str]) -> Result<()>;
    /// Where the rows a run reads ahead for the output at `key` wait (spool files, the sort's
    /// spill): hidden temporaries beside this local path's name, removed on every exit and by
    /// [`Self::recover`] or the sweep of dead processes after a SIGKILL.
    fn scratch(&self, key: &str) -> PathBuf;
    /// A local folder where export-events keeps what it needs beside the thing at `key`
    /// (a table's lock and pending records), named `name`, out of the thing's own files.
    fn private_folder(&self, key: &str, name: &str) -> PathBuf;
    /// Whether the store can do `feature`.
    fn supports(&self, feature: Feature) -> bool;

    /// The store as the `iceberg` crate's storage, for a table's files.
    fn iceberg(&self) -> Arc<dyn iceberg::io::Storage>;
}

/// What is to be written at a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One file.
    File,
    /// A dataset: a folder of part files.
    Dataset,
    /// A folder of files the tool names itself (change files).
    Folder,
}

/// How the user named a target, for refusals.
#[derive(Debug, Clone)]
pub struct Given {
    /// The option (`--output`, `--state`).
    pub flag: &'static str,
    /// The text given, or `None` for the default (whose folder the tool may create).
    pub text: Option<String>,
    /// The default file name, to suggest one.
    pub default_name: String,
}

/// How a file or dataset is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Permissions of the files (folders the tool creates get the matching execute bits).
    pub mode: u32,
    /// Whether writing may create the folder (a default path), or it must exist.
    pub create_folder: bool,
    /// The file's final name is known only at the end ([`AtomicFile::retarget`]): staged
    /// under a hidden name wherever staging is visible.
    pub named_later: bool,
}

/// What a store may not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Deleting earlier runs' outputs (`--keep`), which finds them by listing their manifests
    /// and recovers killed runs by their hidden files.
    Retention,
    /// Holding an incremental state file, which is loaded, locked and replaced in place.
    StateFile,
}

/// An output complete under its staging name, ready to be put in place. A run stages a handful:
/// boxing files would only add an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Staged {
    File(AtomicFile),
    Dir(Box<dyn StagedDir>),
}

/// A dataset being written: part files staged until the commit puts them all in place.
pub trait StagedDir: Send {
    /// The dataset's key.
    fn target(&self) -> &str;
    /// Where a part at `relative` (`date=2026-02-01/part-0.csv`) is written.
    fn part_key(&self, relative: &str) -> String;
    /// Keeps a finished part.
    fn add(&mut self, file: AtomicFile) -> Result<()>;
    /// Makes every part durable (or uploaded).
    fn sync(&mut self) -> Result<()>;
    /// Its files, at their final keys.
    fn records(&self) -> Vec<Written>;
    /// The staged folder's hidden name and its marker's token, for a commit journal.
    fn staged(&self) -> Option<(String, String)>;
    /// Puts the whole dataset at its target.
    fn put_in_place(self: Box<Self>) -> std::io::Result<()>;
}

/// A group commit made ready by its store: undone if a put fails, finished once all are in place.
pub trait Prepared {
    /// Puts back what the first `done` outputs replaced.
    fn restore(&self, done: usize);
    /// Makes the new names durable and drops what only served the commit.
    fn finish(self: Box<Self>);
}

impl Staged {
    /// What the output holds, at its final keys (known before the commit: the manifest,
    /// committed last, lists them).
    pub fn records(&self) -> Vec<Written> {
        match self {
            Staged::File(f) => vec![f.written()],
            Staged::Dir(d) => d.records(),
        }
    }

    /// Its key.
    pub fn target(&self) -> &str {
        match self {
            Staged::File(f) => f.target(),
            Staged::Dir(d) => d.target(),
        }
    }

    /// Makes it durable (or uploaded).
    pub fn sync(&mut self) -> Result<()> {
        match self {
            Staged::File(f) => f.sync(),
            Staged::Dir(d) => d.sync(),
        }
    }

    /// Puts it in place.
    pub fn put_in_place(self) -> std::io::Result<()> {
        match self {
            Staged::File(f) => f.put_in_place(),
            Staged::Dir(d) => d.put_in_place(),
        }
    }
}
