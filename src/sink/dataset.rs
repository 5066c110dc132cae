//! Partitioned datasets: a Hive-style folder (`OUTPUT/date=2026-02-01/part-0.parquet`) that
//! appears whole: the store stages it (a hidden folder swapped in, or uploads completed at
//! commit) and the commit protocol puts it in place.
//!
//! Rows arrive in the export's order, so each partition's rows come together: by day and month
//! because the export is ordered by time, by rule because a rule-partitioned export (and an
//! incremental run into one) is read ordered by rule id first, with the id as an extra last
//! column that the files do not get. One part file is open at a time per format, whatever the
//! number of partitions, so memory stays flat; a partition rolls over to `part-1`, ... at
//! `--max-rows-per-file`. A partition that comes back later gets the next part number. Within a
//! file rows stay newest first.

use std::collections::HashMap;

use anyhow::{bail, Context as _, Result};
use arrow::array::{Array, AsArray as _};
use arrow::datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use chrono::DateTime;

use super::format::{Encoding, Format};
use super::Sink;
use crate::model;
use crate::store::{Staged, StagedDir, Target};

/// What a dataset is split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PartitionBy {
    /// The event's UTC day: `date=2026-02-01`.
    Day,
    /// The event's UTC month: `month=2026-02`.
    Month,
    /// The rule's id: `rule_id=17` (the name, up to 1,020 bytes, would not fit a folder
    /// name; it stays a column).
    Rule,
}

impl PartitionBy {
    /// The column of the batches the partition is computed from (for rules, one the query adds
    /// after the model's: [`model::RULE_ID`]).
    fn column(self) -> &'static str {
        match self {
            PartitionBy::Day | PartitionBy::Month => "timestamp",
            PartitionBy::Rule => model::RULE_ID,
        }
    }
}

/// A format's files of a partitioned dataset, written as rows come.
pub struct DatasetSink {
    dir: Box<dyn StagedDir>,
    /// The dataset's target: its parts are written as it is.
    target: Target,
    format: &'static Format,
    schema: SchemaRef,
    encoding: Encoding,
    by: PartitionBy,
    max_rows: u64,
    /// The open part: its partition, sink and rows so far.
    current: Option<(String, Box<dyn Sink>, u64)>,
    /// The next part number of every partition seen.
    parts: HashMap<String, usize>,
}

impl DatasetSink {
    /// Starts the dataset at `target` in `format`, split `by`.
    pub fn create(
        target: &Target,
        format: &'static Format,
        schema: SchemaRef,
        encoding: &Encoding,
        by: PartitionBy,
        max_rows: u64,
    ) -> Result<Self> {
        Ok(Self {
            dir: target.create_dir()?,
            target: target.clone(),
            format,
            schema,
            encoding: *encoding,
            by,
            max_rows: max_rows.max(1),
            current: None,
            parts: HashMap::new(),
        })
    }

    /// Writes `rows` of `batch` (all of one partition) to that partition's open part.
    fn write_run(&mut self, key: &str, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let reuse = matches!(&self.current, Some((k, _, n)) if k == key && *n < self.max_rows);
            if !reuse {
                self.finish_part()?;
                self.open_part(key)?;
            }
            let (_, sink, rows) = self.current.as_mut().expect("just opened");
            let room = (self.max_rows - *rows) as usize;
            let take = room.min(batch.num_rows() - offset);
            sink.write_batch(&batch.slice(offset, take))?;
            *rows += take as u64;
            offset += take;
        }
        Ok(())
    }

    fn open_part(&mut self, key: &str) -> Result<()> {
        let part = self.parts.entry(key.to_owned()).or_insert(0);
        let relative = format!(
            "{key}/part-{part}.{}",
            self.format.file_extension(&self.encoding)
        );
        *part += 1;
        let target = self
            .target
            .at(self.target.at.with_key(self.dir.part_key(&relative)));
        let sink = self
            .format
            .open(&target, self.schema.clone(), &self.encoding)?;
        self.current = Some((key.to_owned(), sink, 0));
        Ok(())
    }

    /// Closes the open part and hands it to the dataset, which keeps it until the commit.
    fn finish_part(&mut self) -> Result<()> {
        let Some((_, sink, _)) = self.current.take() else {
            return Ok(());
        };
        let Staged::File(file) = sink.close()? else {
            bail!("a part of a dataset is a file");
        };
        self.dir.add(file)
    }

    /// Where in `batch` each partition's rows start, and the partition's folder name: rows of one
    /// partition come together, so the name is made once a run, not once a row.
    fn runs(&self, batch: &RecordBatch) -> Result<Vec<(usize, String)>> {
        let column = batch
            .schema()
            .index_of(self.by.column())
            .with_context(|| format!("the export has no {} column", self.by.column()))?;
        let array = batch.column(column);
        let mut runs = Vec::new();
        match self.by {
            PartitionBy::Day | PartitionBy::Month => {
                let stamps = array.as_primitive::<TimestampMicrosecondType>();
                let mut previous = None;
                for row in 0..batch.num_rows() {
                    let day = stamps.value(row).div_euclid(DAY);
                    if previous == Some(day) {
                        continue;
                    }
                    previous = Some(day);
                    let date = DateTime::from_timestamp_micros(day * DAY)
                        .map(|t| t.date_naive())
                        .context(
                            "a timestamp outside the calendar (infinity) cannot be partitioned",
                        )?;
                    let key = match self.by {
                        PartitionBy::Day => format!("date={}", date.format("%Y-%m-%d")),
                        _ => format!("month={}", date.format("%Y-%m")),
                    };
                    if runs.last().is_none_or(|(_, k)| *k != key) {
                        runs.push((row, key));
                    }
                }
            }
            PartitionBy::Rule => {
                let ids = array
                    .as_primitive_opt::<Int64Type>()
                    .context("a rule id is a BIGINT")?;
                let value = |row: usize| (!ids.is_null(row)).then(|| ids.value(row));
                for row in 0..batch.num_rows() {
                    if row == 0 || value(row) != value(row - 1) {
                        let id =
                            value(row).map_or_else(|| NULL_PARTITION.into(), |v| v.to_string());
                        runs.push((row, format!("{}={id}", model::RULE_ID)));
                    }
                }
            }
        }
        Ok(runs)
    }
}

/// Microseconds in a day.
const DAY: i64 = 86_400_000_000;

impl Sink for DatasetSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let runs = self.runs(batch)?;
        // The files hold the model's columns; what the query added to split by goes no further.
        let columns = self.schema.fields().len();
        let batch = &match batch.num_columns() > columns {
            true => batch.project(&(0..columns).collect::<Vec<_>>())?,
            false => batch.clone(),
        };
        for (i, (start, key)) in runs.iter().enumerate() {
            let end = runs.get(i + 1).map_or(batch.num_rows(), |(next, _)| *next);
            self.write_run(key, &batch.slice(*start, end - start))?;
        }
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<Staged> {
        self.finish_part()?;
        let DatasetSink { dir, .. } = *self;
        Ok(Staged::Dir(dir))
    }
}

/// Hive's folder value for NULL.
const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";
