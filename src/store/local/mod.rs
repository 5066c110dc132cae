//! The local file system as a store. A file appears whole or not at all: it is written under a
//! hidden temporary name beside its target ([`file`]), fsynced and renamed into place; a
//! dataset is a hidden folder swapped in whole ([`dir`]); a group of them changes together
//! through a journal of the renames ([`journal`]). The next holder of an output's lock
//! completes what a killed run left and removes its temporaries, all named after their target
//! ([`names`]).

mod checks;
mod dir;
mod file;
mod journal;
mod names;
mod table_io;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use sha2::{Digest as _, Sha256};

pub use file::create_new;
pub use names::beside;

use crate::confine::{self, Refused};
use crate::error::UsageError;
use crate::store::api::{
    Feature, Given, Kind, Options, Prepared, Staged, StagedDir, Store, MANIFEST_SUFFIX,
};
use crate::store::file::Body;
use crate::store::hash::hex;
use crate::store::lock::{RunLock, Wait};
use crate::template;

/// The local file system.
#[derive(Debug, Default)]
pub struct LocalStore;

impl Store for LocalStore {
    fn url(&self, key: &str) -> String {
        key.to_owned()
    }

    fn check(&self, key: &str, kind: Kind, given: &Given) -> Result<(), UsageError> {
        checks::check(Path::new(key), kind, given)
    }

    fn check_write(&self, _key: &str) -> Result<()> {
        Ok(())
    }

    fn create_file(&self, key: &str, options: &Options) -> Result<Box<dyn Body>> {
        Ok(Box::new(file::LocalBody::create(Path::new(key), options)?))
    }

    fn create_dir(&self, key: &str, options: &Options) -> Result<Box<dyn StagedDir>> {
        Ok(Box::new(dir::AtomicDir::create(Path::new(key), options)?))
    }

    fn prepare_commit(&self, staged: &[Staged]) -> Result<Box<dyn Prepared>> {
        Ok(Box::new(journal::LocalCommit::prepare(staged)?))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match std::fs::read(key) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {key}")),
        }
    }

    fn hash(&self, key: &str) -> Result<Option<(u64, String)>> {
        let mut file = match std::fs::File::open(key) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let (mut hash, mut size) = (Sha256::new(), 0u64);
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buffer)? {
                0 => break,
                n => {
                    hash.update(&buffer[..n]);
                    size += n as u64;
                }
            }
        }
        Ok(Some((size, hex(&hash.finalize()))))
    }

    fn exists(&self, key: &str) -> Result<bool> {
        Ok(Path::new(key).exists())
    }

    fn list(&self, folder: &str) -> Result<Vec<String>> {
        let Ok(entries) = std::fs::read_dir(folder) else {
            return Ok(Vec::new());
        };
        Ok(entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        match std::fs::remove_file(key) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {key}"))
            }
            _ => Ok(()),
        }
    }

    fn prune(&self, folder: &str) {
        let _ = std::fs::remove_dir(folder);
    }

    fn remove_all(&self, key: &str) -> Result<bool> {
        let path = Path::new(key);
        journal::recover(&[path])?;
        if !path.exists() {
            return Ok(false);
        }
        let removed = match path.is_dir() {
            true => std::fs::remove_dir_all(path),
            false => std::fs::remove_file(path),
        };
        removed.with_context(|| format!("removing {key}"))?;
        Ok(true)
    }

    fn confine(&self, folder: &str, name: &str) -> Result<String, Refused> {
        confine::inside(Path::new(folder), name).map(|p| p.display().to_string())
    }

    fn owned(&self, key: &str) -> Result<(), Refused> {
        confine::owned_by_us(Path::new(key))
    }

    fn lock(&self, key: &str, what: &str, wait: Wait) -> Result<RunLock> {
        RunLock::acquire(&names::lock_of(Path::new(key)), what, wait)
    }

    fn recover(&self, keys: &[&str]) -> Result<()> {
        let paths: Vec<&Path> = keys.iter().map(Path::new).collect();
        journal::recover(&paths).map(drop)
    }

    fn recover_runs(&self, folder: &str, prefix: &str, current: &[&str]) -> Result<()> {
        recover_runs(Path::new(folder), prefix, current)
    }

    fn scratch(&self, key: &str) -> PathBuf {
        PathBuf::from(key)
    }

    fn private_folder(&self, key: &str, name: &str) -> PathBuf {
        Path::new(key).join(".export-events").join(name)
    }

    fn supports(&self, _feature: Feature) -> bool {
        true
    }

    fn iceberg(&self) -> Arc<dyn iceberg::io::Storage> {
        Arc::new(table_io::LocalTableStorage)
    }
}

/// Makes whole what killed runs of the same `{time}` template left in `folder`: each run has
/// its own file names, so no later run of the output would ever lock them again, and a SIGKILL
/// would leave its staged files (and a half-done pair) for ever. Every hidden file named after
/// a run of the template (a temporary, a journal, a lock) is grouped by its run's stamp; a run
/// whose files no live process holds locked (its targets and, for a manifest, its output) is
/// recovered as one group: its commit completed, its temporaries removed.
fn recover_runs(folder: &Path, prefix: &str, current: &[&str]) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Ok(());
    };
    let mut runs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(target) = file.strip_prefix('.').and_then(names::target_of_hidden) else {
            continue;
        };
        let Some((stamp, _)) = target.strip_prefix(prefix).and_then(template::split_stamp) else {
            continue;
        };
        let path = folder.join(target).display().to_string();
        if !target.contains('/') && !current.contains(&path.as_str()) {
            runs.entry(stamp.to_owned())
                .or_default()
                .insert(target.to_owned());
        }
    }
    for names in runs.values() {
        let mut locked = BTreeSet::new();
        for name in names {
            locked.insert(name.clone());
            if let Some(output) = name.strip_suffix(MANIFEST_SUFFIX) {
                locked.insert(output.to_owned());
            }
        }
        // A run still alive holds its locks: its files are left alone.
        let locks: Result<Vec<RunLock>> = locked
            .iter()
            .map(|n| {
                let target = folder.join(n);
                RunLock::acquire(
                    &names::lock_of(&target),
                    &target.display().to_string(),
                    Wait::No,
                )
            })
            .collect();
        let Ok(_locks) = locks else {
            continue;
        };
        let paths: Vec<PathBuf> = names.iter().map(|n| folder.join(n)).collect();
        journal::recover(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    }
    Ok(())
}
