//! The join to `rules`, done here for every plan that reads PostgreSQL for a plain export: the
//! queries read `events` alone (with `rule_id`), and the rule's columns are added from the
//! rules table, read once in the export's snapshot, as rows go to the sinks. PostgreSQL then
//! reads without a join (a third of the server's time for an ordered slice, measured in
//! `docs/performance.md`), and a rule's name crosses the wire, DuckDB's parser and any spill or
//! spool once instead of once per event (120-character names are most of a row). Same rows as
//! the SQL join: an event whose rule is missing is left out, as the inner join leaves it out.

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

    /// The export's columns of `batch` (events with `rule_id` last): the rule's columns taken
    /// from the rules, in the model's order. Events whose rule is missing are left out, as the
    /// inner join leaves them out.
    pub fn join(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let ids = rule_ids(batch)?;
        let found: Vec<Option<u32>> = (0..ids.len())
            .map(|i| ids.is_valid(i).then(|| ids.value(i)))
            .map(|id| id.and_then(|id| self.index.get(id)))
            .collect();
        let mut kept = None;
        if found.iter().any(Option::is_none) {
            let known: BooleanArray = found.iter().map(|p| Some(p.is_some())).collect();
            kept = Some(filter_record_batch(batch, &known)?);
        }
        let batch = kept.as_ref().unwrap_or(batch);
        let places = UInt32Array::from_iter_values(found.into_iter().flatten());
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

/// The `rule_id` column of `batch`.
fn rule_ids(batch: &RecordBatch) -> Result<&arrow::array::Int64Array> {
    batch
        .column_by_name(model::RULE_ID)
        .context("the read has no rule_id column")?
        .as_primitive_opt::<Int64Type>()
        .context("rule_id is not a 64-bit integer")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, TimeUnit};
    use model::RULE_ID;

    #[test]
    fn the_join_adds_the_rule_and_leaves_out_events_of_missing_rules() {
        let rules = Rules {
            index: Index::new(&[7, 3]),
            columns: vec![Arc::new(StringArray::from(vec!["seven", "three"]))],
        };
        let event = |name: &str| match name {
            "id" | RULE_ID => Field::new(name, DataType::Int64, true),
            "timestamp" => Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, None), true),
            "acknowledged" => Field::new(name, DataType::Boolean, true),
            _ => Field::new(name, DataType::Int64, true),
        };
        let names: Vec<&str> = model::EVENT
            .iter()
            .filter(|c| matches!(c.origin, Origin::Event(_)))
            .map(|c| c.name)
            .chain([RULE_ID])
            .collect();
        let columns: Vec<ArrayRef> = names
            .iter()
            .map(|name| -> ArrayRef {
                match *name {
                    "id" => Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                    RULE_ID => Arc::new(Int64Array::from(vec![Some(3), Some(5), None, Some(7)])),
                    "timestamp" => Arc::new(TimestampMicrosecondArray::from(vec![10, 20, 30, 40])),
                    "acknowledged" => Arc::new(BooleanArray::from(vec![true, false, true, false])),
                    _ => Arc::new(Int64Array::from(vec![None, Some(1), None, Some(2)])),
                }
            })
            .collect();
        let schema = Arc::new(Schema::new(
            names.iter().map(|n| event(n)).collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        let joined = rules.join(&batch).unwrap();
        let ids = joined
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), vec![1, 4]);
        let rule = joined.column_by_name("rule").unwrap().as_string::<i32>();
        assert_eq!(
            rule.iter().collect::<Vec<_>>(),
            vec![Some("three"), Some("seven")]
        );
        let fields: Vec<String> = joined
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let model: Vec<&str> = model::EVENT.iter().map(|c| c.name).collect();
        assert_eq!(fields, model);
    }

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
