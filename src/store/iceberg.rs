//! The stores as the `iceberg` crate's storage (its `FileIO`): the catalog builds one storage
//! for every path it meets, and this one hands each path to the store that holds it
//! ([`super::url::of_recorded`]), which answers with its own `iceberg` storage. Nothing here
//! knows which stores there are.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt as _;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use iceberg::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

use super::url::of_recorded;

/// The storage of every warehouse.
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

/// The storage of the store that holds `path`.
fn of(path: &str) -> Result<Arc<dyn Storage>> {
    let location = of_recorded(path).map_err(|e| Error::new(ErrorKind::DataInvalid, e.0))?;
    Ok(location.store().iceberg())
}

#[async_trait]
#[typetag::serde]
impl Storage for WarehouseStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        of(path)?.exists(path).await
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        of(path)?.metadata(path).await
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        of(path)?.read(path).await
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        of(path)?.reader(path).await
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        of(path)?.write(path, bs).await
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        of(path)?.writer(path).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        of(path)?.delete(path).await
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        of(path)?.delete_prefix(path).await
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
