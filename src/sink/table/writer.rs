//! Writes an export's rows as a table's data files: Parquet through the `iceberg` crate's
//! writers, which record each file's partition, row count and column bounds for the commit
//! (what lets readers prune files), one partition at a time.
//!
//! The rows arrive newest first, so each partition (a day, a month) arrives as one run of rows
//! and the clustered writer holds one file open at a time. Files go to the run's own folder
//! (`data/run-<id>/…`, [`super::pending`]), so a failed run's files are one folder to remove.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use arrow::array::AsArray as _;
use arrow::array::Int64Array;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use iceberg::arrow::{
    schema_to_arrow_schema, PartitionValueCalculator, RecordBatchPartitionSplitter,
};
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::spec::{PartitionKey, Transform};
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
/// of rows that come newest first), or one per partition (rule buckets, which come mixed).
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

/// The data files of one table, being written.
pub struct TableSink {
    writer: Partitions,
    splitter: RecordBatchPartitionSplitter,
    /// For one file at a time: finds where each run of a batch's rows begins.
    runs: Option<PartitionValueCalculator>,
    /// The table's columns as Arrow has them, with their Iceberg field ids.
    schema: SchemaRef,
    /// Where the files go, for messages.
    folder: String,
    /// The value of the table's `version` column in every row, for a table of incremental runs.
    version: Option<i64>,
}

impl TableSink {
    /// Starts writing data files of `table` under `folder` (the run's own); with `version`, each
    /// row gets it as its last column.
    pub fn create(
        table: &Table,
        folder: String,
        encoding: &Encoding,
        version: Option<i64>,
    ) -> Result<Self> {
        let metadata = table.metadata();
        let iceberg_schema = metadata.current_schema().clone();
        let schema = Arc::new(
            schema_to_arrow_schema(&iceberg_schema).context("the table's schema in Arrow")?,
        );
        let files = RollingFileWriterBuilder::new_with_default_file_size(
            ParquetWriterBuilder::new(properties(encoding.compression), iceberg_schema.clone()),
            table.file_io().clone(),
            DefaultLocationGenerator::with_data_location(folder.clone()),
            DefaultFileNameGenerator::new("part".to_owned(), None, DataFileFormat::Parquet),
        );
        let spec = metadata.default_partition_spec();
        let by_time = spec.fields().iter().all(|f| {
            matches!(
                f.transform,
                Transform::Year | Transform::Month | Transform::Day | Transform::Hour
            )
        });
        let builder = DataFileWriterBuilder::new(files);
        let (writer, runs) = match by_time {
            true => (
                Partitions::Clustered(Box::new(ClusteredWriter::new(builder))),
                Some(PartitionValueCalculator::try_new(spec, &iceberg_schema)?),
            ),
            false => (
                Partitions::Fanout(Box::new(FanoutWriter::new(builder))),
                None,
            ),
        };
        let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(
            iceberg_schema,
            spec.clone(),
        )
        .context("the table's partitioning")?;
        Ok(Self {
            writer,
            splitter,
            runs,
            schema,
            folder,
            version,
        })
    }

    /// `batch` in pieces of one partition each, in the order its rows come for one file at a
    /// time (the splitter alone groups them in no particular order).
    fn split(&self, batch: &RecordBatch) -> Result<Vec<(PartitionKey, RecordBatch)>> {
        let Some(calculator) = &self.runs else {
            return Ok(self.splitter.split(batch)?);
        };
        let values = calculator.calculate(batch)?;
        let runs = arrow::compute::kernels::partition::partition(values.as_struct().columns())?;
        let mut parts = Vec::new();
        for range in runs.ranges() {
            parts.extend(
                self.splitter
                    .split(&batch.slice(range.start, range.len()))?,
            );
        }
        Ok(parts)
    }

    fn failed(&self, e: iceberg::Error) -> anyhow::Error {
        full_disk(&e, &self.folder)
            .unwrap_or_else(|| anyhow::Error::from(e).context(format!("writing {}", self.folder)))
    }
}

impl Sink<Vec<DataFile>> for TableSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        // The same columns, labelled with the table's field ids (and Iceberg's UTC offset).
        let mut columns = crate::model::conform(batch, &self.schema)?
            .columns()
            .to_vec();
        if let Some(version) = self.version {
            columns.push(Arc::new(Int64Array::from_value(version, batch.num_rows())));
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .context("the export's rows as the table's columns")?;
        let parts = self.split(&batch)?;
        for (partition, rows) in parts {
            let written = runtime().block_on(self.writer.write(partition, rows));
            written.map_err(|e| self.failed(e))?;
        }
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<Vec<DataFile>> {
        let folder = self.folder.clone();
        runtime()
            .block_on(self.writer.close())
            .map_err(|e| full_disk(&e, &folder).unwrap_or_else(|| e.into()))
            .with_context(|| format!("finishing the data files in {folder}"))
    }
}

/// The one-line full-disk error, when that is what `e` is: the crate's local file writer keeps
/// only the text of the operating system's error (`… (os error 28)`), not the error itself.
fn full_disk(e: &iceberg::Error, folder: &str) -> Option<anyhow::Error> {
    let text = e.to_string();
    text.contains(&format!("(os error {})", libc::ENOSPC))
        .then(|| {
            let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
            crate::sink::file::full_disk_writing(io, &format!("the table's data files in {folder}"))
                .into()
        })
}
