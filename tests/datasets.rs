//! Outputs for analysts and lakes: partitioned datasets read back by an independent reader
//! (DuckDB's own Parquet reader with Hive partitioning) equal the single-file export; CSV
//! datasets concatenate to the single CSV; compressed CSV decompresses to the compatible bytes;
//! manifests verify, and fail naming what changed; files are private; retention deletes only
//! what manifests list, never the newest run.

mod common;

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use common::*;

fn export(dir: &Path, db: &TestDb, args: &[&str]) -> Run {
    Run::of(
        export_events(dir)
            .args(["-q", "--database-url", &db.url()])
            .args(args),
    )
}

fn duckdb_count(sql: &str) -> i64 {
    let conn = duckdb::Connection::open_in_memory().unwrap();
    conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

#[test]
fn a_day_partitioned_parquet_dataset_holds_the_single_files_rows() {
    let db = TestDb::generated("ds_parquet", 20_000);
    let dir = scratch();
    export(
        dir.path(),
        &db,
        &["--format", "parquet", "-o", "single.parquet"],
    )
    .success();
    let run = export(
        dir.path(),
        &db,
        &[
            "--format",
            "parquet",
            "--partition-by",
            "day",
            "--max-rows-per-file",
            "20",
            "-o",
            "ds",
        ],
    )
    .success();
    assert!(run.stdout.starts_with("Exported 20000 events to "), "{run}");
    let ds = dir.path().join("ds");
    let files = tree(&ds);
    assert!(
        files.iter().any(|f| f.ends_with("part-1.parquet")),
        "rollover: {files:?}"
    );
    assert!(
        files
            .iter()
            .all(|f| f.starts_with("date=") || f == ".export-events-dataset"),
        "Hive-style folders, and the hidden marker of a dataset export-events wrote"
    );
    let (single, dataset) = (
        dir.path().join("single.parquet").display().to_string(),
        format!("{}/**/*.parquet", ds.display()),
    );
    let read = format!("read_parquet('{dataset}', hive_partitioning = true)");
    for (a, b) in [
        (
            format!("(SELECT * EXCLUDE (date) FROM {read})"),
            format!("read_parquet('{single}')"),
        ),
        (
            format!("read_parquet('{single}')"),
            format!("(SELECT * EXCLUDE (date) FROM {read})"),
        ),
    ] {
        let missing = duckdb_count(&format!(
            "SELECT count(*) FROM (FROM {a} EXCEPT ALL FROM {b})"
        ));
        assert_eq!(missing, 0, "the same rows both ways");
    }
    let misplaced = duckdb_count(&format!(
        "SELECT count(*) FROM {read} WHERE floor(epoch_us(\"timestamp\") / 86400000000) \
         <> CAST(date AS DATE) - DATE '1970-01-01'"
    ));
    assert_eq!(misplaced, 0, "every row in its day");
    assert!(dir.path().join("ds.manifest.json").is_file());
}

#[test]
fn csv_datasets_concatenate_to_the_single_csv_newest_partition_first() {
    let db = TestDb::generated("ds_csv", 20_000);
    let dir = scratch();
    export(dir.path(), &db, &["-o", "single.csv"]).success();
    for (by, files_per) in [("day", "300"), ("month", "2000")] {
        let out = format!("by_{by}");
        export(
            dir.path(),
            &db,
            &[
                "--partition-by",
                by,
                "--max-rows-per-file",
                files_per,
                "-o",
                &out,
            ],
        )
        .success();
        let root = dir.path().join(&out);
        let mut partitions: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| !name.starts_with('.'))
            .collect();
        partitions.sort();
        partitions.reverse();
        let single = std::fs::read(dir.path().join("single.csv")).unwrap();
        let header_len = single.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        let mut joined = single[..header_len].to_vec();
        for partition in partitions {
            let mut parts: Vec<PathBuf> = std::fs::read_dir(root.join(&partition))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            parts.sort_by_key(|p| {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                name.trim_start_matches("part-").parse::<u32>().unwrap()
            });
            for part in parts {
                let bytes = std::fs::read(part).unwrap();
                assert_eq!(
                    &bytes[..header_len],
                    &single[..header_len],
                    "each file has the header"
                );
                joined.extend_from_slice(&bytes[header_len..]);
            }
        }
        assert!(
            joined == single,
            "--partition-by {by}: the single CSV, partition after partition"
        );
    }
}

