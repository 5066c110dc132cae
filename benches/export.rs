//! Criterion benchmarks of whole exports through the library (the same pipeline the binary
//! runs), on a generated PostgreSQL table of 1,000,000 events: CSV, Parquet, both (the default
//! plan: a sequential read sorted locally), CSV and Parquet read along the index
//! (`--read index`), and `--since` slices of about 1% and 10% of the rows, plus CSV from a DuckDB
//! file; and the distribution sort alone, on 1,000,000 synthetic rows spilled to a temporary
//! folder. Reported as rows/s.
//!
//! The data is made with `export-events generate` (seed 42) when missing and kept: database
//! `ee_bench_<rows>` on the server of `EXPORT_EVENTS_BENCH_PG` (default
//! `postgres://postgres@127.0.0.1:5432`), the same one `scripts/bench-vs-psql` uses, and a
//! DuckDB file in the system's temp folder. `EXPORT_EVENTS_BENCH_ROWS` changes the size.
//!
//!     cargo bench --bench export            # or: scripts/bench

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use export_events::cli::Cli;
use export_events::cmd::export;
use export_events::context::Context;

fn rows() -> u64 {
    std::env::var("EXPORT_EVENTS_BENCH_ROWS").map_or(1_000_000, |n| {
        n.parse().expect("EXPORT_EVENTS_BENCH_ROWS is a number")
    })
}

