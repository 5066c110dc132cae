//! The local file system as the `iceberg` crate's storage: the crate's own, but for writing,
//! where its errors keep only the text of the operating system's error. Here they keep the
//! error itself, so a full disk under a table's data files is told by its kind, not its text.

use std::io::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, LocalFsStorage, OutputFile, Storage,
};
use iceberg::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

/// The local tables' storage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LocalTableStorage;

/// `file:///x`, `file:/x` or `/x` as a path.
fn path_of(path: &str) -> std::path::PathBuf {
    let local = path
        .strip_prefix("file://")
        .or_else(|| path.strip_prefix("file:"))
        .unwrap_or(path);
    std::path::PathBuf::from(format!("/{}", local.trim_start_matches('/')))
}

/// `e` as the crate's error, naming what failed and keeping the error itself.
fn failed(what: &str, path: &str, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Unexpected, format!("{what} {path}")).with_source(e)
}

#[async_trait]
#[typetag::serde]
impl Storage for LocalTableStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        LocalFsStorage.exists(path).await
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        LocalFsStorage.metadata(path).await
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        LocalFsStorage.read(path).await
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        LocalFsStorage.reader(path).await
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        let mut writer = self.writer(path).await?;
        writer.write(bs).await?;
        writer.close().await
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        let local = path_of(path);
        if let Some(folder) = local.parent() {
            std::fs::create_dir_all(folder)
                .map_err(|e| failed("creating a folder for", path, e))?;
        }
        let file = std::fs::File::create(&local).map_err(|e| failed("creating", path, e))?;
        Ok(Box::new(LocalWrite {
            file: Some(file),
            path: path.to_owned(),
        }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        LocalFsStorage.delete(path).await
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        LocalFsStorage.delete_prefix(path).await
    }

    async fn delete_stream(&self, paths: BoxStream<'static, String>) -> Result<()> {
        LocalFsStorage.delete_stream(paths).await
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_owned()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_owned()))
    }
}

/// A file being written in place (a table's files go to a folder of their run's own).
struct LocalWrite {
    file: Option<std::fs::File>,
    path: String,
}

#[async_trait]
impl FileWrite for LocalWrite {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::DataInvalid, "the file is closed"))?;
        file.write_all(&bs)
            .map_err(|e| failed("writing", &self.path, e))
    }

    async fn close(&mut self) -> Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::new(ErrorKind::DataInvalid, "the file is closed"))?;
        file.sync_all()
            .map_err(|e| failed("syncing", &self.path, e))
    }
}
