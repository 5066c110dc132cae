//! A partitioned dataset in object storage (`s3://bucket/prefix/date=.../part-0.parquet`).
//! There is no folder to swap: every part is a multipart upload, all of them uploaded before the
//! commit and completed there; the manifest, removed before and written last, is what readers
//! key on. The previous dataset's objects that the new one does not overwrite are removed after
//! the new manifest is in place. A prefix holding objects export-events did not write (no
//! manifest beside it, no marker inside) is refused, so nothing else is ever removed.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;

use super::file::{AtomicFile, Written};
use super::manifest;
use super::object::Bucket;
use super::target::{key_of, Target};
use crate::error::UsageError;

/// A dataset's parts, uploaded and waiting to be completed.
pub struct ObjectDir {
    target: Target,
    files: Vec<AtomicFile>,
    /// The keys under the prefix before this run (the previous dataset's parts).
    previous: Vec<String>,
}

impl ObjectDir {
    /// Starts a dataset at the remote `target`, refusing a prefix export-events did not write.
    pub fn create(target: &Target, bucket: &Bucket) -> Result<Self> {
        let prefix = target.key();
        let previous = bucket.list(&prefix)?;
        let manifest = key_of(&manifest::path_of(&target.path));
        let ours = previous.contains(&marker_key(target)) || bucket.exists(&manifest)?;
        if !previous.is_empty() && !ours {
            return Err(UsageError(format!(
                "--output {} holds objects export-events did not write (no {} beside it): \
                 choose another prefix, or empty it",
                target.shown(),
                bucket.url(&manifest)
            ))
            .into());
        }
        Ok(Self {
            target: target.clone(),
            files: Vec::new(),
            previous,
        })
    }

    /// Where a part at `relative` goes.
    pub fn part(&self, relative: &Path) -> Target {
        self.target.at(self.target.path.join(relative))
    }

    /// Keeps a finished part (every byte uploaded) for the commit.
    pub fn add(&mut self, mut file: AtomicFile) -> Result<()> {
        file.sync()?;
        self.files.push(file);
        Ok(())
    }

    pub fn target(&self) -> &Path {
        &self.target.path
    }

    pub fn records(&self) -> Vec<Written> {
        self.files
            .iter()
            .map(|f| f.written(f.target.clone()))
            .collect()
    }

    /// Completes every part (a few at a time), then removes what the previous dataset had
    /// that this one has not. The marker goes first: a commit killed after some parts are
    /// complete (the old manifest already removed) leaves a prefix the next run knows as ours.
    pub fn put_in_place(self) -> std::io::Result<()> {
        let bucket = self
            .target
            .remote
            .as_ref()
            .expect("an object storage dataset");
        let marker = marker_key(&self.target);
        bucket
            .put(&marker, Vec::new())
            .map_err(std::io::Error::other)?;
        let mut new: HashSet<String> = self.files.iter().map(|f| key_of(&f.target)).collect();
        new.insert(marker);
        let mut files = self.files;
        while !files.is_empty() {
            let batch: Vec<AtomicFile> = files.drain(..files.len().min(16)).collect();
            std::thread::scope(|s| {
                let done: Vec<_> = batch
                    .into_iter()
                    .map(|f| s.spawn(move || f.put_in_place()))
                    .collect();
                done.into_iter().try_for_each(|d| {
                    d.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("panicked")))
                })
            })?;
        }
        for key in self.previous.iter().filter(|k| !new.contains(*k)) {
            bucket.delete(key).map_err(std::io::Error::other)?;
        }
        Ok(())
    }
}

/// The key of a remote dataset's marker ([`super::DATASET_MARKER`]).
fn marker_key(target: &Target) -> String {
    format!("{}/{}", target.key(), super::DATASET_MARKER)
}
