//! `--format parquet|both`: typed Parquet that an independent reader (the parquet crate's
//! record batch reader) reads back value for value as PostgreSQL holds them, in CSV order; both
//! files from one run, put in place together or not at all.

mod common;

use std::fs::File;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};

fn read_parquet(path: &Path) -> Vec<EventRow> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let ts = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        let rules = batch.column(2).as_string::<i32>();
        let acks = batch.column(3).as_boolean();
        let tel = batch.column(4).as_primitive::<Int64Type>();
        let dev = batch.column(5).as_primitive::<Int64Type>();
        let opt = |a: &arrow::array::Int64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));
        for i in 0..batch.num_rows() {
            rows.push((
                ids.value(i),
                ts.value(i),
                rules.value(i).to_owned(),
                acks.value(i),
                opt(tel, i),
                opt(dev, i),
            ));
        }
    }
    rows
}

fn export(dir: &Path, args: &[&str]) -> Run {
    Run::of(export_events(dir).args(args)).success()
}

#[test]
fn parquet_holds_every_value_of_the_awkward_sample() {
    let db = TestDb::sample("parquet_sample");
    let dir = scratch();
    let run = export(
        dir.path(),
        &["--database-url", &db.url(), "--format", "parquet"],
    );
    let path = dir.path().join("exports/events_export.parquet");
    assert_eq!(run.stdout, exported(15, &path));
    assert_eq!(read_parquet(&path), events_in_postgres(&db, None));
    export(
        dir.path(),
        &[
            "--database-url",
            &db.url(),
            "--format",
            "parquet",
            "--since",
            "2026-02-01",
            "-o",
            "s.parquet",
        ],
    );
    assert_eq!(
        read_parquet(&dir.path().join("s.parquet")),
        events_in_postgres(&db, Some("2026-02-01"))
    );
}

#[test]
fn parquet_of_generated_data_matches_postgres_and_the_csv_order() {
    let db = TestDb::empty("parquet_generated");
    let dir = scratch();
    Run::of(export_events(dir.path()).args([
        "generate",
        "--rows",
        "30000",
        "--database-url",
        &db.url(),
    ]))
    .success();
    let run = export(
        dir.path(),
        &[
            "--database-url",
            &db.url(),
            "--format",
            "both",
            "-o",
            "all.csv",
        ],
    );
    let (csv, parquet) = (dir.path().join("all.csv"), dir.path().join("all.parquet"));
    assert_eq!(
        run.stdout,
        format!(
            "Exported 30000 events to {} and {}\n",
            csv.display(),
            parquet.display()
        )
    );
    let rows = read_parquet(&parquet);
    assert_eq!(rows, events_in_postgres(&db, None));
    let csv_ids: Vec<i64> = std::fs::read_to_string(&csv)
        .unwrap()
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split(',').next()?.parse().ok())
        .collect();
    let parquet_ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(csv_ids, parquet_ids, "same rows, same order");
}

#[test]
fn both_gives_the_compatible_csv_and_a_parquet_beside_it() {
    let db = TestDb::sample("parquet_both");
    let dir = scratch();
    export(
        dir.path(),
        &["--database-url", &db.url(), "--format", "both"],
    );
    assert_eq!(
        std::fs::read(dir.path().join("exports/events_export.csv")).unwrap(),
        compat_bytes("expected_all.csv")
    );
    assert_eq!(
        read_parquet(&dir.path().join("exports/events_export.parquet")).len(),
        15
    );
    assert_eq!(
        files_in(&dir.path().join("exports")),
        [
            "events_export.csv",
            "events_export.csv.manifest.json",
            "events_export.parquet"
        ]
    );
}

#[test]
fn schema_is_typed_and_compression_is_chosen() {
    let dir = scratch();
    Run::of(export_events(dir.path()).args(["generate", "--rows", "15", "--duckdb", "s.duckdb"]))
        .success();
    for (flag, codec) in [
        (None, "ZSTD"),
        (Some("snappy"), "SNAPPY"),
        (Some("gzip"), "GZIP"),
        (Some("none"), "UNCOMPRESSED"),
    ] {
        let mut args = vec![
            "--duckdb",
            "s.duckdb",
            "--format",
            "parquet",
            "-o",
            "t.parquet",
        ];
        args.extend(flag.map(|f| ["--compression", f]).iter().flatten());
        export(dir.path(), &args);
        let path = dir.path().join("t.parquet");
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        let schema = builder.schema();
        let types: Vec<(&DataType, bool)> = schema
            .fields()
            .iter()
            .map(|f| (f.data_type(), f.is_nullable()))
            .collect();
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(
            types,
            [
                (&DataType::Int64, false),
                (&utc, false),
                (&DataType::Utf8, false),
                (&DataType::Boolean, false),
                (&DataType::Int64, true),
                (&DataType::Int64, true)
            ]
        );
        let meta = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let used = meta.metadata().row_group(0).column(0).compression();
        assert!(format!("{used:?}").starts_with(codec), "{flag:?}: {used:?}");
    }
}

#[test]
fn with_both_either_both_files_change_or_neither_does() {
    let db = TestDb::sample("parquet_atomic");
    let dir = scratch();
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(exports.join("events_export.parquet/occupied")).unwrap();
    std::fs::write(exports.join("events_export.csv"), "previous export\r\n").unwrap();
    let run =
        Run::of(export_events(dir.path()).args(["--database-url", &db.url(), "--format", "both"]));
    run.failure(1, "events_export.parquet");
    assert_eq!(
        std::fs::read_to_string(exports.join("events_export.csv")).unwrap(),
        "previous export\r\n"
    );
    assert_eq!(
        files_in(&exports),
        ["events_export.csv", "events_export.parquet"],
        "no temporary files"
    );
    std::fs::remove_dir_all(exports.join("events_export.parquet")).unwrap();
    let run = Run::of(export_events(dir.path()).args([
        "--database-url",
        &db.url(),
        "--format",
        "both",
        "-o",
        "x.parquet",
    ]));
    run.failure(2, "would be written twice");
}
