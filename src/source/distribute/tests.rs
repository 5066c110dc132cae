//! The distribution sort end to end: rows in any order and bucket layout come out in the
//! export's order, through splits.

use std::sync::Arc;

use arrow::array::{Array, AsArray as _, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};

use super::{Key, Spill};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]))
}

fn batch(rows: &[(Option<i64>, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(
                TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.0)).with_timezone("UTC"),
            ),
        ],
    )
    .unwrap()
}

fn sorted(
    cuts: Vec<Key>,
    memory: u64,
    budget: u64,
    input: &[Vec<(Option<i64>, i64)>],
) -> Vec<(Option<i64>, i64)> {
    let dir = tempfile::tempdir().unwrap();
    let spill = Spill::new(dir.path(), schema(), cuts, memory);
    for rows in input {
        spill.route(&batch(rows)).unwrap();
    }
    let spilled = spill.finish().unwrap();
    let mut out = Vec::new();
    let rows = spilled
        .for_each_sorted(budget, |b| {
            let time = b.column(1).as_primitive::<TimestampMicrosecondType>();
            let id = b.column(0).as_primitive::<Int64Type>();
            out.extend(
                (0..b.num_rows()).map(|i| ((!time.is_null(i)).then(|| time.value(i)), id.value(i))),
            );
            Ok(())
        })
        .unwrap();
    assert_eq!(rows as usize, out.len());
    out
}

fn expected(input: &[Vec<(Option<i64>, i64)>]) -> Vec<(Option<i64>, i64)> {
    let mut all: Vec<_> = input.concat();
    // PostgreSQL's ORDER BY timestamp DESC, id DESC: nulls first.
    all.sort_by_key(|&(t, id)| std::cmp::Reverse((t.is_none(), t, id)));
    all
}

#[test]
fn rows_come_out_newest_first_ties_by_id() {
    let input = vec![
        vec![(Some(5), 1), (Some(1), 2), (Some(9), 3), (None, 4)],
        vec![
            (Some(5), 7),
            (Some(5), 6),
            (Some(-3), 8),
            (Some(i64::MAX), 9),
        ],
    ];
    let cuts = vec![(false, 4, i64::MIN), (false, 6, i64::MIN)];
    assert_eq!(sorted(cuts, 1 << 20, 1 << 30, &input), expected(&input));
    assert_eq!(sorted(vec![], 1 << 20, 1 << 30, &input), expected(&input));
}

#[test]
fn rows_in_runs_with_back_dated_ones_reach_their_buckets() {
    // Runs in time order, every 7th row back-dated across several of 64 buckets, nulls.
    let input: Vec<Vec<(Option<i64>, i64)>> = (0..40)
        .map(|b| {
            (0..500)
                .map(|i| {
                    let id = b * 500 + i;
                    let time = match id % 7 {
                        0 => Some(id * 10 - 3_000),
                        _ if id % 97 == 0 => None,
                        _ => Some(id * 10),
                    };
                    (time, id)
                })
                .collect()
        })
        .collect();
    let cuts = (1..64).map(|i| (false, i * 3_125, i64::MIN)).collect();
    assert_eq!(sorted(cuts, 1 << 20, 1 << 30, &input), expected(&input));
}

#[test]
fn a_bucket_over_budget_is_split_even_on_one_timestamp() {
    // 20,000 rows of one timestamp and a spread, in one bucket, a budget of a few rows.
    let mut input: Vec<Vec<(Option<i64>, i64)>> = (0..20)
        .map(|b| (0..1_000).map(|i| (Some(42), b * 1_000 + i)).collect())
        .collect();
    input.push(
        (0..5_000)
            .map(|i| (Some(i * 7 % 1_000), 100_000 + i))
            .collect(),
    );
    assert_eq!(sorted(vec![], 1 << 16, 64 << 10, &input), expected(&input));
}