#[test]
fn rule_partitions_are_named_by_rule_id_and_hold_only_their_rule() {
    let db = TestDb::sample("ds_rule");
    let dir = scratch();
    export(dir.path(), &db, &["--partition-by", "rule", "-o", "rules"]).success();
    let root = dir.path().join("rules");
    let parts: Vec<String> = tree(&root)
        .into_iter()
        .filter(|f| !f.starts_with('.'))
        .collect();
    let partitions: std::collections::BTreeSet<&str> =
        parts.iter().map(|f| f.split('/').next().unwrap()).collect();
    // Every rule's name, awkward ones included (quotes, line breaks, empty, non-ASCII), is a
    // column; the folders are the rules' ids.
    let expected: std::collections::BTreeSet<String> =
        (1..=10).map(|id| format!("rule_id={id}")).collect();
    assert_eq!(
        partitions,
        expected.iter().map(String::as_str).collect(),
        "{parts:?}"
    );
    let names: serde_json::Value =
        serde_json::from_str(&db.value("SELECT json_object_agg(id, name) FROM rules")).unwrap();
    let mut rows = 0;
    for part in &parts {
        let id = &part["rule_id=".len()..part.find('/').unwrap()];
        let mut reader = csv::Reader::from_path(root.join(part)).unwrap();
        for record in reader.records() {
            let record = record.unwrap();
            assert_eq!(
                &record[2],
                names[id].as_str().unwrap(),
                "{part}: only rule {id}'s events"
            );
            rows += 1;
        }
    }
    assert_eq!(rows, 15);
}

#[test]
fn compressed_csv_holds_the_compatible_bytes() {
    let db = TestDb::sample("ds_compressed");
    let dir = scratch();
    export(dir.path(), &db, &["--compression", "gzip"]).success();
    export(dir.path(), &db, &["-o", "chosen_by_name.csv.zst"]).success();
    let mut gz = Vec::new();
    flate2::read::MultiGzDecoder::new(
        std::fs::File::open(dir.path().join("exports/events_export.csv.gz")).unwrap(),
    )
    .read_to_end(&mut gz)
    .unwrap();
    assert_eq!(gz, compat_bytes("expected_all.csv"));
    let zst =
        zstd::decode_all(std::fs::File::open(dir.path().join("chosen_by_name.csv.zst")).unwrap())
            .unwrap();
    assert_eq!(zst, compat_bytes("expected_all.csv"));
    let both = export(
        dir.path(),
        &db,
        &[
            "--compression",
            "zstd",
            "--format",
            "both",
            "-o",
            "b.csv.zst",
        ],
    );
    let both = both.success();
    assert!(
        both.stdout.contains("b.csv.zst and ") && both.stdout.contains("b.parquet"),
        "{both}"
    );
    export(dir.path(), &db, &["--compression", "snappy"]).failure(2, "snappy is Parquet's only");
}

