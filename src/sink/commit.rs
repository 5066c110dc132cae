//! Putting finished outputs in place together: files and whole dataset folders, both or none.
//!
//! [`commit_all`] syncs everything, records the renames in a journal (synced) when there is more
//! than one, then renames each staged output over its target: a file by `rename`, a dataset
//! folder by `renameat2(RENAME_EXCHANGE)` when it replaces one (readers see the old folder or
//! the new, never a mix), the old one removed after. A failed rename puts back what was already
//! replaced. A signal cannot stop a commit half-way ([`crate::cancel`]); a SIGKILL can, and
//! [`recover`], run by the next holder of the output's lock, finishes it from the journal, then
//! removes what killed runs left beside the output.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::dataset::AtomicDir;
use super::file::{
    file_name, io_error, is_temporary_of, temp_prefix, AtomicFile, Written, TEMP_RANDOM,
    TEMP_SUFFIX,
};
use super::object_dir::ObjectDir;
use crate::fault;

/// An output complete under its temporary name, ready to be put in place.
pub enum Staged {
    File(AtomicFile),
    Dataset(AtomicDir),
    /// A dataset in object storage: uploads to complete, then the previous dataset's leftovers
    /// to remove.
    Objects(ObjectDir),
}

impl Staged {
    /// What the output holds, at its final paths (known before the commit: the manifest,
    /// committed last, lists them).
    pub fn records(&self) -> Vec<Written> {
        match self {
            Staged::File(f) => vec![f.written(f.target.clone())],
            Staged::Dataset(d) => d.records(),
            Staged::Objects(d) => d.records(),
        }
    }

    fn target(&self) -> &Path {
        match self {
            Staged::File(f) => &f.target,
            Staged::Dataset(d) => d.target(),
            Staged::Objects(d) => d.target(),
        }
    }

    /// Whether it goes to object storage (no journal, no rename: uploads are completed).
    fn remote(&self) -> bool {
        match self {
            Staged::File(f) => f.temp_path().is_none(),
            Staged::Dataset(_) => false,
            Staged::Objects(_) => true,
        }
    }

    fn entry(&self) -> Entry {
        match self {
            Staged::File(f) => Entry {
                temp: f.temp_path().unwrap_or(Path::new("")).to_owned(),
                target: f.target.clone(),
                token: None,
            },
            Staged::Dataset(d) => Entry {
                temp: d.path().to_owned(),
                target: d.target().to_owned(),
                token: Some(d.token().to_owned()),
            },
            Staged::Objects(d) => Entry {
                temp: PathBuf::new(),
                target: d.target().to_owned(),
                token: None,
            },
        }
    }
}