fn server() -> String {
    std::env::var("EXPORT_EVENTS_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// `psql -c sql` at `url`, its output trimmed; panics with psql's message on failure.
fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs the export-events command line `args` through the library.
fn cli(args: &[&str]) -> Cli {
    export_events::cli::try_parse_from(std::iter::once("export-events").chain(args.iter().copied()))
        .expect("valid arguments")
}

/// The generated PostgreSQL database, made when missing; returns its URL.
fn postgres_data(rows: u64) -> String {
    let db = format!("ee_bench_{rows}");
    let url = format!("{}/{db}", server());
    let admin = format!("{}/postgres", server());
    if psql(
        &admin,
        &format!("SELECT 1 FROM pg_database WHERE datname = '{db}'"),
    )
    .is_empty()
    {
        psql(&admin, &format!("CREATE DATABASE {db}"));
        let n = rows.to_string();
        export_events::run(cli(&[
            "generate",
            "--rows",
            &n,
            "--database-url",
            &url,
            "-q",
        ]))
        .expect("generating the benchmark data");
    }
    url
}

/// The generated DuckDB file, made when missing.
fn duckdb_data(rows: u64) -> PathBuf {
    let path = std::env::temp_dir().join(format!("export-events-bench-{rows}.duckdb"));
    if !path.exists() {
        let n = rows.to_string();
        let file = path.to_str().expect("UTF-8 temp path");
        export_events::run(cli(&["generate", "--rows", &n, "--duckdb", file, "-q"]))
            .expect("generating the benchmark data");
    }
    path
}

/// A since instant that selects about `fraction` of the events, and how many it selects.
fn since_for(url: &str, rows: u64, fraction: f64) -> (String, u64) {
    let skip = (rows as f64 * fraction) as u64;
    let since = psql(
        url,
        &format!(
            "SELECT to_json(\"timestamp\") #>> '{{}}' FROM events \
             ORDER BY \"timestamp\" DESC OFFSET {skip} LIMIT 1"
        ),
    );
    let selected = psql(
        url,
        &format!("SELECT count(*) FROM events WHERE \"timestamp\" >= '{since}'"),
    );
    (since, selected.parse().expect("a count"))
}

/// One export into `dir`; the number of rows written.
fn run_export(args: &[&str], dir: &Path) -> u64 {
    let parquet_only = args.windows(2).any(|w| w == ["--format", "parquet"]);
    let output = dir.join(if parquet_only {
        "events.parquet"
    } else {
        "events.csv"
    });
    let mut all = args.to_vec();
    all.extend(["--quiet", "--output", output.to_str().unwrap()]);
    let cli = cli(&all);
    let global = &cli.global;
    let ctx = Context::new(global.database_url.clone(), global.quiet, global.wait)
        .expect("the run's context");
    export::run(&ctx, &cli.export)
        .expect("the export succeeds")
        .rows
}

fn exports(c: &mut Criterion) {
    let rows = rows();
    let url = postgres_data(rows);
    let duckdb = duckdb_data(rows);
    let dir = tempfile::tempdir().unwrap();
    let total: u64 = psql(&url, "SELECT count(*) FROM events").parse().unwrap();

    let mut group = c.benchmark_group(format!("export_{rows}"));
    // Whole exports take about a second: ten flat samples, not criterion's linear ramp of 55.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(15));
    let pg = ["--database-url", url.as_str()];
    let mut cases: Vec<(String, Vec<String>, u64)> = ["csv", "parquet", "both"]
        .into_iter()
        .map(|format| {
            (
                format.to_owned(),
                vec!["--format".into(), format.into()],
                total,
            )
        })
        .collect();
    for format in ["csv", "parquet"] {
        let extra = vec![
            "--format".into(),
            format.into(),
            "--read".into(),
            "index".into(),
        ];
        cases.push((format!("{format}_read_index"), extra, total));
    }
    for (label, fraction) in [("since_1pct", 0.01), ("since_10pct", 0.10)] {
        let (since, selected) = since_for(&url, total, fraction);
        cases.push((label.to_owned(), vec!["--since".into(), since], selected));
    }
    for (label, extra, expected) in &cases {
        let mut args: Vec<&str> = pg.to_vec();
        args.extend(extra.iter().map(String::as_str));
        group.throughput(Throughput::Elements(*expected));
        group.bench_function(BenchmarkId::new("postgres", label), |b| {
            b.iter(|| assert_eq!(run_export(&args, dir.path()), *expected));
        });
    }
    let file = ["--duckdb", duckdb.to_str().unwrap()];
    group.throughput(Throughput::Elements(total));
    group.bench_function(BenchmarkId::new("duckdb_file", "csv"), |b| {
        b.iter(|| assert_eq!(run_export(&file, dir.path()), total));
    });
    group.finish();
}

/// The distribution sort alone: about 1M rows in the order a table stores them (runs of rising
/// timestamps from two readers, some back-dated), routed to 16 buckets, spilled, sorted back.
fn distribution_sort(c: &mut Criterion) {
    use std::sync::Arc;

    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use arrow::record_batch::RecordBatch;
    use export_events::source::distribute::Spill;

    const ROWS: i64 = 1_001_472; // 489 batches of 2,048
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let batches: Vec<RecordBatch> = (0..ROWS / 2_048)
        .map(|b| {
            // Two readers' ranges interleaved; every 50th event back-dated by a day.
            let ids: Vec<i64> = (0..2_048)
                .map(|i| (b % 2) * ROWS / 2 + (b / 2) * 2_048 + i)
                .collect();
            let times: Vec<i64> = ids
                .iter()
                .map(|id| id * 31_000_000 - if id % 50 == 0 { 86_400_000_000 } else { 0 })
                .collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
                ],
            )
            .unwrap()
        })
        .collect();
    let cuts: Vec<_> = (1..16)
        .map(|i| (false, i * ROWS / 16 * 31_000_000, i64::MIN))
        .collect();
    let mut group = c.benchmark_group("distribution_sort");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("1M_rows_16_buckets", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().unwrap();
            let spill = Spill::new(dir.path(), schema.clone(), cuts.clone(), 256_000_000);
            batches.iter().for_each(|batch| spill.route(batch).unwrap());
            let sorted = spill
                .finish()
                .unwrap()
                .for_each_sorted(85_000_000, |_| Ok(()))
                .unwrap();
            assert_eq!(sorted, ROWS as u64);
        });
    });
    group.finish();
}

criterion_group!(benches, exports, distribution_sort);
criterion_main!(benches);
