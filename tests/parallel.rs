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

fn export(dir: &Path, db: &TestDb, args: &[&str]) -> Run {
    Run::of(
        export_events(dir)
            .args(["--database-url", &db.url(), "--format", "csv,parquet"])
            .args(args),
    )
    .success()
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
            export(
                dir.path(),
                &db,
                &[&["--jobs", "1", "-q", "-o", "serial.csv"], &extra[..]].concat(),
            );
            for jobs in ["2", "3"] {
                let run = export(
                    dir.path(),
                    &db,
                    &[
                        &["--jobs", jobs, "--read", "index", "-o", "windows.csv"],
                        &extra[..],
                    ]
                    .concat(),
                );
                assert!(run.stderr.contains("time windows"), "{shape} {jobs}: {run}");
                assert!(
                    std::fs::read(dir.path().join("serial.csv")).unwrap()
                        == std::fs::read(dir.path().join("windows.csv")).unwrap(),
                    "{shape}, --jobs {jobs}, {extra:?}: same CSV bytes"
                );
                assert!(
                    parquet_values(&dir.path().join("serial.parquet"))
                        == parquet_values(&dir.path().join("windows.parquet")),
                    "{shape}, --jobs {jobs}, {extra:?}: same Parquet values"
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
    let dir = scratch();
    let before: usize = db.value("SELECT count(*) FROM events").parse().unwrap();
    let mut cmd = export_events(dir.path());
    cmd.args([
        "--database-url",
        &db.url(),
        "--jobs",
        "2",
        "--read",
        "index",
        "-o",
        "out.csv",
    ]);
    // Stopped once the read has begun: window 0's rows are streaming, later windows not started.
    let child = spawn_stopped_at(&mut cmd, "stream.batch");
    // A transaction that adds an event to the newest window and one to the oldest: a later
    // window reading its own, newer snapshot would show the old one without the new one.
    db.sql(
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged, \
         trigger_telemetry_id) VALUES ('2099-01-01', now(), 1, true, 777000001), \
         ('1990-01-01', now(), 1, true, 777000002)",
    );
    signal(child.id(), "CONT");
    let run = finish(child).success();
    assert!(run.stderr.contains("time windows"), "{run}");
    let mut reader = csv::Reader::from_path(dir.path().join("out.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), before, "the rows of the snapshot, no more");
    assert!(
        rows.iter().all(|r| !r[4].starts_with("77700000")),
        "neither row of the later transaction"
    );
}

#[test]
fn a_killed_parallel_read_leaves_spools_the_next_run_removes() {
    let db = TestDb::generated_as("par_kill", "ordered", ROWS);
    let dir = scratch();
    let mut cmd = export_events(dir.path());
    cmd.args([
        "--database-url",
        &db.url(),
        "-q",
        "--jobs",
        "2",
        "--read",
        "index",
        "-o",
        "out.csv",
    ]);
    let child = spawn_stopped_at(&mut cmd, "stream.batch");
    signal(child.id(), "KILL");
    assert_eq!(finish(child).code, None);
    assert!(
        files_in(dir.path()).iter().any(|f| f.ends_with(".tmp")),
        "{:?}",
        files_in(dir.path())
    );
    Run::of(export_events(dir.path()).args(["--database-url", &db.url(), "-q", "-o", "out.csv"]))
        .success();
    assert_eq!(files_in(dir.path()), ["out.csv", "out.csv.manifest.json"]);
}
