//! Where a table's files are read and written: a local folder, or S3 and S3-compatible servers
//! (`--warehouse s3://bucket/prefix`) through the same `object_store` client, AWS settings and
//! retries as `s3://` outputs ([`crate::sink::object`]).
//!
//! The `iceberg` crate (0.10) reaches files through a `Storage` its catalog builds from a
//! factory, and ships only a local one (its S3 storage is a separate crate over OpenDAL, a
//! second S3 client and a large build). [`WarehouseStorage`] sends `s3://` paths to the bucket
//! and every other path to the crate's local storage. A data file is written as a multipart
//! upload of [`PART`]-sized parts, awaited one at a time, so memory stays bounded: it appears
//! whole when completed, never in part; a writer that is dropped or fails aborts its upload.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, LocalFsStorage, OutputFile, Storage,
    StorageConfig, StorageFactory,
};
use iceberg::{Error, ErrorKind, Result};
use object_store::multipart::{MultipartStore as _, PartId};
use object_store::path::Path as Key;
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use serde::{Deserialize, Serialize};

use crate::sink::object::{Bucket, PART};

/// The storage of every warehouse: S3 for `s3://` paths, the local file system otherwise.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WarehouseStorage;

/// What builds it, for the catalog.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WarehouseStorageFactory;

#[typetag::serde]
impl StorageFactory for WarehouseStorageFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(WarehouseStorage))
    }
}

/// `s3://bucket/key` as the bucket's client and the key; `None` for a local path.
fn object(path: &str) -> Result<Option<(Arc<Bucket>, Key)>> {
    let Some(rest) = path.strip_prefix("s3://") else {
        return Ok(None);
    };
    let (name, key) = rest.split_once('/').unwrap_or((rest, ""));
    // As written: `Key::from` would escape a `%` again.
    let key = Key::parse(key).unwrap_or_else(|_| Key::from(key));
    Ok(Some((bucket(name)?, key)))
}

/// One client per bucket for the whole run (its connections are reused).
fn bucket(name: &str) -> Result<Arc<Bucket>> {
    static BUCKETS: OnceLock<Mutex<HashMap<String, Arc<Bucket>>>> = OnceLock::new();
    let mut buckets = BUCKETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(bucket) = buckets.get(name) {
        return Ok(bucket.clone());
    }
    let bucket = Bucket::open(name).map_err(|e| Error::new(ErrorKind::DataInvalid, e.0))?;
    buckets.insert(name.to_owned(), bucket.clone());
    Ok(bucket)
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
impl Storage for WarehouseStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        let Some((bucket, key)) = object(path)? else {
            return LocalFsStorage.exists(path).await;
        };
        match bucket.store.head(&key).await {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(failed("checking", path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let Some((bucket, key)) = object(path)? else {
            return LocalFsStorage.metadata(path).await;
        };
        let meta = bucket
            .store
            .head(&key)
            .await
            .map_err(|e| failed("reading the size of", path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let Some((bucket, key)) = object(path)? else {
            return LocalFsStorage.read(path).await;
        };
        let read = async { bucket.store.get(&key).await?.bytes().await };
        read.await.map_err(|e| failed("reading", path, e))
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        let Some((bucket, key)) = object(path)? else {
            return LocalFsStorage.reader(path).await;
        };
        Ok(Box::new(ObjectRead {
            bucket,
            key,
            path: path.to_owned(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        let Some((bucket, key)) = object(path)? else {
            return LocalFsStorage.write(path, bs).await;
        };
        bucket
            .store
            .put(&key, bs.into())
            .await
            .map(drop)
            .map_err(|e| failed("writing", path, e))
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        let Some((bucket, key)) = object(path)? else {
            return LocalFsStorage.writer(path).await;
        };
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
        let Some((bucket, key)) = object(path)? else {
            return LocalFsStorage.delete(path).await;
        };
        match bucket.store.delete(&key).await {
            Err(e) if !not_found(&e) => Err(failed("removing", path, e)),
            _ => Ok(()),
        }
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let Some((bucket, key)) = object(path)? else {
            return LocalFsStorage.delete_prefix(path).await;
        };
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
    /// The upload's id and the parts sent, once the object outgrew one part.
    upload: Option<(String, Vec<PartId>)>,
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
            self.upload = Some((id, Vec::new()));
        }
        let (id, parts) = self.upload.as_mut().expect("started");
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
        let (id, parts) = self.upload.take().expect("started");
        self.bucket
            .store
            .complete_multipart(&self.key, &id, parts)
            .await
            .map(drop)
            .map_err(|e| failed("completing", &self.path, e))
    }
}

impl Drop for ObjectWrite {
    /// An upload never completed is aborted (best effort: S3 keeps its parts otherwise).
    fn drop(&mut self) {
        if let Some((id, _)) = self.upload.take() {
            let (bucket, key) = (self.bucket.clone(), self.key.clone());
            crate::runtime::runtime()
                .spawn(async move { bucket.store.abort_multipart(&key, &id).await });
        }
    }
}
