//! `--since`: every accepted form selects the same rows as the original, and a bad value is an
//! error that writes and touches nothing.

mod common;

use common::*;

fn export_since(db: &TestDb, dir: &std::path::Path, since: &str) -> Run {
    Run::of(export_events(dir).args(["--database-url", &db.url(), "--since", since, "-o", "s.csv"]))
}

#[test]
fn every_spelling_of_the_same_instant_gives_the_expected_file() {
    let db = TestDb::sample("since_forms");
    let dir = scratch();
    for since in [
        "2026-02-01T00:00:00Z",
        "2026-02-01T00:00:00",
        "2026-02-01 00:00:00",
        "2026-02-01T00:00",
        "2026-02-01",
        "2026-02-01T00:00:00.000000+00:00",
        "2026-02-01T01:00:00+01:00",
        "2026-01-31T19:00:00-0500",
        "2026-02-01T05:30+05:30",
    ] {
        export_since(&db, dir.path(), since).success();
        let written = std::fs::read(dir.path().join("s.csv")).unwrap();
        assert!(
            written == compat_bytes("expected_since.csv"),
            "--since {since}"
        );
    }
}

#[test]
fn since_is_inclusive_to_the_microsecond() {
    let db = TestDb::sample("since_micro");
    let dir = scratch();
    let run = export_since(&db, dir.path(), "2026-02-01T00:00:00.000001Z").success();
    assert!(run.stdout.starts_with("Exported 10 events"), "{run}");
    let text = std::fs::read_to_string(dir.path().join("s.csv")).unwrap();
    assert!(text.contains("\r\n2,2026-02-01 00:00:00.000001+00:00,"));
    assert!(!text.contains("\r\n1,"));
}

#[test]
fn relative_ages_count_back_from_now() {
    let db = TestDb::sample("since_age");
    db.sql("UPDATE events SET \"timestamp\" = now() - interval '2 hours' WHERE id = 3");
    db.sql("UPDATE events SET \"timestamp\" = now() - interval '30 hours' WHERE id = 4");
    let dir = scratch();
    // Events 12 (in 2038), 3 (two hours ago); not 4 (30 hours ago) nor anything older.
    let ids = |run: Run| -> Vec<String> {
        run.success();
        let text = std::fs::read_to_string(dir.path().join("s.csv")).unwrap();
        text.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split(',').next())
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    assert_eq!(ids(export_since(&db, dir.path(), "24h")), ["12", "3"]);
    assert_eq!(ids(export_since(&db, dir.path(), "90m")), ["12"]);
    assert_eq!(ids(export_since(&db, dir.path(), "2d")), ["12", "3", "4"]);
}

#[test]
fn invalid_values_exit_2_and_touch_nothing() {
    let dir = scratch();
    std::fs::create_dir(dir.path().join("exports")).unwrap();
    let existing = dir.path().join("exports/events_export.csv");
    std::fs::write(&existing, "previous export").unwrap();
    for bad in [
        "yesterday",
        "2026-02-30",
        "2026-02-01T25:00",
        "2026-02-01T00:00:00+25:00",
        "-1d",
        "12x",
        "",
    ] {
        // No source configured either: the --since error comes first, nothing is opened.
        let run = Run::of(export_events(dir.path()).args(["--since", bad]));
        run.failure(2, &format!("invalid --since value {bad:?}"));
        assert_eq!(
            std::fs::read_to_string(&existing).unwrap(),
            "previous export"
        );
        assert_eq!(files_in(&dir.path().join("exports")), ["events_export.csv"]);
    }
}
