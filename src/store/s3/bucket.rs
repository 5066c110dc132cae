//! A bucket and the client that reaches it, through the Arrow project's `object_store` crate.
//! Credentials and endpoint follow the AWS conventions (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_MAX_ATTEMPTS`); requests are path-style, `http://` endpoints allowed. Its failures are
//! classified here, from `object_store`'s error variants.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::MultipartStore as _;
use object_store::path::Path as Key;
use object_store::{ObjectStore as _, ObjectStoreExt as _, RetryConfig};
use sha2::{Digest as _, Sha256};

use crate::error::{Class, Failure, UsageError};
use crate::runtime::runtime;
use crate::store::hash::hex;

/// A bucket, with the client that reaches it.
pub struct Bucket {
    pub name: String,
    pub(super) store: AmazonS3,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}", self.name)
    }
}

/// The object key `text`, as written: Hive's `%XX` escapes in partition names stay as they are
/// (`Key::from` would escape the `%` again).
pub(super) fn object_key(text: &str) -> Key {
    Key::parse(text).unwrap_or_else(|_| Key::from(text))
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
        match key {
            "" => format!("s3://{}", self.name),
            key => format!("s3://{}/{key}", self.name),
        }
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
            .map_err(|e| explain(e, &self.url(key.as_ref()), Doing::Writing))
            .with_context(|| format!("checking that {} can be written", self.url(key.as_ref())))
    }

    /// The whole object at `key`; `None` if there is none.
    pub fn get(&self, key: &str) -> Result<Option<bytes::Bytes>> {
        let read = runtime().block_on(async {
            match self.store.get(&object_key(key)).await {
                Ok(found) => found.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        read.map_err(|e| explain(e, &self.url(key), Doing::Reading))
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
            Ok(Some((size, hex(&hash.finalize()))))
        });
        read.map_err(|e| explain(e, &self.url(key), Doing::Reading))
            .with_context(|| format!("reading {}", self.url(key)))
    }

    /// Writes `data` at `key` in one request (small files: markers).
    pub fn put(&self, key: &str, data: Vec<u8>) -> Result<()> {
        runtime()
            .block_on(self.store.put(&object_key(key), data.into()))
            .map(|_| ())
            .map_err(|e| explain(e, &self.url(key), Doing::Writing))
            .with_context(|| format!("writing {}", self.url(key)))
    }

    /// Whether an object is at `key`.
    pub fn exists(&self, key: &str) -> Result<bool> {
        match runtime().block_on(self.store.head(&object_key(key))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(explain(e, &self.url(key), Doing::Reading))
                .with_context(|| format!("reading {}", self.url(key))),
        }
    }

    /// Removes the object at `key`; a missing one is not an error.
    pub fn delete(&self, key: &str) -> Result<()> {
        match runtime().block_on(self.store.delete(&object_key(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(explain(e, &self.url(key), Doing::Writing))
                .with_context(|| format!("removing {}", self.url(key))),
        }
    }

    /// The keys under `prefix` (a folder: `prefix/...`), at any depth.
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
            .map_err(|e| explain(e, &self.url(prefix), Doing::Reading))
            .with_context(|| format!("listing {}/", self.url(prefix)))
    }

    /// Aborts the multipart upload `id` of `key`; one already gone is not an error.
    pub fn abort(&self, key: &str, id: &str) -> Result<()> {
        match runtime().block_on(self.store.abort_multipart(&object_key(key), &id.to_owned())) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(explain(e, &self.url(key), Doing::Writing)),
        }
    }
}

/// What a request was for, which tells a missing bucket from a missing object.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Doing {
    Reading,
    Writing,
}

/// An object storage error as one clear line: what the server refused and how to fix it, by
/// the error's variant (the HTTP status the server answered): 401 and 403 are access denied, a
/// 404 to a write is a missing bucket.
pub(super) fn explain(e: object_store::Error, url: &str, doing: Doing) -> anyhow::Error {
    let class = match &e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Class::AccessDenied,
        object_store::Error::NotFound { .. } if doing == Doing::Writing => Class::NoBucket,
        _ => return anyhow::Error::new(e).context(format!("object storage at {url}")),
    };
    Failure::new(class, "", url).into()
}
