//! A file of a bucket being written: a multipart upload fed by writes while rows stream. Parts
//! go out as they fill, a few at a time, so memory stays bounded and no local copy is made; the
//! object appears only when the upload is completed at commit, and an upload dropped unfinished
//! is aborted. Its id is noted first ([`super::notes`]), for a run killed before it could abort.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use object_store::multipart::{MultipartStore as _, PartId};
use object_store::path::Path as Key;
use object_store::ObjectStoreExt as _;
use tokio::task::JoinHandle;

use super::bucket::{explain, object_key, Bucket, Doing};
use super::notes::Note;
use crate::runtime::runtime;
use crate::store::file::Body;

/// Size of every part but the last (S3 wants at least 5 MiB).
pub const PART: usize = 8 << 20;
/// Parts uploading at once per object; with the part being filled this bounds memory to
/// `(IN_FLIGHT + 1) * PART` per open object.
const IN_FLIGHT: usize = 3;

/// A multipart upload fed by writes; the object appears when it is put in place.
pub struct Upload {
    bucket: Arc<Bucket>,
    key: Key,
    id: String,
    buffer: Vec<u8>,
    parts: Vec<PartId>,
    in_flight: VecDeque<JoinHandle<object_store::Result<PartId>>>,
    note: Option<PathBuf>,
    done: bool,
}

impl Upload {
    /// Starts the upload of `key`, noting its id first.
    pub fn start(bucket: &Arc<Bucket>, key: &str) -> Result<Self> {
        let url = bucket.url(key);
        let path = object_key(key);
        let id = runtime()
            .block_on(bucket.store.create_multipart(&path))
            .map_err(|e| explain(e, &url, Doing::Writing))
            .with_context(|| format!("starting the upload of {url}"))?;
        let note = Note::save(&url, &id)?;
        Ok(Self {
            bucket: bucket.clone(),
            key: path,
            id,
            buffer: Vec::with_capacity(PART),
            parts: Vec::new(),
            in_flight: VecDeque::new(),
            note: Some(note),
            done: false,
        })
    }

    fn url(&self) -> String {
        self.bucket.url(self.key.as_ref())
    }

    /// Sends the filled buffer as the next part, first waiting for the oldest part when
    /// [`IN_FLIGHT`] are on their way.
    fn send(&mut self) -> io::Result<()> {
        while self.in_flight.len() >= IN_FLIGHT {
            self.wait_oldest()?;
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(PART));
        let (bucket, key, id) = (self.bucket.clone(), self.key.clone(), self.id.clone());
        let index = self.parts.len() + self.in_flight.len();
        self.in_flight.push_back(
            runtime()
                .spawn(async move { bucket.store.put_part(&key, &id, index, data.into()).await }),
        );
        Ok(())
    }

    fn wait_oldest(&mut self) -> io::Result<()> {
        let Some(task) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let part = runtime()
            .block_on(task)
            .map_err(io::Error::other)?
            .map_err(|e| io::Error::other(explain(e, &self.url(), Doing::Writing)))?;
        self.parts.push(part);
        Ok(())
    }

    /// Makes the object appear, whole, replacing any object at its key.
    fn complete(mut self) -> io::Result<()> {
        self.sync()?;
        let parts = std::mem::take(&mut self.parts);
        runtime()
            .block_on(
                self.bucket
                    .store
                    .complete_multipart(&self.key, &self.id, parts),
            )
            .map_err(|e| io::Error::other(explain(e, &self.url(), Doing::Writing)))?;
        self.done = true;
        if let Some(note) = self.note.take() {
            let _ = std::fs::remove_file(note);
        }
        Ok(())
    }
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(PART - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == PART {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Body for Upload {
    /// Sends the last part and waits for every part: the object is ready to be completed.
    fn sync(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() || self.parts.len() + self.in_flight.len() == 0 {
            self.send()?;
        }
        // A finished upload may wait long for its commit (a dataset's parts): hold no buffer.
        self.buffer = Vec::new();
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn staged_name(&self) -> Option<String> {
        None
    }

    /// Completes the upload at its own key; when `key` is another (a name known only at the
    /// end), the object is then copied (server-side, whole) to `key` and removed.
    fn put_in_place(self: Box<Self>, key: &str) -> io::Result<()> {
        let (bucket, own) = (self.bucket.clone(), self.key.clone());
        self.complete()?;
        if own.as_ref() == key {
            return Ok(());
        }
        let to = object_key(key);
        runtime()
            .block_on(async {
                bucket.store.copy(&own, &to).await?;
                bucket.store.delete(&own).await
            })
            .map_err(|e| io::Error::other(explain(e, &bucket.url(key), Doing::Writing)))
    }
}

impl Drop for Upload {
    /// An upload never completed is aborted, its parts discarded; if even that fails (the server
    /// is gone), its note stays for the next run.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for task in &self.in_flight {
            task.abort();
        }
        let aborted = runtime().block_on(async {
            tokio::time::timeout(
                Duration::from_secs(10),
                self.bucket.store.abort_multipart(&self.key, &self.id),
            )
            .await
        });
        if let (Ok(Ok(())), Some(note)) = (aborted, self.note.take()) {
            let _ = std::fs::remove_file(note);
        }
    }
}
