//! `verify` for a table: its current snapshot against the files it references. An Iceberg
//! table is its own manifest: the snapshot's manifests name every data file with its size and
//! row count, and its summary the total. Each file is checked where it is (a folder, or S3):
//! present, of the recorded size, a Parquet file whose footer holds the recorded rows; and the
//! rows of all files add up to the summary's `total-records`. Only footers are read, so a table
//! of any size verifies in a few requests per file.

use anyhow::{Context as _, Result};
use iceberg::spec::ManifestList;
use iceberg::table::Table;
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use parquet::file::FOOTER_SIZE;

use super::TableOutput;
use crate::runtime::runtime;

/// One data file of the snapshot, as recorded, and what was found.
pub struct FileCheck {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// `ok`, or what differs.
    pub status: String,
}

/// What `verify` reports of a table.
pub struct TableCheck {
    /// The current snapshot; `None` for a table with none yet.
    pub snapshot: Option<i64>,
    pub files: Vec<FileCheck>,
    /// The snapshot summary's `total-records`, and the rows the files record.
    pub total: Option<u64>,
    pub counted: u64,
}

/// Loads `output` from its catalog and checks its current snapshot.
pub fn check(output: &TableOutput) -> Result<TableCheck> {
    let catalog = output.catalog.open(&output.warehouse)?;
    let exists = runtime().block_on(catalog.table_exists(&output.ident))?;
    if !exists {
        anyhow::bail!(crate::error::UsageError(format!(
            "no table {} in catalog {}: check --output, --catalog and --warehouse",
            output.shown(),
            output.catalog.shown()
        )));
    }
    let table = runtime()
        .block_on(catalog.load_table(&output.ident))
        .with_context(|| format!("loading table {}", output.shown()))?;
    runtime().block_on(check_table(&table))
}

async fn check_table(table: &Table) -> Result<TableCheck> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(TableCheck {
            snapshot: None,
            files: Vec::new(),
            total: None,
            counted: 0,
        });
    };
    let file_io = table.file_io();
    let bytes = file_io
        .new_input(snapshot.manifest_list())?
        .read()
        .await
        .with_context(|| format!("reading the manifest list {}", snapshot.manifest_list()))?;
    let list = ManifestList::parse_with_version(&bytes, table.metadata().format_version())?;
    let mut files = Vec::new();
    for manifest in list.entries() {
        let manifest = manifest
            .load_manifest(file_io)
            .await
            .with_context(|| format!("reading the manifest {}", manifest.manifest_path))?;
        for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
            let (path, rows, bytes) = (
                entry.file_path().to_owned(),
                entry.record_count(),
                entry.file_size_in_bytes(),
            );
            let status = match footer_rows(table, &path, bytes).await {
                Ok(found) if found != rows => format!("holds {found} rows"),
                Ok(_) => "ok".to_owned(),
                Err(e) => crate::error::one_line(&e),
            };
            files.push(FileCheck {
                path,
                rows,
                bytes,
                status,
            });
        }
    }
    let total = snapshot
        .summary()
        .additional_properties
        .get("total-records")
        .and_then(|t| t.parse().ok());
    Ok(TableCheck {
        snapshot: Some(snapshot.snapshot_id()),
        counted: files.iter().map(|f| f.rows).sum(),
        files,
        total,
    })
}

/// The rows the Parquet footer of the data file at `path` holds, once its size is `bytes`.
async fn footer_rows(table: &Table, path: &str, bytes: u64) -> Result<u64> {
    let input = table.file_io().new_input(path)?;
    if !input.exists().await? {
        anyhow::bail!("missing");
    }
    let size = input.metadata().await?.size;
    if size != bytes {
        anyhow::bail!("size differs ({size} bytes now)");
    }
    if size < 2 * FOOTER_SIZE as u64 {
        anyhow::bail!("not a Parquet file ({size} bytes)");
    }
    let reader = input.reader().await?;
    let tail = reader.read(size - FOOTER_SIZE as u64..size).await?;
    let tail: [u8; FOOTER_SIZE] = tail.as_ref().try_into().context("the footer")?;
    let length = FooterTail::try_new(&tail)
        .context("not a Parquet file (no footer)")?
        .metadata_length() as u64;
    let start = (size - FOOTER_SIZE as u64)
        .checked_sub(length)
        .context("not a Parquet file (its footer is longer than the file)")?;
    let metadata = reader.read(start..size - FOOTER_SIZE as u64).await?;
    let metadata = ParquetMetaDataReader::decode_metadata(&metadata)
        .context("not a Parquet file (unreadable footer)")?;
    Ok(metadata.file_metadata().num_rows() as u64)
}
