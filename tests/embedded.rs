//! The embedded sources: a DuckDB file and the demo database give the same bytes as PostgreSQL
//! for the same data.

mod common;

use common::*;

fn generate(dir: &std::path::Path, args: &[&str]) -> Run {
    Run::of(export_events(dir).arg("generate").args(args))
}

#[test]
fn a_duckdb_file_with_the_sample_data_gives_the_expected_bytes() {
    let dir = scratch();
    generate(dir.path(), &["--rows", "15", "--duckdb", "sample.duckdb"]).success();
    Run::of(export_events(dir.path()).args(["--duckdb", "sample.duckdb", "-o", "all.csv"]))
        .success();
    assert_eq!(
        std::fs::read(dir.path().join("all.csv")).unwrap(),
        compat_bytes("expected_all.csv")
    );
    let run = Run::of(export_events(dir.path()).args([
        "--duckdb",
        "sample.duckdb",
        "--since",
        "2026-02-01T00:00:00Z",
        "-o",
        "since.csv",
    ]));
    assert!(run.success().stdout.starts_with("Exported 12 events"));
    assert_eq!(
        std::fs::read(dir.path().join("since.csv")).unwrap(),
        compat_bytes("expected_since.csv")
    );
}

#[test]
fn generated_data_exports_identically_from_postgres_and_duckdb() {
    let db = TestDb::empty("embedded_same");
    let dir = scratch();
    let args = ["--rows", "20000", "--seed", "7", "--rules", "50"];
    generate(
        dir.path(),
        &[&args[..], &["--database-url", &db.url()]].concat(),
    )
    .success();
    generate(
        dir.path(),
        &[&args[..], &["--duckdb", "same.duckdb"]].concat(),
    )
    .success();
    for since in [None, Some("2025-07-01")] {
        let mut pg = export_events(dir.path());
        pg.args(["--database-url", &db.url(), "-o", "pg.csv"]);
        let mut duck = export_events(dir.path());
        duck.args(["--duckdb", "same.duckdb", "-o", "duck.csv"]);
        if let Some(since) = since {
            pg.args(["--since", since]);
            duck.args(["--since", since]);
        }
        let (pg, duck) = (Run::of(&mut pg).success(), Run::of(&mut duck).success());
        assert_eq!(
            pg.stdout.split(" to ").next(),
            duck.stdout.split(" to ").next()
        );
        let (a, b) = (
            std::fs::read(dir.path().join("pg.csv")).unwrap(),
            std::fs::read(dir.path().join("duck.csv")).unwrap(),
        );
        assert!(
            a == b,
            "PostgreSQL and DuckDB exports differ (since {since:?})"
        );
        assert!(a.len() > 100_000, "a real amount of data");
    }
}

#[test]
fn the_generator_is_deterministic_and_refuses_to_overwrite() {
    let dir = scratch();
    generate(dir.path(), &["--rows", "5000", "--duckdb", "a.duckdb"]).success();
    generate(dir.path(), &["--rows", "5000", "--duckdb", "a.duckdb"]).failure(2, "pass --replace");
    generate(
        dir.path(),
        &["--rows", "5000", "--duckdb", "a.duckdb", "--replace"],
    )
    .success();
    generate(dir.path(), &["--rows", "5000", "--duckdb", "b.duckdb"]).success();
    generate(
        dir.path(),
        &["--rows", "5000", "--seed", "1", "--duckdb", "c.duckdb"],
    )
    .success();
    let export = |file: &str| {
        Run::of(export_events(dir.path()).args(["--duckdb", file, "-o", "x.csv"])).success();
        std::fs::read(dir.path().join("x.csv")).unwrap()
    };
    let a = export("a.duckdb");
    assert!(a == export("b.duckdb"), "same seed, same rows");
    assert!(a != export("c.duckdb"), "another seed, other rows");
}

