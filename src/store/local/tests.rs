//! The local store's commit and recovery, stopped where a SIGKILL could stop them.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use super::journal::{recover, LocalCommit};
use super::LocalStore;
use crate::store::api::{Staged, Store};
use crate::store::commit::commit_all;
use crate::store::location::{Location, Target};

fn target(dir: &Path, name: &str) -> Target {
    Target {
        at: Location::new(Arc::new(LocalStore), dir.join(name).display().to_string()),
        mode: 0o600,
        create_folder: false,
        named_later: false,
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    left
}

/// Two new files of a pair, synced, with the first put in place and the second not: as a run
/// killed between the renames of its commit leaves them (its journal written).
fn killed_between_renames(first: &Target, second: &Target) {
    let mut files = vec![first.create_file().unwrap(), second.create_file().unwrap()];
    files[0].write_all(b"new first").unwrap();
    files[1].write_all(b"new second").unwrap();
    let mut staged: Vec<Staged> = files.into_iter().map(Staged::File).collect();
    staged.iter_mut().for_each(|s| s.sync().unwrap());
    let prepared = LocalCommit::prepare(&staged).unwrap();
    let mut staged = staged.into_iter();
    staged.next().unwrap().put_in_place().unwrap();
    // As if the process had been killed: nothing is removed.
    std::mem::forget(staged.next().unwrap());
    std::mem::forget(prepared);
}

#[test]
fn recovery_removes_the_temporaries_of_its_target_only() {
    let dir = tempfile::tempdir().unwrap();
    let target = target(dir.path(), "a.csv");
    let mut left = target.create_file().unwrap();
    left.write_all(b"partial").unwrap();
    std::mem::forget(left); // as if the process had been killed
    let other = dir.path().join(".b.csv.x.tmp");
    std::fs::write(&other, "other").unwrap();
    let longer = dir.path().join(".a.csv.gz.abcdef.tmp");
    std::fs::write(&longer, "another target's").unwrap();
    assert_eq!(names(dir.path()).len(), 3);
    assert_eq!(recover(&[Path::new(target.at.key())]).unwrap(), 1);
    assert!(other.exists() && longer.exists());
    assert_eq!(names(dir.path()).len(), 2);
}

#[test]
fn nothing_appears_until_commit_and_an_abandoned_file_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let target = target(dir.path(), "a.csv");
    let path = Path::new(target.at.key());
    std::fs::write(path, "old").unwrap();
    let mut file = target.create_file().unwrap();
    file.write_all(b"new").unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), "old");
    drop(file);
    assert_eq!(names(dir.path()), ["a.csv"]);
    let mut file = target.create_file().unwrap();
    file.write_all(b"new").unwrap();
    commit_all(&LocalStore, vec![Staged::File(file)]).unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), "new");
    assert_eq!(names(dir.path()), ["a.csv"]);
}

#[test]
fn a_commit_killed_between_renames_is_completed_by_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (target(dir.path(), "a.csv"), target(dir.path(), "a.parquet"));
    std::fs::write(a.at.key(), "old a").unwrap();
    std::fs::write(b.at.key(), "old b").unwrap();
    killed_between_renames(&a, &b);
    assert_eq!(std::fs::read_to_string(a.at.key()).unwrap(), "new first");
    assert_eq!(std::fs::read_to_string(b.at.key()).unwrap(), "old b");
    assert!(dir.path().join(".a.csv.commit").exists());
    // As the next run does: every target's lock held, every target recovered.
    LocalStore.recover(&[a.at.key(), b.at.key()]).unwrap();
    assert_eq!(std::fs::read_to_string(b.at.key()).unwrap(), "new second");
    assert_eq!(names(dir.path()), ["a.csv", "a.parquet"]);
}

#[test]
fn every_journal_is_replayed_before_any_temporary_is_swept() {
    // `--format parquet,csv`: the journal is beside the Parquet file, which sorts after the
    // CSV whose staged file it still needs.
    let dir = tempfile::tempdir().unwrap();
    let (p, c) = (target(dir.path(), "a.parquet"), target(dir.path(), "a.csv"));
    killed_between_renames(&p, &c);
    LocalStore.recover(&[c.at.key(), p.at.key()]).unwrap();
    assert_eq!(std::fs::read_to_string(c.at.key()).unwrap(), "new second");
    assert_eq!(names(dir.path()), ["a.csv", "a.parquet"]);
}
