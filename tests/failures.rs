//! Failures: a clear line, the right exit status, and an existing output file left as it was
//! with no temporary file beside it, whether the run fails or is interrupted.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn with_previous_export(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir(dir.join("exports")).unwrap();
    let path = dir.join("exports/events_export.csv");
    std::fs::write(&path, "previous export\r\n").unwrap();
    path
}

fn assert_untouched(dir: &Path, path: &Path) {
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        "previous export\r\n"
    );
    assert_eq!(
        files_in(&dir.join("exports")),
        ["events_export.csv"],
        "no temporary file left"
    );
}

#[test]
fn missing_tables_are_named_and_leave_the_previous_file() {
    let db = TestDb::empty("fail_tables");
    let dir = scratch();
    let path = with_previous_export(dir.path());
    let run = Run::of(export_events(dir.path()).args(["--database-url", &db.url()]));
    run.failure(1, "table events not found in the PostgreSQL database");
    assert_untouched(dir.path(), &path);
    db.sql("CREATE TABLE events (id bigint)");
    let run = Run::of(export_events(dir.path()).args(["--database-url", &db.url()]));
    run.failure(1, "table rules not found");
    assert_untouched(dir.path(), &path);
}

#[test]
fn an_unreachable_server_leaves_the_previous_file() {
    let dir = scratch();
    let path = with_previous_export(dir.path());
    let run = Run::of(
        export_events(dir.path()).args(["--database-url", "postgres://postgres@127.0.0.1:1/x"]),
    );
    run.failure(1, "could not connect to PostgreSQL");
    assert_untouched(dir.path(), &path);
}

#[test]
fn a_missing_postgres_extension_says_how_to_install_it() {
    let db = TestDb::sample("fail_ext");
    let dir = scratch();
    let home = scratch();
    let run = Run::of(
        export_events(dir.path())
            .env("HOME", home.path())
            .args(["--database-url", &db.url()]),
    );
    let run = run.failure(1, "postgres extension is not installed");
    for hint in [
        "scripts/setup",
        "duckdb-extension-postgres-scanner==1.5.5",
        "~/.duckdb/extensions/v1.5.5/",
    ] {
        assert!(run.stderr.contains(hint), "{hint}\n{run}");
    }
}

#[test]
fn an_altered_extension_fails_duckdbs_signature_check_on_every_run() {
    let db = TestDb::sample("fail_ext_tamper");
    let dir = scratch();
    let home = scratch();
    let real = Path::new(&std::env::var("HOME").unwrap())
        .join(".duckdb/extensions/v1.5.5/linux_amd64/postgres_scanner.duckdb_extension");
    let folder = home.path().join(".duckdb/extensions/v1.5.5/linux_amd64");
    std::fs::create_dir_all(&folder).unwrap();
    let copy = folder.join("postgres_scanner.duckdb_extension");
    std::fs::copy(&real, &copy).unwrap();
    let export = || {
        Run::of(
            export_events(dir.path())
                .env("HOME", home.path())
                .args(["--database-url", &db.url()]),
        )
    };
    export().success();
    export().success();
    assert_eq!(
        files_in(&folder),
        ["postgres_scanner.duckdb_extension"],
        "no record of an earlier check to trust instead of the signature"
    );
    // Same size, same inode, one byte flipped in the middle: only the signature can tell.
    let mut bytes = std::fs::read(&copy).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&copy, bytes).unwrap();
    let run = export().failure(1, "postgres extension");
    assert!(
        run.stderr.contains("signature"),
        "DuckDB's own check\n{run}"
    );
    assert!(run.stderr.contains("scripts/setup"), "{run}");
}

#[test]
fn sigterm_and_sigint_mid_export_leave_the_previous_file_and_no_temporary_file() {
    let dir = scratch();
    let gen = Run::of(export_events(dir.path()).args([
        "generate",
        "--rows",
        "3000000",
        "--duckdb",
        "big.duckdb",
    ]));
    gen.success();
    let path = with_previous_export(dir.path());
    for signal in ["TERM", "INT"] {
        let child = export_events(dir.path())
            .args(["--duckdb", "big.duckdb"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the temporary file exists: the export is under way.
        let started = Instant::now();
        while !files_in(&dir.path().join("exports"))
            .iter()
            .any(|f| f.ends_with(".tmp"))
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no temporary file appeared"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let killed = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        assert!(killed.unwrap().success());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "SIG{signal}: {stderr}");
        assert!(stderr.contains("interrupted"), "{stderr}");
        assert_untouched(dir.path(), &path);
    }
}

/// A Hub whose later migration lets `events.timestamp` be NULL: events without one are refused
/// before anything is read or written, by every kind of export, naming how many and the way
/// out (before, a windowed read dropped them without a word, Parquet and tables failed midway,
/// and a dataset put them under a date read from garbage). `--since` leaves them out; once they
/// have a time, the export runs.
#[test]
fn events_without_a_timestamp_are_refused_before_anything_is_written() {
    let db = TestDb::sample("fail_null_ts");
    db.sql("ALTER TABLE events ALTER COLUMN \"timestamp\" DROP NOT NULL");
    db.sql(
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
         VALUES (NULL, now(), 1, false), (NULL, now(), 2, true)",
    );
    let dir = scratch();
    let path = with_previous_export(dir.path());
    let export = |args: &[&str]| {
        Run::of(
            export_events(dir.path())
                .args(["--database-url", &db.url()])
                .args(args),
        )
    };
    let kinds: [&[&str]; 5] = [
        &[],
        &["--format", "parquet"],
        &["--format", "parquet", "--partition-by", "day"],
        &["--incremental", "--state", "state.json"],
        &["--jobs", "2", "--read", "index"],
    ];
    for args in kinds {
        let run = export(args).failure(2, "2 events in the PostgreSQL database");
        assert!(run.stderr.contains("--since"), "{args:?}: {run}");
        assert_untouched(dir.path(), &path);
    }
    export(&["--since", "2000-01-01", "-o", "since.csv"]).success();
    db.sql("UPDATE events SET \"timestamp\" = created_at WHERE \"timestamp\" IS NULL");
    export(&[]).success();
}
