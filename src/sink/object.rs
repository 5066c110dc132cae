//! Object storage (S3 and S3-compatible servers such as Garage or MinIO) as a place outputs go,
//! through the Arrow project's `object_store` crate. Credentials and endpoint follow the AWS
//! conventions (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_MAX_ATTEMPTS`); requests are path-style, `http://` endpoints allowed.
//!
//! An [`Upload`] is a multipart upload fed while rows stream: parts of [`PART`] bytes go out as
//! they fill, a few at a time, so memory stays bounded and no local copy is made. The object
//! appears only when the upload is completed at commit; dropped unfinished, it is aborted. A run
//! killed before it could abort leaves its upload id in a local journal
//! ([`pending_folder`]), and the next run on that output aborts it ([`recover`]).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore as _, PartId};
use object_store::path::Path as Key;
use object_store::{ObjectStore as _, ObjectStoreExt as _, RetryConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;

use crate::error::UsageError;
use crate::runtime::runtime;

/// Size of every part but the last (S3 wants at least 5 MiB).
pub const PART: usize = 8 << 20;
/// Parts uploading at once per object; with the part being filled this bounds memory to
/// `(IN_FLIGHT + 1) * PART` per open object.
const IN_FLIGHT: usize = 3;

/// A bucket, with the client that reaches it.
pub struct Bucket {
    pub name: String,
    pub(crate) store: AmazonS3,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}", self.name)
    }
}

/// The object key `text`, as written: Hive's `%XX` escapes in partition names stay as they are
/// (`Path::from` would escape the `%` again).
fn object_key(text: &str) -> Key {
    Key::parse(text).unwrap_or_else(|_| Key::from(text))
}

/// `s3://bucket/key` split, when `text` is such a URL.
pub fn parse(text: &str) -> Option<Result<(String, String), UsageError>> {
    let rest = text.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() || key.is_empty() || key.ends_with('/') {
        return Some(Err(UsageError(format!(
            "{text}: give a bucket and an object key, such as s3://bucket/exports/events.csv"
        ))));
    }
    Some(Ok((
        bucket.to_owned(),
        key.trim_start_matches('/').to_owned(),
    )))
}

impl Bucket {
    /// The client for `name`, configured from the AWS variables (no request is made yet).
    pub fn open(name: &str) -> Result<Arc<Self>, UsageError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(name)
            .with_virtual_hosted_style_request(false);
        let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
        if endpoint.starts_with("http://") {
            builder = builder.with_allow_http(true);
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        let attempts = std::env::var("AWS_MAX_ATTEMPTS")
            .ok()
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    UsageError(format!(
                        "AWS_MAX_ATTEMPTS={v}: give a whole number, such as 5"
                    ))
                })
            })
            .transpose()?
            .unwrap_or(10);
        builder = builder.with_retry(RetryConfig {
            max_retries: attempts.saturating_sub(1),
            retry_timeout: Duration::from_secs(120),
            ..RetryConfig::default()
        });
        let store = builder.build().map_err(|e| {
            UsageError(format!(
                "s3://{name}: {e}; set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and, for a \
                 server other than AWS, AWS_ENDPOINT_URL"
            ))
        })?;
        Ok(Arc::new(Self {
            name: name.to_owned(),
            store,
        }))
    }

    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.name)
    }

    /// Whether objects can be written at `key`: starts a multipart upload there and aborts it,
    /// so wrong credentials, a missing bucket or a missing permission stop the run before the
    /// source is read, and nothing is left behind.
    pub fn check_write(&self, key: &str) -> Result<()> {
        let key = object_key(key);
        runtime()
            .block_on(async {
                let id = self.store.create_multipart(&key).await?;
                self.store.abort_multipart(&key, &id).await
            })
            .map_err(|e| explain(e, &self.url(key.as_ref())))
            .with_context(|| format!("checking that {} can be written", self.url(key.as_ref())))
    }

    /// The whole object at `key`.
    pub fn read(&self, key: &str) -> Result<bytes::Bytes> {
        runtime()
            .block_on(async { self.store.get(&object_key(key)).await?.bytes().await })
            .map_err(|e| explain(e, &self.url(key)))
            .with_context(|| format!("reading {}", self.url(key)))
    }

    /// The size and SHA-256 (hex) of the object at `key`, read as a stream; `None` if missing.
    pub fn hash(&self, key: &str) -> Result<Option<(u64, String)>> {
        use futures::StreamExt as _;
        let read = runtime().block_on(async {
            let mut stream = match self.store.get(&object_key(key)).await {
                Ok(found) => found.into_stream(),
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let (mut size, mut hash) = (0u64, Sha256::new());
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                hash.update(&chunk);
            }
            Ok(Some((size, crate::sink::file::hex(&hash.finalize()))))
        });
        read.map_err(|e| explain(e, &self.url(key)))
            .with_context(|| format!("reading {}", self.url(key)))
    }

    /// Writes `data` at `key` in one request (small files: manifests).
    pub fn put(&self, key: &str, data: Vec<u8>) -> Result<()> {
        runtime()
            .block_on(self.store.put(&object_key(key), data.into()))
            .map(|_| ())
            .map_err(|e| explain(e, &self.url(key)))
            .with_context(|| format!("writing {}", self.url(key)))
    }

    /// Whether an object is at `key`.
    pub fn exists(&self, key: &str) -> Result<bool> {
        match runtime().block_on(self.store.head(&object_key(key))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(explain(e, &self.url(key)))
                .with_context(|| format!("reading {}", self.url(key))),
        }
    }

    /// Removes the object at `key`; a missing one is not an error.
    pub fn delete(&self, key: &str) -> Result<()> {
        match runtime().block_on(self.store.delete(&object_key(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(explain(e, &self.url(key)))
                .with_context(|| format!("removing {}", self.url(key))),
        }
    }

    /// The keys under `prefix` (a folder: `prefix/...`).
    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt as _;
        runtime()
            .block_on(
                self.store
                    .list(Some(&object_key(prefix)))
                    .try_collect::<Vec<_>>(),
            )
            .map(|objects| {
                objects
                    .into_iter()
                    .map(|o| o.location.to_string())
                    .collect()
            })
            .map_err(|e| explain(e, &self.url(prefix)))
            .with_context(|| format!("listing {}/", self.url(prefix)))
    }
}

