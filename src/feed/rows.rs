//! Change rows gathered into Arrow batches, column by column, as the decoder pushes them: what
//! every destination that writes files (change files, an Iceberg table) hands to its sinks.
//! Built as instants and typed as the table keeps its timestamp (naive with `USE_TZ = False`).

use std::sync::Arc;

use anyhow::{Context as _, Result};
use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::change::Value;
use crate::model::{self, Kind, Zone};

/// Changes per batch handed to the sinks.
pub const BATCH: usize = 8_192;

/// Change rows being gathered.
pub struct Rows {
    builders: Vec<Builder>,
    /// The change columns as the table types them.
    schema: SchemaRef,
}

impl Rows {
    pub fn new(zone: Zone) -> Self {
        Self {
            builders: model::change_columns()
                .iter()
                .map(|c| Builder::new(c.kind))
                .collect(),
            schema: model::change_schema(zone),
        }
    }

    /// The schema of the batches [`Self::take`] gives.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Adds one change: a value for each change column, in order.
    pub fn push(&mut self, row: &[Value]) -> Result<()> {
        for (builder, value) in self.builders.iter_mut().zip(row) {
            builder.append(value)?;
        }
        Ok(())
    }

    /// Rows gathered since the last [`Self::take`].
    pub fn len(&self) -> usize {
        self.builders[0].len()
    }

    /// Whether a batch is full: time to hand it on.
    pub fn full(&self) -> bool {
        self.len() >= BATCH
    }

    /// The rows gathered so far as one batch, and a fresh start; `None` when there are none.
    pub fn take(&mut self) -> Result<Option<RecordBatch>> {
        if self.len() == 0 {
            return Ok(None);
        }
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        let built = RecordBatch::try_new(model::change_schema(Zone::Aware), columns)
            .context("a batch of change rows")?;
        Ok(Some(model::conform(&built, &self.schema)?))
    }
}

/// A column of change rows being gathered, by kind.
enum Builder {
    Int64(Int64Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Text(StringBuilder),
    Bool(BooleanBuilder),
}

impl Builder {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Int64 => Builder::Int64(Int64Builder::with_capacity(BATCH)),
            Kind::Timestamp => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(BATCH).with_timezone("UTC"),
            ),
            Kind::Text => Builder::Text(StringBuilder::with_capacity(BATCH, BATCH * 16)),
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(BATCH)),
        }
    }

    fn append(&mut self, value: &Value) -> Result<()> {
        match (self, value) {
            (Builder::Int64(b), Value::Int64(v)) => b.append_value(*v),
            (Builder::Int64(b), Value::Null) => b.append_null(),
            (Builder::Timestamp(b), Value::Timestamp(v)) => b.append_value(*v),
            (Builder::Timestamp(b), Value::Null) => b.append_null(),
            (Builder::Text(b), Value::Text(v)) => b.append_value(v),
            (Builder::Text(b), Value::Null) => b.append_null(),
            (Builder::Bool(b), Value::Bool(v)) => b.append_value(*v),
            (Builder::Bool(b), Value::Null) => b.append_null(),
            (_, value) => anyhow::bail!("a change value {value:?} of the wrong kind"),
        }
        Ok(())
    }

    fn len(&self) -> usize {
        match self {
            Builder::Int64(b) => b.len(),
            Builder::Timestamp(b) => b.len(),
            Builder::Text(b) => b.len(),
            Builder::Bool(b) => b.len(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
        }
    }
}
