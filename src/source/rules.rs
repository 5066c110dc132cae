//! The join to `rules`, done here for the sequential plan: its page ranges read `events` alone
//! (with `rule_id`), and the rule's columns are added from the rules table, read once in the
//! same snapshot, as the sorted rows go to the sinks. PostgreSQL then scans without a hash
//! join, and a rule's name crosses the wire, DuckDB's parser and the sort's spill once instead
//! of once per event (120-character names are most of a row). Same rows as the SQL join: an
//! event whose rule is missing is dropped, as the inner join drops it.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use arrow::array::{Array, ArrayRef, AsArray as _, BooleanArray, StringArray, UInt32Array};
use arrow::compute::{filter_record_batch, take};
use arrow::datatypes::{Field, Int64Type, Schema};
use arrow::record_batch::RecordBatch;

use super::engine::Engine;
use super::query;
use crate::model::{self, Origin};

/// Every rule, by id, with the values of the rule columns the model uses.
pub struct Rules {
    /// The position of rule `id` in `columns`.
    index: Index,
    /// One array per rule column of the model, in its order.
    columns: Vec<ArrayRef>,
}

impl Rules {
    /// Reads the rules on `engine` (in the export's transaction, so in its snapshot).
    pub fn read(engine: &Engine) -> Result<Self> {
        let mut ids = Vec::new();
        let mut values: Vec<Vec<Option<String>>> = vec![Vec::new(); model::rule_columns().count()];
        engine
            .for_each_batch(&query::rules(), |batch| {
                let id = batch
                    .column(0)
                    .as_primitive_opt::<Int64Type>()
                    .context("rule ids")?;
                ids.extend(id.iter().map(Option::unwrap_or_default));
                for (i, column) in values.iter_mut().enumerate() {
                    let text = batch
                        .column(i + 1)
                        .as_string_opt::<i32>()
                        .context("rule text")?;
                    column.extend(text.iter().map(|v| v.map(str::to_owned)));
                }
                Ok(())
            })
            .context("reading the rules")?;
        Ok(Self {
            index: Index::new(&ids),
            columns: values
                .into_iter()
                .map(|v| Arc::new(StringArray::from(v)) as ArrayRef)
                .collect(),
        })
    }

    /// `batch` without the events whose rule is missing (the inner join's rows).
    pub fn keep_known(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let ids = rule_ids(batch)?;
        let known = |id: &Option<i64>| id.and_then(|id| self.index.get(id)).is_some();
        if ids.iter().all(known) {
            return Ok(batch.clone());
        }
        let known: BooleanArray = ids.iter().map(|id| Some(known(id))).collect();
        Ok(filter_record_batch(batch, &known)?)
    }

    /// The export's columns of `batch` (events with `rule_id` last, all of known rules): the
    /// rule's columns taken from the rules, in the model's order.
    pub fn join(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let places: UInt32Array = rule_ids(batch)?
            .iter()
            .map(|id| id.and_then(|id| self.index.get(id)))
            .collect();
        let mut rule = self.columns.iter();
        let mut fields = Vec::with_capacity(model::EVENT.len());
        let mut columns = Vec::with_capacity(model::EVENT.len());
        for column in &model::EVENT {
            let array = match column.origin {
                Origin::Rule(_) => take(rule.next().context("a rule column")?, &places, None)?,
                _ => batch
                    .column_by_name(column.name)
                    .with_context(|| format!("the read has no {} column", column.name))?
                    .clone(),
            };
            fields.push(Field::new(column.name, array.data_type().clone(), true));
            columns.push(array);
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

/// Rule ids to positions: a table when the ids are small (they are a sequence), else a map.
enum Index {
    Dense(Vec<Option<u32>>),
    Sparse(HashMap<i64, u32>),
}

impl Index {
    /// Ids below this are looked up in a table (4 MB at most).
    const DENSE_BELOW: i64 = 1 << 19;

    fn new(ids: &[i64]) -> Self {
        if ids.iter().all(|&id| (0..Self::DENSE_BELOW).contains(&id)) {
            let size = ids.iter().max().map_or(0, |&m| m as usize + 1);
            let mut table = vec![None; size];
            for (place, &id) in ids.iter().enumerate() {
                table[id as usize] = Some(place as u32);
            }
            return Index::Dense(table);
        }
        Index::Sparse(
            ids.iter()
                .enumerate()
                .map(|(i, &id)| (id, i as u32))
                .collect(),
        )
    }

    fn get(&self, id: i64) -> Option<u32> {
        match self {
            Index::Dense(table) => usize::try_from(id)
                .ok()
                .and_then(|i| table.get(i).copied().flatten()),
            Index::Sparse(map) => map.get(&id).copied(),
        }
    }
}

fn rule_ids(batch: &RecordBatch) -> Result<Vec<Option<i64>>> {
    let column = batch
        .column_by_name(model::RULE_ID)
        .context("the read has no rule_id column")?
        .as_primitive_opt::<Int64Type>()
        .context("rule_id is not a 64-bit integer")?;
    Ok((0..column.len())
        .map(|i| column.is_valid(i).then(|| column.value(i)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_found_in_a_table_or_a_map() {
        for ids in [vec![3, 1, 7], vec![3, -1, 1 << 40]] {
            let index = Index::new(&ids);
            assert!(matches!(index, Index::Dense(_)) == (ids[1] == 1));
            for (place, id) in ids.iter().enumerate() {
                assert_eq!(index.get(*id), Some(place as u32));
            }
            assert_eq!(index.get(2), None);
            assert_eq!(index.get(-5), None);
            assert_eq!(index.get(1 << 41), None);
        }
    }
}
