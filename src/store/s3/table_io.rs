//! A bucket as the `iceberg` crate's storage, for tables whose files are in S3 (`--warehouse
//! s3://bucket/prefix`): the same client, AWS settings and retries as every S3 output. The
//! crate's own S3 storage is a separate crate over OpenDAL, a second S3 client and a large
//! build. A data file is written as a multipart upload of [`PART`]-sized parts, awaited one at a
//! time, so memory stays bounded; it appears whole when completed, never in part; a writer that
//! is dropped or fails aborts its upload, and one a SIGKILL cut short is noted for the next run.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use iceberg::io::{FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage};
use iceberg::{Error, ErrorKind, Result};
use object_store::multipart::{MultipartStore as _, PartId};
use object_store::path::Path as Key;
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use serde::{Deserialize, Serialize};

use super::bucket::{object_key, Bucket};
use super::notes::Note;
use super::upload::PART;

/// The storage of one bucket's tables.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketStorage {
    #[serde(skip)]
    bucket: Option<Arc<Bucket>>,
}

impl BucketStorage {
    pub fn new(bucket: Arc<Bucket>) -> Self {
        Self {
            bucket: Some(bucket),
        }
    }

    /// The bucket and the key of `path` (`s3://bucket/key`), which must be this bucket's.
    fn object(&self, path: &str) -> Result<(Arc<Bucket>, Key)> {
        let bucket = self.bucket.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "a bucket's storage without its bucket",
            )
        })?;
        let key = path
            .strip_prefix(&format!("s3://{}/", bucket.name))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::DataInvalid,
                    format!("{path} is not in bucket {}", bucket.name),
                )
            })?;
        let key = object_key(key);
        Ok((bucket, key))
    }
}

/// An object store error as the crate's, naming the object (never a credential).
fn failed(what: &str, path: &str, e: object_store::Error) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("{what} {path}: {}", crate::error::redact(&e.to_string())),
    )
}

fn not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

#[async_trait]
#[typetag::serde]
impl Storage for BucketStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        let (bucket, key) = self.object(path)?;
        match bucket.store.head(&key).await {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(failed("checking", path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let (bucket, key) = self.object(path)?;
        let meta = bucket
            .store
            .head(&key)
            .await
            .map_err(|e| failed("reading the size of", path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let (bucket, key) = self.object(path)?;
        let read = async { bucket.store.get(&key).await?.bytes().await };
        read.await.map_err(|e| failed("reading", path, e))
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        let (bucket, key) = self.object(path)?;
        Ok(Box::new(ObjectRead {
            bucket,
            key,
            path: path.to_owned(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        let (bucket, key) = self.object(path)?;
        bucket
            .store
            .put(&key, bs.into())
            .await
            .map(drop)
            .map_err(|e| failed("writing", path, e))
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        let (bucket, key) = self.object(path)?;
        Ok(Box::new(ObjectWrite {
            bucket,
            key,
            path: path.to_owned(),
            buffer: BytesMut::new(),
            upload: None,
            closed: false,
        }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let (bucket, key) = self.object(path)?;
        match bucket.store.delete(&key).await {
            Err(e) if !not_found(&e) => Err(failed("removing", path, e)),
            _ => Ok(()),
        }
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let (bucket, key) = self.object(path)?;
        // Only what is under the folder `path`, never `path-other`.
        let keys: Vec<Key> = bucket
            .store
            .list(Some(&key))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| failed("listing", path, e))?;
        for key in keys {
            match bucket.store.delete(&key).await {
                Err(e) if !not_found(&e) => return Err(failed("removing", key.as_ref(), e)),
                _ => {}
            }
        }
        Ok(())
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_owned()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_owned()))
    }
}

/// Ranges of one object.
struct ObjectRead {
    bucket: Arc<Bucket>,
    key: Key,
    path: String,
}

#[async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        self.bucket
            .store
            .get_range(&self.key, range)
            .await
            .map_err(|e| failed("reading", &self.path, e))
    }
}

/// One object being written: small ones in one request at close, larger ones as a multipart
/// upload, a part at a time.
struct ObjectWrite {
    bucket: Arc<Bucket>,
    key: Key,
    path: String,
    buffer: BytesMut,
    /// The upload's id, its note and the parts sent, once the object outgrew one part.
    upload: Option<(String, PathBuf, Vec<PartId>)>,
    closed: bool,
}

impl ObjectWrite {
    /// Sends the buffer as the next part.
    async fn send_part(&mut self) -> Result<()> {
        let store = &self.bucket.store;
        if self.upload.is_none() {
            let id = store
                .create_multipart(&self.key)
                .await
                .map_err(|e| failed("starting the upload of", &self.path, e))?;
            let note = Note::save(&self.path, &id).map_err(|e| {
                Error::new(ErrorKind::Unexpected, format!("noting an upload: {e:#}"))
            })?;
            self.upload = Some((id, note, Vec::new()));
        }
        let (id, _, parts) = self.upload.as_mut().expect("started");
        let data = self.buffer.split().freeze();
        let part = store
            .put_part(&self.key, id, parts.len(), data.into())
            .await
            .map_err(|e| failed("uploading a part of", &self.path, e))?;
        parts.push(part);
        Ok(())
    }
}

#[async_trait]
impl FileWrite for ObjectWrite {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        self.buffer.extend_from_slice(&bs);
        if self.buffer.len() >= PART {
            self.send_part().await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.closed, true) {
            return Err(Error::new(ErrorKind::Unexpected, "the file is closed"));
        }
        if self.upload.is_none() {
            let data = self.buffer.split().freeze();
            return self
                .bucket
                .store
                .put(&self.key, data.into())
                .await
                .map(drop)
                .map_err(|e| failed("writing", &self.path, e));
        }
        if !self.buffer.is_empty() {
            self.send_part().await?;
        }
        let (id, note, parts) = self.upload.take().expect("started");
        self.bucket
            .store
            .complete_multipart(&self.key, &id, parts)
            .await
            .map_err(|e| failed("completing", &self.path, e))?;
        let _ = std::fs::remove_file(note);
        Ok(())
    }
}

impl Drop for ObjectWrite {
    /// An upload never completed is aborted (best effort: its note stays until it is).
    fn drop(&mut self) {
        if let Some((id, note, _)) = self.upload.take() {
            let (bucket, key) = (self.bucket.clone(), self.key.clone());
            crate::runtime::runtime().spawn(async move {
                if bucket.store.abort_multipart(&key, &id).await.is_ok() {
                    let _ = std::fs::remove_file(note);
                }
            });
        }
    }
}
