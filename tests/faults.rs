//! The promises under faults, each forced at a chosen moment rather than hoped for: a signal or
//! a SIGKILL between the two renames of a pair, the server ending the session mid-stream, a full
//! disk, and a second run on the same output. Whatever happens, the folder holds the old files
//! or the new ones, whole, and nothing beside them.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const PREVIOUS: &str = "previous export\r\n";

/// `dir/exports` with a previous CSV and Parquet file in it; returns their paths.
fn previous_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let folder = dir.join("exports");
    std::fs::create_dir_all(&folder).unwrap();
    let pair = (
        folder.join("events_export.csv"),
        folder.join("events_export.parquet"),
    );
    std::fs::write(&pair.0, PREVIOUS).unwrap();
    std::fs::write(&pair.1, PREVIOUS).unwrap();
    pair
}

fn is_previous(path: &Path) -> bool {
    std::fs::read(path).unwrap() == PREVIOUS.as_bytes()
}

/// Rows of a Parquet file (fails on anything that is not a whole Parquet file).
fn parquet_rows(path: &Path) -> i64 {
    let file = std::fs::File::open(path).unwrap();
    parquet::file::reader::FileReader::metadata(
        &parquet::file::serialized_reader::SerializedFileReader::new(file).unwrap(),
    )
    .file_metadata()
    .num_rows()
}

fn export_both(dir: &Path, db: &TestDb) -> std::process::Command {
    let mut cmd = export_events(dir);
    cmd.args(["--database-url", &db.url(), "--format", "both", "-q"]);
    cmd
}

