//! Writes an export's rows as a table's data files: Parquet through the `iceberg` crate's
//! writers, which record each file's partition, row count and column bounds for the commit
//! (what lets readers prune files), one partition at a time.
//!
//! The rows arrive newest first, so each partition (a day, a month) arrives as one run of rows:
//! a batch is cut into its runs (slices, not copies), and a clustered writer holds one file open
//! at a time. Two such writers, on threads of their own, take alternate partitions, so encoding
//! runs on two cores as the Parquet sink's does. Files go to the run's own folder
//! (`data/run-<id>/…`, [`super::pending`]), so a failed run's files are one folder to remove.

use std::hash::{Hash as _, Hasher as _};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context as _, Result};
use arrow::array::AsArray as _;
use arrow::array::{new_null_array, Int64Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use iceberg::arrow::{
    arrow_struct_to_literal, schema_to_arrow_schema, PartitionValueCalculator,
    RecordBatchPartitionSplitter,
};
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::spec::{
    Literal, PartitionKey, PartitionSpec, SchemaRef as IcebergSchemaRef, StructType, Transform,
};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::clustered_writer::ClusteredWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::PartitioningWriter as _;

use crate::runtime::runtime;
use crate::sink::format::Encoding;
use crate::sink::parquet::properties;
use crate::sink::Sink;

type Builder =
    DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

/// One file open at a time, for partitions that arrive one after the other (days and months
/// of rows that come newest first), or one per partition (rule buckets, which come mixed, and
/// changes, which come in commit order).
enum Partitions {
    Clustered(Box<ClusteredWriter<Builder>>),
    Fanout(Box<FanoutWriter<Builder>>),
}

impl Partitions {
    async fn write(&mut self, key: PartitionKey, rows: RecordBatch) -> iceberg::Result<()> {
        match self {
            Self::Clustered(w) => w.write(key, rows).await,
            Self::Fanout(w) => w.write(key, rows).await,
        }
    }

    async fn close(self) -> iceberg::Result<Vec<DataFile>> {
        match self {
            Self::Clustered(w) => w.close().await,
            Self::Fanout(w) => w.close().await,
        }
    }
}

/// Files encoded at once. Partitions are independent files, so two threads encode side by side
/// (as the Parquet sink encodes columns on two): each takes the partitions whose key hashes to
/// it, so a partition stays on one thread and each thread's partitions come in order.
const WORKERS: usize = 2;
/// Pieces of rows waiting per worker.
const QUEUE: usize = 16;

type Piece = (PartitionKey, RecordBatch);

/// A thread writing some of the partitions.
struct Worker {
    sender: Option<SyncSender<Piece>>,
    thread: Option<JoinHandle<iceberg::Result<Vec<DataFile>>>>,
}

impl Worker {
    fn start(mut writer: Partitions) -> Result<Self> {
        let (sender, pieces) = sync_channel::<Piece>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("export-events-table".into())
            .spawn(move || {
                for (key, rows) in pieces {
                    runtime().block_on(writer.write(key, rows))?;
                }
                runtime().block_on(writer.close())
            })
            .context("starting a table writer thread")?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Waits for the thread: its files, or its error.
    fn finish(&mut self) -> Result<iceberg::Result<Vec<DataFile>>> {
        self.sender = None;
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("a table writer thread panicked")),
            None => Ok(Ok(Vec::new())),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // However the run ends, the files are closed before their folder may be removed.
        let _ = self.finish();
    }
}

/// The data files of one table, being written.
pub struct TableSink {
    workers: Vec<Worker>,
    splitter: RecordBatchPartitionSplitter,
    /// For one file at a time: the partition of each row, to find where each run of rows begins.
    runs: Option<(
        PartitionValueCalculator,
        StructType,
        PartitionSpec,
        IcebergSchemaRef,
    )>,
    /// The table's columns as Arrow has them, with their Iceberg field ids.
    schema: SchemaRef,
    /// Where the files go, for messages.
    folder: String,
    /// The value of the table's `version` column in every row, for a table of incremental runs.
    version: Option<i64>,
}

impl TableSink {
    /// Starts writing data files of `table` under `folder` (the run's own); with `version`, each
    /// row gets it as its last column. Rows come ordered by the column `ordered_by`, if any: a
    /// table partitioned by its time then gets one open file at a time.
    pub fn create(
        table: &Table,
        folder: String,
        encoding: &Encoding,
        version: Option<i64>,
        ordered_by: Option<&str>,
    ) -> Result<Self> {
        let metadata = table.metadata();
        let iceberg_schema = metadata.current_schema().clone();
        let schema = Arc::new(
            schema_to_arrow_schema(&iceberg_schema).context("the table's schema in Arrow")?,
        );
        let spec = metadata.default_partition_spec();
        let ordered = ordered_by.and_then(|c| iceberg_schema.field_id_by_name(c));
        let by_time = spec.fields().iter().all(|f| {
            Some(f.source_id) == ordered
                && matches!(
                    f.transform,
                    Transform::Year | Transform::Month | Transform::Day | Transform::Hour
                )
        });
        // One file-name generator for all workers: names stay unique.
        let names = DefaultFileNameGenerator::new("part".to_owned(), None, DataFileFormat::Parquet);
        let workers = (0..WORKERS)
            .map(|_| {
                let files = RollingFileWriterBuilder::new_with_default_file_size(
                    ParquetWriterBuilder::new(
                        properties(encoding.compression),
                        iceberg_schema.clone(),
                    ),
                    table.file_io().clone(),
                    DefaultLocationGenerator::with_data_location(folder.clone()),
                    names.clone(),
                );
                let builder = DataFileWriterBuilder::new(files);
                Worker::start(match by_time {
                    true => Partitions::Clustered(Box::new(ClusteredWriter::new(builder))),
                    false => Partitions::Fanout(Box::new(FanoutWriter::new(builder))),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let runs = match by_time {
            true => Some((
                PartitionValueCalculator::try_new(spec, &iceberg_schema)?,
                spec.partition_type(&iceberg_schema)?,
                spec.as_ref().clone(),
                iceberg_schema.clone(),
            )),
            false => None,
        };
        let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(
            iceberg_schema,
            spec.clone(),
        )
        .context("the table's partitioning")?;
        Ok(Self {
            workers,
            splitter,
            runs,
            schema,
            folder,
            version,
        })
    }

    /// `batch` in pieces of one partition each: for one file at a time, its runs of rows in the
    /// order they come, as slices (the splitter alone groups rows in no particular order, by
    /// copying them).
    fn split(&self, batch: &RecordBatch) -> Result<Vec<Piece>> {
        let Some((calculator, partition_type, spec, schema)) = &self.runs else {
            return Ok(self.splitter.split(batch)?);
        };
        let values = calculator.calculate(batch)?;
        let runs = arrow::compute::kernels::partition::partition(values.as_struct().columns())?;
        let mut pieces = Vec::new();
        for range in runs.ranges() {
            let first = values.slice(range.start, 1);
            let key = match arrow_struct_to_literal(&first, partition_type)?.pop() {
                Some(Some(Literal::Struct(key))) => key,
                _ => anyhow::bail!("no partition value for the rows of {}", self.folder),
            };
            pieces.push((
                PartitionKey::new(spec.clone(), schema.clone(), key),
                batch.slice(range.start, range.len()),
            ));
        }
        Ok(pieces)
    }

    /// `batch` as the table's columns, matched by name (the table's order, its field ids): a
    /// table another engine reordered gets each value in its own column, and a column another
    /// engine added gets nulls. Timestamps are labelled as the table has them (Iceberg's UTC
    /// offset); the version column of a table of incremental runs gets the run's version.
    fn as_table_columns(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let batch = crate::model::conform(batch, &self.schema)?;
        let rows = batch.num_rows();
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|field| match batch.column_by_name(field.name()) {
                Some(column) => Ok(column.clone()),
                None => match (self.version, field.name() == crate::model::VERSION) {
                    (Some(version), true) => {
                        Ok(Arc::new(Int64Array::from_value(version, rows))
                            as arrow::array::ArrayRef)
                    }
                    // `catalog::check_columns` refused a required column it cannot fill.
                    _ if field.is_nullable() => Ok(new_null_array(field.data_type(), rows)),
                    _ => Err(anyhow::anyhow!(
                        "the table's column {} is required, and export-events has no value for it",
                        field.name()
                    )),
                },
            })
            .collect::<Result<Vec<_>>>()?;
        RecordBatch::try_new(self.schema.clone(), columns)
            .context("the export's rows as the table's columns")
    }

    /// The first failure of a worker, once a send to it failed (it stopped on an error).
    fn failure(&mut self) -> anyhow::Error {
        for worker in &mut self.workers {
            match worker.finish() {
                Err(e) => return e,
                Ok(Err(e)) => return self.failed(e),
                Ok(Ok(_)) => {}
            }
        }
        anyhow::anyhow!("a table writer thread stopped")
    }

    fn failed(&self, e: iceberg::Error) -> anyhow::Error {
        full_disk(&e, &self.folder)
            .unwrap_or_else(|| anyhow::Error::from(e).context(format!("writing {}", self.folder)))
    }
}

impl Sink<Vec<DataFile>> for TableSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = self.as_table_columns(batch)?;
        for piece in self.split(&batch)? {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            piece.0.data().hash(&mut hasher);
            let worker = (hasher.finish() % WORKERS as u64) as usize;
            let sent = match &self.workers[worker].sender {
                Some(sender) => sender.send(piece).is_ok(),
                None => false,
            };
            if !sent {
                return Err(self.failure());
            }
        }
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<Vec<DataFile>> {
        let mut files = Vec::new();
        let mut workers = std::mem::take(&mut self.workers);
        for worker in &mut workers {
            match worker.finish()? {
                Ok(written) => files.extend(written),
                Err(e) => {
                    return Err(self.failed(e))
                        .with_context(|| format!("finishing the data files in {}", self.folder))
                }
            }
        }
        Ok(files)
    }
}

/// The one-line full-disk error, when that is what `e` is: an `io::Error` of a full disk
/// somewhere in its chain of causes (the store's writers keep it).
fn full_disk(e: &iceberg::Error, folder: &str) -> Option<anyhow::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::StorageFull
                || io.raw_os_error() == Some(libc::ENOSPC)
            {
                let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
                let what = format!("the table's data files in {folder}");
                return Some(crate::store::file::full_disk_writing(io, &what).into());
            }
        }
        cause = error.source();
    }
    None
}