#[test]
fn verify_passes_on_a_fresh_export_and_names_what_changed() {
    let db = TestDb::sample("ds_verify");
    let dir = scratch();
    export(dir.path(), &db, &["--format", "both"]).success();
    let verify = || {
        Run::of(
            export_events(dir.path())
                .args(["verify", "exports/events_export.csv.manifest.json"])
                .args(["--database-url", &db.url()]),
        )
    };
    let ok = verify().success();
    assert!(ok.stdout.contains("Verified 2 files (15 rows)"), "{ok}");
    assert!(ok.stdout.contains("source: 15 rows, as exported"), "{ok}");
    db.sql(
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
         VALUES (now(), now(), 1, false), (now(), now(), 2, true)",
    );
    let more = verify().success();
    assert!(more.stdout.contains("source: has 2 more rows"), "{more}");
    let csv = dir.path().join("exports/events_export.csv");
    let mut bytes = std::fs::read(&csv).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&csv, bytes).unwrap();
    let changed = verify();
    assert_eq!(changed.code, Some(1), "{changed}");
    assert!(changed.stdout.contains("content differs"), "{changed}");
    assert!(changed.stderr.contains("1 of 2 files differ"), "{changed}");
    std::fs::remove_file(dir.path().join("exports/events_export.parquet")).unwrap();
    let missing = verify();
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stdout.contains("events_export.parquet") && missing.stdout.contains("missing"),
        "{missing}"
    );
}

#[test]
fn files_are_private_unless_asked_and_locks_never_follow_symlinks() {
    let db = TestDb::sample("ds_private");
    let dir = scratch();
    export(
        dir.path(),
        &db,
        &["--partition-by", "day", "--format", "both"],
    )
    .success();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("exports")), 0o700);
    assert_eq!(mode(&dir.path().join("exports/events_export.csv")), 0o700);
    for file in tree(&dir.path().join("exports")) {
        assert_eq!(
            mode(&dir.path().join("exports").join(&file)),
            0o600,
            "{file}"
        );
    }
    export(dir.path(), &db, &["--mode", "0640", "-o", "shared.csv"]).success();
    assert_eq!(mode(&dir.path().join("shared.csv")), 0o640);
    // A symlink planted at the lock's name is refused, and what it points at is untouched.
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join(".planted.csv.lock")).unwrap();
    export(dir.path(), &db, &["-o", "planted.csv"]).failure(1, "lock file");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(!dir.path().join("planted.csv").exists());
}

#[test]
fn retention_deletes_only_what_manifests_list_and_never_the_newest_run() {
    let db = TestDb::sample("ds_keep");
    let dir = scratch();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["-o", "out/events_{time}.csv"];
        args.extend_from_slice(extra);
        let run = export(dir.path(), &db, &args).success();
        std::thread::sleep(std::time::Duration::from_millis(5));
        run
    };
    for _ in 0..3 {
        run(&[]);
    }
    std::fs::write(dir.path().join("out/events_by_hand.csv"), "mine").unwrap();
    std::fs::write(dir.path().join("out/events_x.csv.manifest.json"), "{}").unwrap();
    let kept = run(&["--keep", "2"]);
    assert!(kept.stdout.starts_with("Exported 15 events"), "{kept}");
    let left = files_in(&dir.path().join("out"));
    let runs: Vec<&String> = left
        .iter()
        .filter(|f| f.starts_with("events_2") && f.ends_with(".csv"))
        .collect();
    assert_eq!(runs.len(), 2, "{left:?}");
    assert!(
        left.contains(&"events_by_hand.csv".to_owned()),
        "not ours: kept"
    );
    assert!(
        left.contains(&"events_x.csv.manifest.json".to_owned()),
        "not a manifest: kept"
    );
    // Made old, the remaining earlier run goes with --keep-for; the newest never does.
    let older = left
        .iter()
        .find(|f| f.ends_with(".csv.manifest.json") && f.starts_with("events_2"))
        .unwrap();
    let path = dir.path().join("out").join(older);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    manifest["created_at"] = "2020-01-01T00:00:00.000Z".into();
    std::fs::write(&path, manifest.to_string()).unwrap();
    run(&["--keep-for", "1d"]);
    let left = files_in(&dir.path().join("out"));
    assert!(!left.contains(older), "{left:?}");
    export(dir.path(), &db, &["--keep", "1"]).failure(2, "template with {time}");
}
