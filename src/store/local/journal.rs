//! What makes a group commit of a local folder survive a SIGKILL: the renames it is about to
//! make, written (and synced) as a journal before the first one, beside the first output; and
//! the files it replaces, kept as hard links until it succeeds so that a failed rename puts back
//! what was already replaced. The next holder of the outputs' locks completes a journal it
//! finds ([`recover`]), then removes the temporaries killed runs left.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::dir::AtomicDir;
use super::file::{create_new, io_error, sync_folder};
use super::names::{file_name, is_temporary_of, journal_of, temp_prefix, TEMP_RANDOM, TEMP_SUFFIX};
use crate::confine;
use crate::error::UsageError;
use crate::store::api::{Prepared, Staged};

/// One rename of a group commit, between two names in the journal's folder (every output of
/// a group commit sits in one folder: siblings and their manifest).
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    temp: String,
    target: String,
    /// For a dataset: the token of its staging marker, which tells the new folder from the old.
    token: Option<String>,
}

impl Entry {
    fn of(staged: &Staged) -> Self {
        let name = |key: &str| file_name(Path::new(key));
        match staged {
            Staged::File(f) => Entry {
                temp: f.staged_name().unwrap_or_default(),
                target: name(f.target()),
                token: None,
            },
            Staged::Dir(d) => {
                let (temp, token) = d.staged().unwrap_or_default();
                Entry {
                    temp,
                    target: name(d.target()),
                    token: Some(token),
                }
            }
        }
    }
}

/// A local group commit, prepared: its journal (for more than one output) and the files it
/// replaces.
pub struct LocalCommit {
    journal: Option<PathBuf>,
    previous: Vec<Previous>,
    folders: Vec<PathBuf>,
}

impl LocalCommit {
    /// Writes the journal of `staged` (when there is more than one) and keeps every file it
    /// replaces.
    pub fn prepare(staged: &[Staged]) -> Result<Self> {
        let journal = match staged {
            [first, _, ..] => Some(write(staged, Path::new(first.target()))?),
            _ => None,
        };
        let previous = staged
            .iter()
            .map(|s| match s {
                Staged::File(f) => Previous::keep(Path::new(f.target())),
                Staged::Dir(_) => Ok(Previous::none()),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut folders: Vec<PathBuf> = staged
            .iter()
            .filter_map(|s| Path::new(s.target()).parent().map(Path::to_owned))
            .collect();
        folders.dedup();
        Ok(Self {
            journal,
            previous,
            folders,
        })
    }
}

impl Prepared for LocalCommit {
    fn restore(&self, done: usize) {
        self.previous[..done].iter().for_each(Previous::restore);
        if let Some(journal) = &self.journal {
            let _ = std::fs::remove_file(journal);
        }
    }

    fn finish(self: Box<Self>) {
        self.folders.iter().for_each(|f| sync_folder(f));
        if let Some(journal) = &self.journal {
            let _ = std::fs::remove_file(journal);
        }
    }
}

/// Writes the journal of `staged` beside `first`, synced with its folder.
fn write(staged: &[Staged], first: &Path) -> Result<PathBuf> {
    let entries: Vec<Entry> = staged.iter().map(Entry::of).collect();
    let path = journal_of(first);
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
    Ok(path)
}

/// Makes `targets` whole again after a killed run, for the holder of all their locks (no other
/// process writes them): first completes every commit that was interrupted between its renames
/// (a journal names finished, synced outputs, possibly of several of the targets), then removes
/// temporary files and folders. The order matters: a journal of one target may need the staged
/// file of another, so nothing is swept until every journal is replayed. Returns how many
/// temporaries were removed.
pub fn recover(targets: &[&Path]) -> Result<usize> {
    for target in targets {
        complete(target)?;
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

/// Finishes the commit a killed run left in the journal of `target`, if any.
fn complete(target: &Path) -> Result<()> {
    let path = journal_of(target);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    // A journal cut short was never acted on: no rename had started.
    if let Ok(entries) = serde_json::from_slice::<Vec<Entry>>(&text) {
        let folder = path.parent().unwrap_or(Path::new("/"));
        let renames = check(&path, folder, &entries)?;
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
    let _ = std::fs::remove_file(&path);
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

/// The file a commit is about to replace, kept (as a hard link, `.{name}.previous.XXXXXX.tmp`)
/// until the commit succeeds.
struct Previous {
    target: PathBuf,
    kept: Option<tempfile::TempPath>,
    /// Whether there is something to put back (a file); datasets are swapped whole.
    file: bool,
}

impl Previous {
    fn none() -> Self {
        Self {
            target: PathBuf::new(),
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
        let journal = dir.path().join(".x.csv.commit");
        let plant = |entries: serde_json::Value| {
            std::fs::write(&journal, entries.to_string()).unwrap();
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
        std::fs::remove_file(&journal).unwrap();
        let real = outside.path().join("journal");
        std::fs::write(
            &real,
            serde_json::json!([{"temp": ".x.csv.abcdef.tmp", "target": "x.csv", "token": null}])
                .to_string(),
        )
        .unwrap();
        std::os::unix::fs::symlink(&real, &journal).unwrap();
        let err = recover(&[&target]).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
    }
}
