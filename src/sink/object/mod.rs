//! Object storage (S3 and S3-compatible servers such as Garage or MinIO) as a place outputs go,
//! through the Arrow project's `object_store` crate. Credentials and endpoint follow the AWS
//! conventions (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_MAX_ATTEMPTS`); requests are path-style, `http://` endpoints allowed.
//!
//! This module is the bucket and its client. An [`Upload`] (`upload`) is a multipart upload fed
//! while rows stream: parts of [`PART`] bytes go out as they fill, a few at a time, so memory
//! stays bounded and no local copy is made. The object appears only when the upload is completed
//! at commit; dropped unfinished, it is aborted. A run killed before it could abort leaves its
//! upload id in a local journal (`journal`), and the next run on that output aborts it
//! ([`recover`]).

mod journal;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::MultipartStore as _;
use object_store::path::Path as Key;
use object_store::{ObjectStore as _, ObjectStoreExt as _, RetryConfig};
use sha2::{Digest as _, Sha256};

use crate::error::UsageError;
use crate::runtime::runtime;

pub use journal::{local_name, recover};
pub use upload::{Upload, PART};

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