/// An object storage error as one clear line: what the server refused and how to fix it.
fn explain(e: object_store::Error, url: &str) -> anyhow::Error {
    let text = e.to_string();
    let hint = if text.contains("NoSuchBucket") {
        "the bucket does not exist; create it or fix the URL"
    } else if text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
        || text.contains("403")
        || matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        )
    {
        "access denied; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that the key may write to the bucket"
    } else {
        return anyhow::Error::new(e).context(format!("object storage at {url}"));
    };
    anyhow::anyhow!("{url}: {hint}")
}

/// A multipart upload fed by writes; the object appears at [`Upload::complete`].
pub struct Upload {
    bucket: Arc<Bucket>,
    key: Key,
    id: String,
    buffer: Vec<u8>,
    parts: Vec<PartId>,
    in_flight: VecDeque<JoinHandle<object_store::Result<PartId>>>,
    journal: Option<PathBuf>,
    done: bool,
}

impl Upload {
    /// Starts the upload of `key`, noting its id in the local journal first.
    pub fn start(bucket: &Arc<Bucket>, key: &str) -> Result<Self> {
        let url = bucket.url(key);
        let path = object_key(key);
        let id = runtime()
            .block_on(bucket.store.create_multipart(&path))
            .map_err(|e| explain(e, &url))
            .with_context(|| format!("starting the upload of {url}"))?;
        let journal = Pending {
            url: url.clone(),
            id: id.clone(),
        }
        .save()?;
        Ok(Self {
            bucket: bucket.clone(),
            key: path,
            id,
            buffer: Vec::with_capacity(PART),
            parts: Vec::new(),
            in_flight: VecDeque::new(),
            journal: Some(journal),
            done: false,
        })
    }

    pub fn url(&self) -> String {
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
            .map_err(|e| io::Error::other(explain(e, &self.url())))?;
        self.parts.push(part);
        Ok(())
    }

