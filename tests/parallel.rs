//! The windowed plan (`--read index`: time windows read at once, each on its own connection, in
//! one snapshot)
//! writes exactly what the serial plan writes, on both data shapes; never mixes snapshots, even
//! with a transaction committing in the middle of the read; and a killed parallel read leaves
//! nothing the next run does not remove.

mod common;

use std::path::Path;

use common::*;

/// Enough rows for the windowed plan (it starts at 500,000).
const ROWS: u64 = 600_000;

/// Exports into `dir` with the windowed plan (`--read index` and `args`) and checks that it
/// was chosen and wrote the bytes and values of the serial export already in `dir`.
fn windows_write_the_serial_plans(dir: &Path, db: &TestDb, args: &[&str], what: &str) {
    let run = export_pair(
        dir,
        db,
        &[&["--read", "index", "-o", "windows.csv"], args].concat(),
    );
    assert!(run.stderr.contains("time windows"), "{what}: {run}");
    assert!(
        std::fs::read(dir.join("serial.csv")).unwrap()
            == std::fs::read(dir.join("windows.csv")).unwrap(),
        "{what}: same CSV bytes"
    );
    assert!(
        parquet_values(&dir.join("serial.parquet")) == parquet_values(&dir.join("windows.parquet")),
        "{what}: same Parquet values"
    );
}

#[test]
fn windows_write_the_serial_plans_bytes_and_values_on_both_data_shapes() {
    for shape in ["hub", "ordered"] {
        let db = TestDb::generated_as(&format!("par_{shape}"), shape, ROWS);
        let dir = scratch();
        let since = db.value(&format!(
            "SELECT to_json(\"timestamp\") #>> '{{}}' FROM events ORDER BY \"timestamp\" \
             OFFSET {} LIMIT 1",
            ROWS / 10
        ));
        for extra in [vec![], vec!["--since", since.as_str()]] {
            export_pair(
                dir.path(),
                &db,
                &[&["--jobs", "1", "-q", "-o", "serial.csv"], &extra[..]].concat(),
            );
            for jobs in ["2", "3"] {
                windows_write_the_serial_plans(
                    dir.path(),
                    &db,
                    &[&["--jobs", jobs], &extra[..]].concat(),
                    &format!("{shape}, --jobs {jobs}, {extra:?}"),
                );
            }
        }
        assert_eq!(
            files_in(dir.path()),
            [
                "serial.csv",
                "serial.csv.manifest.json",
                "serial.parquet",
                "windows.csv",
                "windows.csv.manifest.json",
                "windows.parquet"
            ],
            "no spool file left"
        );
    }
}

#[test]
fn windows_read_one_snapshot_when_a_transaction_commits_mid_read() {
    let db = TestDb::generated_as("par_snapshot", "hub", ROWS);
    // Stopped once the read has begun: window 0's rows are streaming, later windows not started.
    // A transaction adds an event to the newest window and one to the oldest: a later window
    // reading its own, newer snapshot would show the old one without the new one.
    reads_one_snapshot(
        &db,
        &["--jobs", "2", "--read", "index"],
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged, \
         trigger_telemetry_id) VALUES ('2099-01-01', now(), 1, true, 777000001), \
         ('1990-01-01', now(), 1, true, 777000002)",
        "time windows",
    );
}

#[test]
fn a_killed_parallel_read_leaves_spools_the_next_run_removes() {
    let db = TestDb::generated_as("par_kill", "ordered", ROWS);
    killed_run_is_cleaned_up(&db, &["--jobs", "2", "--read", "index"], "stream.batch");
}

/// Statistics whose bounds lie past chrono's years (PostgreSQL keeps timestamps up to 294276 AD):
/// the windowed plan cuts its queries there, and once panicked writing those bounds.
#[test]
fn windows_cut_past_chronos_years_write_the_serial_plans_bytes() {
    let db = TestDb::sample("par_far_years");
    db.sql(
        "ALTER TABLE events SET (autovacuum_enabled = false); \
         INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
         SELECT TIMESTAMPTZ '262200-01-01 00:00:00+00' + i * INTERVAL '1 day', now(), \
                1 + i % 3, i % 2 = 0 \
         FROM generate_series(1, 2000) AS i; \
         ANALYZE events; \
         UPDATE pg_class SET reltuples = 1e7 WHERE oid = 'events'::regclass",
    );
    let dir = scratch();
    export_pair(dir.path(), &db, &["--jobs", "1", "-q", "-o", "serial.csv"]);
    windows_write_the_serial_plans(dir.path(), &db, &["--jobs", "2"], "year 262200");
}