#[test]
fn sigint_or_sigterm_between_the_renames_of_a_pair_leaves_both_new_files() {
    let db = TestDb::sample("fault_pair_signal");
    let dir = scratch();
    for sig in ["INT", "TERM"] {
        let (csv, parquet) = previous_pair(dir.path());
        let child = spawn_stopped_at(&mut export_both(dir.path(), &db), "commit.between-renames");
        // The CSV is in place, the Parquet file not yet: the worst moment for a signal.
        assert!(!is_previous(&csv) && is_previous(&parquet));
        signal(child.id(), sig);
        signal(child.id(), "CONT");
        let run = finish(child).success();
        assert!(run.stdout.starts_with("Exported 15 events to "), "{run}");
        assert_eq!(
            std::fs::read(&csv).unwrap(),
            compat_bytes("expected_all.csv")
        );
        assert_eq!(
            parquet_rows(&parquet),
            15,
            "SIG{sig}: the new Parquet file too"
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
}

#[test]
fn a_pair_left_half_renamed_by_sigkill_is_completed_by_the_next_run() {
    let db = TestDb::sample("fault_pair_kill");
    let dir = scratch();
    let (csv, parquet) = previous_pair(dir.path());
    let child = spawn_stopped_at(&mut export_both(dir.path(), &db), "commit.between-renames");
    signal(child.id(), "KILL");
    assert_eq!(finish(child).code, None);
    // What SIGKILL leaves: the new CSV, the old Parquet file, and the journal of the renames.
    assert!(!is_previous(&csv) && is_previous(&parquet));
    let folder = dir.path().join("exports");
    assert!(files_in(&folder).contains(&".events_export.csv.commit".to_owned()));
    // The next run on that output finishes the commit before anything else.
    let next = spawn_stopped_at(&mut export_both(dir.path(), &db), "stream.batch");
    assert_eq!(
        parquet_rows(&parquet),
        15,
        "the killed run's Parquet file is in place"
    );
    assert!(!files_in(&folder).iter().any(|f| f.ends_with(".commit")));
    signal(next.id(), "CONT");
    finish(next).success();
    assert_eq!(
        files_in(&folder),
        [
            "events_export.csv",
            "events_export.csv.manifest.json",
            "events_export.parquet"
        ]
    );
}

#[test]
fn a_session_ended_by_the_server_mid_stream_fails_and_changes_nothing() {
    let db = TestDb::generated("fault_terminate", 500_000);
    for format in ["csv", "parquet", "both"] {
        let dir = scratch();
        let (csv, parquet) = previous_pair(dir.path());
        let mut cmd = export_events(dir.path());
        cmd.args(["--database-url", &db.url(), "--format", format, "-q"]);
        let child = spawn_stopped_at(&mut cmd, "stream.batch");
        assert!(db.terminate_sessions() > 0, "the export's session");
        signal(child.id(), "CONT");
        let run = finish(child).failure(1, "the PostgreSQL server closed the connection");
        assert!(
            run.stderr.contains("terminat"),
            "PostgreSQL's reason\n{run}"
        );
        assert!(
            is_previous(&csv) && is_previous(&parquet),
            "--format {format}"
        );
        assert_eq!(
            files_in(&dir.path().join("exports")),
            ["events_export.csv", "events_export.parquet"],
            "--format {format}: no temporary file left"
        );
    }
}

#[test]
fn a_full_disk_fails_naming_the_file_and_changes_nothing() {
    let (small, _disk) = small_disk();
    let dir = scratch();
    Run::of(export_events(dir.path()).args([
        "generate",
        "-q",
        "--rows",
        "1000000",
        "--duckdb",
        "big.duckdb",
    ]))
    .success();
    for format in ["csv", "parquet", "both"] {
        let folder = small.join(format!("full_disk_{format}"));
        std::fs::create_dir_all(&folder).unwrap();
        let csv = folder.join("events.csv");
        std::fs::write(&csv, PREVIOUS).unwrap();
        let run = Run::of(export_events(dir.path()).args([
            "--duckdb",
            "big.duckdb",
            "-q",
            "--format",
            format,
            "--output",
            csv.to_str().unwrap(),
        ]));
        let run = run.failure(1, "no space left on device writing ");
        assert!(run.stderr.contains(&folder.display().to_string()), "{run}");
        assert!(is_previous(&csv));
        assert_eq!(files_in(&folder), ["events.csv"], "--format {format}");
        std::fs::remove_dir_all(&folder).unwrap();
    }
}

#[test]
fn a_second_export_to_the_same_output_is_refused_or_waits_and_the_first_completes() {
    let db = TestDb::sample("fault_overlap");
    let dir = scratch();
    let first = spawn_stopped_at(&mut export_both(dir.path(), &db), "stream.batch");
    let second = Run::of(&mut export_both(dir.path(), &db)).failure(1, "events_export.");
    let holder = format!("is in use by another export-events run (pid {}", first.id());
    assert!(second.stderr.contains(&holder), "{second}");
    assert!(second.stderr.contains("--wait"), "{second}");
    let waiting = export_both(dir.path(), &db)
        .arg("--wait")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    signal(first.id(), "CONT");
    finish(first).success();
    finish(waiting).success();
    let folder = dir.path().join("exports");
    assert_eq!(
        std::fs::read(folder.join("events_export.csv")).unwrap(),
        compat_bytes("expected_all.csv")
    );
    assert_eq!(parquet_rows(&folder.join("events_export.parquet")), 15);
    assert_eq!(
        files_in(&folder),
        [
            "events_export.csv",
            "events_export.csv.manifest.json",
            "events_export.parquet"
        ]
    );
}

#[test]
fn a_full_disk_stops_incremental_runs_and_the_feed_without_moving_their_cursors() {
    let (small, _disk) = small_disk();
    let db = TestDb::generated("fault_full_cursor", 200_000);
    db.settle();
    let dir = scratch();
    let full = small.join("full_disk_cursor");
    std::fs::create_dir_all(&full).unwrap();
    let incremental = |output: &str| {
        Run::of(export_events(dir.path()).args([
            "--incremental",
            "-q",
            "--database-url",
            &db.url(),
            "--state",
            "state.json",
            "--output",
            output,
        ]))
    };
    let template = full.join("events_{time}.csv");
    incremental(template.to_str().unwrap()).failure(1, "no space left on device writing ");
    assert!(files_in(&full).is_empty(), "{:?}", files_in(&full));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state.json")).unwrap())
            .unwrap();
    assert!(
        state["horizon"].is_null(),
        "the cursor did not move: {state}"
    );
    // The same run with room: every event, exactly as a first run.
    let run = incremental("events_{time}.csv").success();
    assert!(
        run.stdout.starts_with("Exported 200000 events to "),
        "{run}"
    );

    let slot = Slot::create(&db, dir.path());
    db.sql("UPDATE events SET acknowledged = NOT acknowledged");
    let confirmed = slot.confirmed();
    let feed = full.join("feed");
    let run = Run::of(&mut slot.changes(dir.path(), &["-q", "--output", feed.to_str().unwrap()]));
    run.failure(1, "no space left on device writing ");
    assert_eq!(slot.confirmed(), confirmed, "the slot was not confirmed");
    assert_eq!(
        files_in(&feed),
        [".export-events-changes.json"],
        "no change file, only the folder's owner"
    );
    let run = Run::of(&mut slot.changes(dir.path(), &["--output", "feed"])).success();
    assert!(run.stdout.starts_with("Wrote 200000 changes to "), "{run}");
    std::fs::remove_dir_all(&full).unwrap();
}