    /// Sends the last part and waits for every part: the object is ready to be completed.
    pub fn finish(&mut self) -> io::Result<()> {
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

    /// Makes the object appear, whole, at `key`, replacing any object there. When `key` is
    /// not the upload's (a name known only at the end), the upload completes at its own hidden
    /// key and is copied (server-side, whole) to `key`, then removed.
    pub fn complete_at(self, key: &str) -> io::Result<()> {
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
            .map_err(|e| io::Error::other(explain(e, &bucket.url(key))))
    }

    /// Makes the object appear, whole, replacing any object at its key.
    fn complete(mut self) -> io::Result<()> {
        self.finish()?;
        let parts = std::mem::take(&mut self.parts);
        runtime()
            .block_on(
                self.bucket
                    .store
                    .complete_multipart(&self.key, &self.id, parts),
            )
            .map_err(|e| io::Error::other(explain(e, &self.url())))?;
        self.done = true;
        if let Some(journal) = self.journal.take() {
            let _ = std::fs::remove_file(journal);
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

impl Drop for Upload {
    /// An upload never completed is aborted, its parts discarded; if even that fails (the server
    /// is gone), its journal entry stays for the next run.
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
        if let (Ok(Ok(())), Some(journal)) = (aborted, self.journal.take()) {
            let _ = std::fs::remove_file(journal);
        }
    }
}

/// An upload a run started and has not yet completed or aborted.
#[derive(Serialize, Deserialize)]
struct Pending {
    url: String,
    id: String,
}

/// Where pending uploads are noted: `$XDG_STATE_HOME/export-events/uploads` (or under
/// `~/.local/state`), also holding the locks of object storage outputs.
pub fn pending_folder() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("export-events").join("uploads")
}

/// A name for `url` in the local state folder (`{hash}.{what}`).
pub fn local_name(url: &str, what: &str) -> PathBuf {
    let hash = crate::sink::file::hex(&Sha256::digest(url.as_bytes()));
    pending_folder().join(format!("{}.{what}", &hash[..32]))
}

impl Pending {
    fn save(&self) -> Result<PathBuf> {
        let folder = pending_folder();
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        let path = local_name(&self.url, &format!("{}.upload", short(&self.id)));
        // Owner-only, never through a symlink at its name.
        let mut file = super::commit::create_new(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(serde_json::to_string(self)?.as_bytes())?;
        file.sync_all()?;
        Ok(path)
    }
}

fn short(id: &str) -> String {
    crate::sink::file::hex(&Sha256::digest(id.as_bytes()))[..16].to_owned()
}

/// Aborts the uploads that killed runs left under `url` (an object, or a dataset's prefix).
/// Called with the output's lock held, so no live run of this machine owns them.
pub fn recover(bucket: &Bucket, url: &str) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(pending_folder()) else {
        return Ok(0);
    };
    let mut aborted = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        // Only this user's notes are acted on: the folder is trusted no further than that.
        if path.extension().is_none_or(|e| e != "upload")
            || crate::confine::owned_by_us(&path).is_err()
        {
            continue;
        }
        let Ok(pending) = std::fs::read_to_string(&path)
            .map_err(anyhow::Error::from)
            .and_then(|t| Ok(serde_json::from_str::<Pending>(&t)?))
        else {
            continue;
        };
        let Some(rest) = pending.url.strip_prefix(url) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            continue;
        }
        let Some(key) = pending
            .url
            .strip_prefix(&format!("s3://{}/", bucket.name))
            .filter(|key| crate::confine::relative(key).is_ok())
        else {
            continue;
        };
        match runtime().block_on(bucket.store.abort_multipart(&object_key(key), &pending.id)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                let _ = std::fs::remove_file(&path);
                aborted += 1;
            }
            Err(e) => {
                return Err(explain(e, &pending.url)).with_context(|| {
                    format!("aborting an upload a killed run left at {}", pending.url)
                })
            }
        }
    }
    Ok(aborted)
}

/// Removes what a run interrupted before its state moved may have left at `url`: unfinished
/// uploads, the object, or a dataset's objects under it. Returns whether anything was there.
pub fn remove_url(url: &str) -> Result<bool> {
    let Some(parsed) = parse(url) else {
        return Ok(false);
    };
    let (name, key) = parsed?;
    let bucket = Bucket::open(&name)?;
    let aborted = recover(&bucket, url)?;
    let mut found = bucket.exists(&key)?;
    bucket.delete(&key)?;
    for part in bucket.list(&key)? {
        bucket.delete(&part)?;
        found = true;
    }
    Ok(found || aborted > 0)
}
