//! A dataset in a bucket (`s3://bucket/prefix/date=.../part-0.parquet`). There is no folder to
//! swap: every part is a multipart upload, all of them uploaded before the commit and completed
//! there; the manifest, removed before and written last, is what readers key on. The previous
//! dataset's objects that the new one does not overwrite are removed after. A prefix holding
//! objects export-events did not write (no manifest beside it, no marker inside) is refused, so
//! nothing else is ever removed.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Result;

use super::bucket::Bucket;
use crate::error::UsageError;
use crate::store::api::{StagedDir, DATASET_MARKER, MANIFEST_SUFFIX};
use crate::store::file::{AtomicFile, Written};

/// A dataset's parts, uploaded and waiting to be completed.
pub struct ObjectDir {
    bucket: Arc<Bucket>,
    key: String,
    files: Vec<AtomicFile>,
    /// The keys under the prefix before this run (the previous dataset's parts).
    previous: Vec<String>,
}

impl ObjectDir {
    /// Starts a dataset at `key`, refusing a prefix export-events did not write.
    pub fn create(bucket: &Arc<Bucket>, key: &str) -> Result<Self> {
        let previous = bucket.list(key)?;
        let manifest = format!("{key}{MANIFEST_SUFFIX}");
        let ours = previous.contains(&marker_key(key)) || bucket.exists(&manifest)?;
        if !previous.is_empty() && !ours {
            return Err(UsageError(format!(
                "--output {} holds objects export-events did not write (no {} beside it): \
                 choose another prefix, or empty it",
                bucket.url(key),
                bucket.url(&manifest)
            ))
            .into());
        }
        Ok(Self {
            bucket: bucket.clone(),
            key: key.to_owned(),
            files: Vec::new(),
            previous,
        })
    }
}

impl StagedDir for ObjectDir {
    fn target(&self) -> &str {
        &self.key
    }

    fn part_key(&self, relative: &str) -> String {
        format!("{}/{relative}", self.key)
    }

    /// Keeps a finished part (every byte uploaded) for the commit.
    fn add(&mut self, mut file: AtomicFile) -> Result<()> {
        file.sync()?;
        self.files.push(file);
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }

    fn records(&self) -> Vec<Written> {
        self.files.iter().map(AtomicFile::written).collect()
    }

    fn staged(&self) -> Option<(String, String)> {
        None
    }

    /// Completes every part (a few at a time), then removes what the previous dataset had
    /// that this one has not. The marker goes first: a commit killed after some parts are
    /// complete (the old manifest already removed) leaves a prefix the next run knows as ours.
    fn put_in_place(self: Box<Self>) -> std::io::Result<()> {
        let marker = marker_key(&self.key);
        self.bucket
            .put(&marker, Vec::new())
            .map_err(std::io::Error::other)?;
        let mut new: HashSet<String> = self.files.iter().map(|f| f.target().to_owned()).collect();
        new.insert(marker);
        let ObjectDir {
            bucket,
            mut files,
            previous,
            ..
        } = *self;
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
        for key in previous.iter().filter(|k| !new.contains(*k)) {
            bucket.delete(key).map_err(std::io::Error::other)?;
        }
        Ok(())
    }
}

/// The key of a dataset's marker ([`DATASET_MARKER`]).
fn marker_key(key: &str) -> String {
    format!("{key}/{DATASET_MARKER}")
}
