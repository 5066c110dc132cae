//! The drop-in contract: the bytes, the default and custom output paths, the success line.

mod common;

use common::*;

#[test]
fn full_export_matches_the_original_commands_bytes() {
    let db = TestDb::sample("contract_all");
    let dir = scratch();
    let run = Run::of(export_events(dir.path()).args(["--database-url", &db.url()])).success();
    let path = dir.path().join("exports/events_export.csv");
    assert_eq!(run.stdout, exported(15, &path));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        compat_bytes("expected_all.csv")
    );
    assert_eq!(
        files_in(&dir.path().join("exports")),
        ["events_export.csv", "events_export.csv.manifest.json"]
    );
}

#[test]
fn since_export_matches_the_original_commands_bytes() {
    let db = TestDb::sample("contract_since");
    let dir = scratch();
    let run = Run::of(export_events(dir.path()).args([
        "--database-url",
        &db.url(),
        "--since",
        "2026-02-01T00:00:00Z",
        "--output",
        "since.csv",
    ]))
    .success();
    let path = dir.path().join("since.csv");
    assert_eq!(run.stdout, exported(12, &path));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        compat_bytes("expected_since.csv")
    );
}

#[test]
fn the_iot_hubs_own_fixtures_export_as_the_original_did() {
    let db = TestDb::with("contract_hub", &["iot_hub_fixtures.sql"]);
    let dir = scratch();
    Run::of(export_events(dir.path()).args(["--database-url", &db.url(), "--output", "hub.csv"]))
        .success();
    let written = std::fs::read(dir.path().join("hub.csv")).unwrap();
    assert_eq!(written, compat_bytes("expected_iot_hub_fixtures.csv"));
}

#[test]
fn an_empty_table_writes_the_header_only() {
    let db = TestDb::with("contract_empty", &[]);
    let dir = scratch();
    let run = Run::of(export_events(dir.path()).args(["--database-url", &db.url(), "-o", "e.csv"]));
    let run = run.success();
    assert_eq!(run.stdout, exported(0, &dir.path().join("e.csv")));
    let header = "id,timestamp,rule,acknowledged,trigger_telemetry_id,trigger_device_id\r\n";
    assert_eq!(
        std::fs::read_to_string(dir.path().join("e.csv")).unwrap(),
        header
    );
}

#[test]
fn output_paths_are_reported_absolute_and_normalized() {
    let db = TestDb::sample("contract_paths");
    let dir = scratch();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let run = Run::of(export_events(&dir.path().join("sub")).args([
        "--database-url",
        &db.url(),
        "--output",
        "../out.csv",
    ]))
    .success();
    assert_eq!(run.stdout, exported(15, &dir.path().join("out.csv")));
    let absolute = dir.path().join("abs.csv");
    let run = Run::of(
        export_events(dir.path())
            .args(["--database-url", &db.url(), "--output"])
            .arg(&absolute),
    );
    assert_eq!(run.success().stdout, exported(15, &absolute));
}

#[test]
fn a_custom_output_folder_must_exist() {
    let dir = scratch();
    let run = Run::of(export_events(dir.path()).args(["--demo", "--output", "nope/out.csv"]));
    run.failure(2, "does not exist");
    assert!(
        files_in(dir.path()).is_empty(),
        "nothing created: {:?}",
        files_in(dir.path())
    );
    let run = Run::of(export_events(dir.path()).args(["--demo", "--output", "."]));
    run.failure(2, "is a folder");
}

#[test]
fn help_documents_the_original_flags() {
    let dir = scratch();
    let run = Run::of(export_events(dir.path()).arg("--help")).success();
    for flag in [
        "--since",
        "--output",
        "--database-url",
        "--duckdb",
        "--demo",
        "--quiet",
        "generate",
    ] {
        assert!(
            run.stdout.contains(flag),
            "{flag} missing from --help\n{run}"
        );
    }
}

#[test]
fn bytes_do_not_depend_on_time_zone_settings() {
    let db = TestDb::sample("contract_tz");
    let dir = scratch();
    let made = Run::of(
        export_events(dir.path()).args(["generate", "--rows", "15", "--duckdb", "s.duckdb"]),
    );
    made.success();
    let url = db.url();
    for (tz, pgtz) in [
        ("Asia/Kolkata", "America/St_Johns"),
        ("America/Los_Angeles", "Pacific/Chatham"),
    ] {
        for source in [["--database-url", url.as_str()], ["--duckdb", "s.duckdb"]] {
            let mut cmd = export_events(dir.path());
            cmd.env("TZ", tz)
                .env("PGTZ", pgtz)
                .args(source)
                .args(["-o", "tz.csv"]);
            Run::of(&mut cmd).success();
            let written = std::fs::read(dir.path().join("tz.csv")).unwrap();
            assert!(
                written == compat_bytes("expected_all.csv"),
                "TZ={tz} PGTZ={pgtz} {source:?}"
            );
        }
    }
}
