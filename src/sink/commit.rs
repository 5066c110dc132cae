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
use super::Target;
use crate::error::UsageError;
use crate::{confine, fault};

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

    /// Its rename as the journal records it: names in the journal's folder, never paths.
    fn entry(&self) -> Entry {
        let name = |p: &Path| file_name(p);
        match self {
            Staged::File(f) => Entry {
                temp: f.temp_path().map(name).unwrap_or_default(),
                target: name(&f.target),
                token: None,
            },
            Staged::Dataset(d) => Entry {
                temp: name(d.path()),
                target: name(d.target()),
                token: Some(d.token().to_owned()),
            },
            Staged::Objects(d) => Entry {
                temp: String::new(),
                target: name(d.target()),
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
    if staged.len() > 1 {
        fault::point("commit.staged");
    }
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
    if targets.len() > 1 {
        fault::point("commit.done");
    }
    Ok(written)
}

/// Makes `targets` whole again after a killed run, for the holder of all their locks (no other
/// process writes them): first completes every commit that was interrupted between its renames
/// (a journal names finished, synced outputs, possibly of several of the targets), then removes
/// temporary files and folders. The order matters: a journal of one target may need the staged
/// file of another, so nothing is swept until every journal is replayed. Returns how many
/// temporaries were removed.
pub fn recover(targets: &[&Path]) -> Result<usize> {
    for target in targets {
        Journal::complete(target)?;
    }
    let mut removed = 0;
    for target in targets {
        removed += sweep(target)?;
    }
    Ok(removed)
}

/// Removes the temporary files and folders killed runs left beside `target`.
fn sweep(target: &Path) -> Result<usize> {
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

/// Replaces the small file at `target` with `bytes`, whole and durable (a state or record
/// file): written under a temporary name with the target's permissions, renamed over whatever
/// is there (a symlink planted at the name is replaced, never followed).
pub fn replace(target: &Target, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(target)?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", target.shown()))?;
    commit_all(vec![Staged::File(file)]).map(drop)
}

/// A rename is durable once its folder is synced (best effort where unsupported).
pub(super) fn sync_folder(folder: &Path) {
    let _ = File::open(folder).and_then(|f| f.sync_all());
}

/// One rename of a group commit, between two names in the journal's folder (every output of
/// a group commit sits in one folder: siblings and their manifest).
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    temp: String,
    target: String,
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
            let folder = path.parent().unwrap_or(Path::new("/"));
            let renames = Self::check(&path, folder, &entries)?;
            for ((temp, target), entry) in renames.iter().zip(&entries) {
                let done = match &entry.token {
                    None if temp.exists() => std::fs::rename(temp, target),
                    None => Ok(()),
                    Some(token) => AtomicDir::complete(temp, target, token),
                };
                done.with_context(|| {
                    format!("completing the interrupted commit of {}", target.display())
                })?;
            }
            sync_folder(folder);
        }
        Self { path }.remove();
        Ok(())
    }

    /// The renames a journal asks for, if it is one this tool could have written: this user's
    /// file, naming only a temporary of each target and the target itself, both plain names in
    /// the journal's own folder. Anything else (a planted or edited journal) is refused whole,
    /// before any rename.
    fn check(path: &Path, folder: &Path, entries: &[Entry]) -> Result<Vec<(PathBuf, PathBuf)>> {
        let refuse = |why: String| {
            UsageError(format!(
                "{} is not a commit journal export-events wrote ({why}): remove it if no \
                 export-events run was killed here",
                path.display()
            ))
        };
        confine::owned_by_us(path).map_err(|e| refuse(e.0))?;
        entries
            .iter()
            .map(|entry| {
                // Journals of earlier versions held absolute paths in the same folder.
                let name = |text: &str| match text.starts_with('/') {
                    true => confine::absolute_in(folder, text),
                    false => confine::file_in(folder, text),
                };
                let target = name(&entry.target).map_err(|e| refuse(e.0))?;
                let temp = name(&entry.temp).map_err(|e| refuse(e.0))?;
                if !is_temporary_of(&file_name(&temp), &target) {
                    return Err(refuse(format!(
                        "{} is not a temporary of {}",
                        temp.display(),
                        target.display()
                    )));
                }
                Ok((temp, target))
            })
            .collect::<Result<_, UsageError>>()
            .map_err(Into::into)
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
        assert_eq!(recover(&[&target.path]).unwrap(), 1);
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
        recover(&[&a.path]).unwrap();
        assert_eq!(std::fs::read_to_string(&b.path).unwrap(), "new b");
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a.csv", "a.parquet"]);
    }

    #[test]
    fn every_journal_is_replayed_before_any_temporary_is_swept() {
        // `--format parquet,csv`: the journal is beside the Parquet file, which sorts after the
        // CSV whose staged file it still needs.
        let dir = tempfile::tempdir().unwrap();
        let target =
            |name: &str| Target::resolve(Some(Path::new(name)), "d.csv", dir.path()).unwrap();
        let (p, c) = (target("a.parquet"), target("a.csv"));
        let mut files = vec![
            AtomicFile::create(&p).unwrap(),
            AtomicFile::create(&c).unwrap(),
        ];
        files[0].write_all(b"new p").unwrap();
        files[1].write_all(b"new c").unwrap();
        let staged: Vec<Staged> = files.into_iter().map(Staged::File).collect();
        let _journal = Journal::write(&staged).unwrap();
        let mut files = staged.into_iter().map(|s| match s {
            Staged::File(f) => f,
            _ => unreachable!(),
        });
        files.next().unwrap().put_in_place().unwrap();
        if let super::super::file::Body::Local(temp) = files.next().unwrap().body {
            temp.into_temp_path().keep().unwrap();
        }
        recover(&[&c.path, &p.path]).unwrap();
        assert_eq!(std::fs::read_to_string(&c.path).unwrap(), "new c");
    }

    #[test]
    fn a_planted_journal_moves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let (payload, config) = (
            outside.path().join("payload"),
            outside.path().join("config"),
        );
        std::fs::write(&payload, "payload").unwrap();
        std::fs::write(&config, "config").unwrap();
        let target = dir.path().join("x.csv");
        let plant = |entries: serde_json::Value| {
            std::fs::write(Journal::path(&target), entries.to_string()).unwrap();
            recover(&[&target]).unwrap_err().to_string()
        };
        let err = plant(serde_json::json!([{"temp": payload, "target": config, "token": null}]));
        assert!(
            err.contains("not a commit journal export-events wrote"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "config");
        let err = plant(serde_json::json!([{"temp": "../x", "target": "x.csv", "token": null}]));
        assert!(err.contains("is not a file name"), "{err}");
        std::fs::write(dir.path().join("victim"), "v").unwrap();
        let err = plant(serde_json::json!([{"temp": "victim", "target": "x.csv", "token": null}]));
        assert!(err.contains("is not a temporary of"), "{err}");
        assert!(dir.path().join("victim").exists() && !target.exists());
        let planted = dir.path().join(".x.csv.abcdef.tmp");
        std::fs::write(&planted, "p").unwrap();
        let link = Journal::path(&target);
        std::fs::remove_file(&link).unwrap();
        let real = outside.path().join("journal");
        std::fs::write(
            &real,
            serde_json::json!([{"temp": ".x.csv.abcdef.tmp", "target": "x.csv", "token": null}])
                .to_string(),
        )
        .unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = recover(&[&target]).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
    }
}