#[test]
fn demo_is_created_once_announced_and_exported() {
    let dir = scratch();
    let run = Run::of(export_events(dir.path()).arg("--demo")).success();
    assert!(
        run.stderr
            .contains("creating the demo database exports/demo.duckdb"),
        "{run}"
    );
    let csv = dir.path().join("exports/events_export.csv");
    assert_eq!(run.stdout, exported(100_000, &csv));
    let first = std::fs::read(&csv).unwrap();
    assert!(first
        .starts_with(b"id,timestamp,rule,acknowledged,trigger_telemetry_id,trigger_device_id\r\n"));
    assert!(
        String::from_utf8_lossy(&first).contains("\"Humidity, \"\"critical\"\"\""),
        "awkward values included"
    );
    let again = Run::of(export_events(dir.path()).args(["--demo", "--quiet"])).success();
    assert!(
        again.stderr.is_empty(),
        "--quiet and no second creation\n{again}"
    );
    assert!(std::fs::read(&csv).unwrap() == first);
    assert_eq!(
        files_in(&dir.path().join("exports")),
        [
            "demo.duckdb",
            "events_export.csv",
            "events_export.csv.manifest.json"
        ]
    );
}

#[test]
fn a_missing_duckdb_file_is_bad_input() {
    let dir = scratch();
    Run::of(export_events(dir.path()).args(["--duckdb", "nope.duckdb"]))
        .failure(2, "nope.duckdb does not exist");
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn sources_are_mutually_exclusive() {
    let dir = scratch();
    let run = Run::of(export_events(dir.path()).args(["--demo", "--duckdb", "x.duckdb"]));
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("cannot be used with"), "{run}");
}

#[test]
fn the_spill_folder_is_new_private_and_named_by_no_one_in_advance() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let dir = scratch();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    generate(dir.path(), &["--rows", "100", "--duckdb", "s.duckdb"]).success();
    let child = spawn_stopped_at(
        export_events(dir.path())
            .args(["-q", "--duckdb", "s.duckdb", "-o", "x.csv"])
            .env("TMPDIR", &tmp),
        "export.streaming",
    );
    let pid = child.id();
    let spills: Vec<String> = files_in(&tmp)
        .into_iter()
        .filter(|name| name.ends_with(".spill"))
        .collect();
    signal(pid, "KILL");
    finish(child);
    assert_eq!(spills.len(), 1, "{spills:?}");
    let name = &spills[0];
    // export-events-<pid>-XXXXXX.spill: a random part, so no one can make it in advance.
    let random = name
        .strip_prefix(&format!("export-events-{pid}-"))
        .and_then(|rest| rest.strip_suffix(".spill"))
        .unwrap_or_else(|| panic!("{name}"));
    assert!(random.len() >= 6, "{name}");
    let meta = std::fs::metadata(tmp.join(name)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{name}");
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    // The next run removes the killed run's folder, and ends with none of its own.
    Run::of(
        export_events(dir.path())
            .args(["-q", "--duckdb", "s.duckdb", "-o", "y.csv"])
            .env("TMPDIR", &tmp),
    )
    .success();
    assert!(files_in(&tmp).is_empty(), "{:?}", files_in(&tmp));
}

#[test]
fn the_spill_folder_a_killed_run_left_is_removed_by_the_next_run() {
    let dir = scratch();
    let tmp = dir.path().join("tmp");
    // The folder of a run that is gone (SIGKILL leaves it), and one of a live process.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let stale = tmp.join(format!("export-events-{pid}.spill"));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(
        stale.join("duckdb_temp_storage_DEFAULT-0.tmp"),
        vec![0u8; 4096],
    )
    .unwrap();
    let live = tmp.join(format!("export-events-{}.spill", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();
    generate(dir.path(), &["--rows", "100", "--duckdb", "s.duckdb"]).success();
    Run::of(
        export_events(dir.path())
            .args(["-q", "--duckdb", "s.duckdb", "-o", "x.csv"])
            .env("TMPDIR", &tmp),
    )
    .success();
    assert!(!stale.exists(), "the gone run's folder is removed");
    assert!(live.exists(), "a live process's folder stays");
}