/// Syncs every output, then puts each in place; either all change or none does. Returns what
/// each file holds (a dataset's files one by one).
///
/// Object storage has no rename to journal: every upload is finished first, then completed in
/// order (each object appears whole, replacing the old one whole). The manifest, removed before
/// and completed last, is what tells readers the group is whole.
pub fn commit_all(mut staged: Vec<Staged>) -> Result<Vec<Written>> {
    for output in &mut staged {
        match output {
            Staged::File(f) => f.sync()?,
            Staged::Dataset(d) => d.sync()?,
            Staged::Objects(_) => {}
        }
    }
    let remote = staged.iter().any(Staged::remote);
    let journal = if staged.len() > 1 && !remote {
        Some(Journal::write(&staged)?)
    } else {
        None
    };
    let previous = staged
        .iter()
        .map(|s| match s {
            Staged::File(f) if !remote => Previous::keep(&f.target),
            _ => Ok(Previous::none(s.target())),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut written = Vec::new();
    let targets: Vec<PathBuf> = staged.iter().map(|s| s.target().to_owned()).collect();
    for (done, output) in staged.into_iter().enumerate() {
        if done == 1 {
            fault::point("commit.between-renames");
        }
        let target = targets[done].clone();
        let records = output.records();
        let result = match output {
            Staged::File(file) => file.put_in_place(),
            Staged::Dataset(dir) => dir.put_in_place(),
            Staged::Objects(dir) => dir.put_in_place(),
        };
        match result {
            Ok(()) => written.extend(records),
            Err(e) => {
                previous[..done].iter().for_each(Previous::restore);
                if let Some(journal) = &journal {
                    journal.remove();
                }
                return Err(e).with_context(|| {
                    format!("moving the finished output to {}", target.display())
                });
            }
        }
    }
    for folder in targets
        .iter()
        .filter_map(|t| t.parent())
        .filter(|_| !remote)
    {
        sync_folder(folder);
    }
    if let Some(journal) = journal {
        journal.remove();
    }
    Ok(written)
}

/// Makes `target` whole again after a killed run, for the holder of its lock (no other process
/// writes it): completes a commit that was interrupted between its renames (the journal names
/// finished, synced outputs), then removes temporary files and folders. Returns how many.
pub fn recover(target: &Path) -> Result<usize> {
    Journal::complete(target)?;
    let Some(folder) = target.parent() else {
        return Ok(0);
    };
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if is_temporary_of(&entry.file_name().to_string_lossy(), target) {
            let path = entry.path();
            let gone = match entry.file_type() {
                Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            gone.with_context(|| format!("removing {}", path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A rename is durable once its folder is synced (best effort where unsupported).
pub(super) fn sync_folder(folder: &Path) {
    let _ = File::open(folder).and_then(|f| f.sync_all());
}

/// One rename of a group commit.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    temp: PathBuf,
    target: PathBuf,
    /// For a dataset: the token of its staging marker, which tells the new folder from the old.
    token: Option<String>,
}

/// The renames of a group commit, written (and synced) before the first one:
/// `.{first target}.commit` beside the first target.
struct Journal {
    path: PathBuf,
}

impl Journal {
    fn path(target: &Path) -> PathBuf {
        target.with_file_name(format!(".{}.commit", file_name(target)))
    }

    fn write(staged: &[Staged]) -> Result<Self> {
        let entries: Vec<Entry> = staged.iter().map(Staged::entry).collect();
        let path = Self::path(staged[0].target());
        let text = serde_json::to_vec(&entries)?;
        let write = || -> io::Result<()> {
            let _ = std::fs::remove_file(&path);
            let mut file = create_new(&path)?;
            file.write_all(&text)?;
            file.sync_all()
        };
        write()
            .map_err(|e| io_error(e, &path))
            .with_context(|| format!("writing {}", path.display()))?;
        if let Some(folder) = path.parent() {
            sync_folder(folder);
        }
        Ok(Self { path })
    }

    /// Finishes the commit a killed run left in the journal of `target`, if any.
    fn complete(target: &Path) -> Result<()> {
        let path = Self::path(target);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        // A journal cut short was never acted on: no rename had started.
        if let Ok(entries) = serde_json::from_slice::<Vec<Entry>>(&text) {
            for entry in &entries {
                let done = match &entry.token {
                    None if entry.temp.exists() => std::fs::rename(&entry.temp, &entry.target),
                    None => Ok(()),
                    Some(token) => AtomicDir::complete(&entry.temp, &entry.target, token),
                };
                done.with_context(|| {
                    format!(
                        "completing the interrupted commit of {}",
                        entry.target.display()
                    )
                })?;
                if let Some(folder) = entry.target.parent() {
                    sync_folder(folder);
                }
            }
        }
        Self { path }.remove();
        Ok(())
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Creates `path` for writing, failing if anything (a symlink included) is already there.
pub(super) fn create_new(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The file a commit is about to replace, kept (as a hard link, `.{name}.previous.XXXXXX.tmp`)
/// until the commit succeeds.
struct Previous {
    target: PathBuf,
    kept: Option<tempfile::TempPath>,
    /// Whether there is something to put back (a file); datasets are swapped whole.
    file: bool,
}

impl Previous {
    fn none(target: &Path) -> Self {
        Self {
            target: target.to_owned(),
            kept: None,
            file: false,
        }
    }

    fn keep(target: &Path) -> Result<Self> {
        let kept = if target.is_file() {
            let folder = target.parent().unwrap_or(Path::new("/"));
            let link = tempfile::Builder::new()
                .prefix(&format!("{}previous.", temp_prefix(target)))
                .suffix(TEMP_SUFFIX)
                .rand_bytes(TEMP_RANDOM)
                .make_in(folder, |p| std::fs::hard_link(target, p))
                .with_context(|| {
                    format!(
                        "keeping {} until the new file is in place",
                        target.display()
                    )
                })?;
            Some(link.into_temp_path())
        } else {
            None
        };
        Ok(Self {
            target: target.to_owned(),
            kept,
            file: true,
        })
    }

    fn restore(&self) {
        if !self.file {
            return;
        }
        let _ = match &self.kept {
            Some(kept) => std::fs::rename(kept, &self.target),
            None => std::fs::remove_file(&self.target),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Target;

    #[test]
    fn recovery_removes_the_temporaries_of_its_target_only() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::resolve(Some(Path::new("a.csv")), "d.csv", dir.path()).unwrap();
        let mut left = AtomicFile::create(&target).unwrap();
        left.write_all(b"partial").unwrap();
        let partial = left.temp_path().unwrap().to_owned();
        std::mem::forget(left); // as if the process had been killed
        let other = dir.path().join(".b.csv.x.tmp");
        std::fs::write(&other, "other").unwrap();
        let longer = dir.path().join(".a.csv.gz.abcdef.tmp");
        std::fs::write(&longer, "another target's").unwrap();
        assert_eq!(recover(&target.path).unwrap(), 1);
        assert!(!partial.exists() && other.exists() && longer.exists());
    }

    #[test]
    fn nothing_appears_until_commit_and_an_abandoned_file_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::resolve(Some(Path::new("a.csv")), "d.csv", dir.path()).unwrap();
        std::fs::write(&target.path, "old").unwrap();
        let mut file = AtomicFile::create(&target).unwrap();
        file.write_all(b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target.path).unwrap(), "old");
        drop(file);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut file = AtomicFile::create(&target).unwrap();
        file.write_all(b"new").unwrap();
        commit_all(vec![Staged::File(file)]).unwrap();
        assert_eq!(std::fs::read_to_string(&target.path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_commit_killed_between_renames_is_completed_by_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let target =
            |name: &str| Target::resolve(Some(Path::new(name)), "d.csv", dir.path()).unwrap();
        let (a, b) = (target("a.csv"), target("a.parquet"));
        std::fs::write(&a.path, "old a").unwrap();
        std::fs::write(&b.path, "old b").unwrap();
        let mut files = vec![
            AtomicFile::create(&a).unwrap(),
            AtomicFile::create(&b).unwrap(),
        ];
        files[0].write_all(b"new a").unwrap();
        files[1].write_all(b"new b").unwrap();
        files.iter_mut().for_each(|f| f.sync().unwrap());
        // What commit_all does up to its first rename, then a SIGKILL.
        let staged: Vec<Staged> = files.into_iter().map(Staged::File).collect();
        let journal = Journal::write(&staged).unwrap();
        let mut files = staged.into_iter().map(|s| match s {
            Staged::File(f) => f,
            _ => unreachable!(),
        });
        files.next().unwrap().put_in_place().unwrap();
        let unrenamed = match files.next().unwrap().body {
            super::super::file::Body::Local(temp) => temp.into_temp_path().keep().unwrap(),
            super::super::file::Body::Object(_) => unreachable!(),
        };
        assert_eq!(std::fs::read_to_string(&a.path).unwrap(), "new a");
        assert_eq!(std::fs::read_to_string(&b.path).unwrap(), "old b");
        assert!(journal.path.exists() && unrenamed.exists());
        recover(&a.path).unwrap();
        assert_eq!(std::fs::read_to_string(&b.path).unwrap(), "new b");
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a.csv", "a.parquet"]);
    }
}
