//! Features combined the way nightly jobs combine them: a two-format dataset on night two, a
//! dataset killed in its commit, rule partitions of legal but long rule names, incremental runs
//! into a rule-partitioned dataset, a pair whose recovery is itself interrupted, compressed
//! change files, a roles' connection limit, and inputs that once panicked or were half
//! supported.

mod common;

use std::path::Path;

use common::*;

fn export(dir: &Path, db: &TestDb, args: &[&str]) -> Run {
    Run::of(&mut export_cmd(dir, db, args))
}

fn export_cmd(dir: &Path, db: &TestDb, args: &[&str]) -> std::process::Command {
    let mut cmd = export_events(dir);
    cmd.args(["-q", "--database-url", &db.url()]).args(args);
    cmd
}

fn verify(dir: &Path, manifest: &Path) -> Run {
    Run::of(export_events(dir).arg("verify").arg(manifest))
}

fn insert(db: &TestDb, n: usize) {
    db.sql(&format!(
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
         SELECT now() - make_interval(days => i % 40), now(), 1 + i % 10, i % 2 = 0 \
         FROM generate_series(1, {n}) AS i"
    ));
}

fn duckdb_value(sql: &str) -> String {
    let conn = duckdb::Connection::open_in_memory().unwrap();
    conn.query_row(sql, [], |row| row.get::<_, String>(0))
        .unwrap()
}

const DATASET: &[&str] = &["--partition-by", "day", "--format", "csv,parquet"];

#[test]
fn a_two_format_dataset_is_written_again_on_the_next_night() {
    let db = TestDb::sample("seam_two_formats");
    let dir = scratch();
    export(dir.path(), &db, DATASET).success();
    insert(&db, 100);
    let second = export(dir.path(), &db, DATASET).success();
    assert!(second.stdout.starts_with("Exported 115 events"), "{second}");
    let manifest = dir.path().join("exports/events_export.csv.manifest.json");
    verify(dir.path(), &manifest).success();
}

#[test]
fn a_dataset_killed_in_its_commit_is_completed_and_written_again() {
    let db = TestDb::sample("seam_dataset_kill");
    let dir = scratch();
    export(dir.path(), &db, DATASET).success();
    insert(&db, 100);
    let child = spawn_stopped_at(
        &mut export_cmd(dir.path(), &db, DATASET),
        "commit.between-renames",
    );
    signal(child.id(), "KILL");
    assert_eq!(finish(child).code, None);
    let next = export(dir.path(), &db, DATASET).success();
    assert!(next.stdout.starts_with("Exported 115 events"), "{next}");
    verify(
        dir.path(),
        &dir.path().join("exports/events_export.csv.manifest.json"),
    )
    .success();
    let folder = dir.path().join("exports");
    assert!(
        !files_in(&folder)
            .iter()
            .any(|f| f.starts_with('.') && f != ".events_export.csv.lock"),
        "nothing hidden is left: {:?}",
        files_in(&folder)
    );
}

#[test]
fn rule_partitions_take_any_legal_rule_name_and_read_back_with_hive_partitioning() {
    let db = TestDb::sample("seam_long_rule");
    // Django's rules.name is varchar(255): 255 characters, here 765 bytes.
    let long = "温".repeat(255);
    db.sql(&format!(
        "INSERT INTO rules (id, name, condition, action, is_active, device_metric_id) \
         VALUES (11, '{long}', '{{}}', '{{}}', true, 11); \
         INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
         VALUES (now(), now(), 11, false), (now(), now(), 11, true)"
    ));
    let dir = scratch();
    export(
        dir.path(),
        &db,
        &[
            "--partition-by",
            "rule",
            "--format",
            "parquet",
            "-o",
            "rules",
        ],
    )
    .success();
    let root = dir.path().join("rules");
    let partitions: std::collections::BTreeSet<String> = tree(&root)
        .into_iter()
        .map(|f| f.split('/').next().unwrap().to_owned())
        .filter(|f| !f.starts_with('.'))
        .collect();
    assert_eq!(partitions.len(), 11, "{partitions:?}");
    assert!(partitions.iter().all(|p| p.starts_with("rule_id=")));
    let glob = format!("{}/**/*.parquet", root.display());
    assert_eq!(
        duckdb_value(&format!(
            "SELECT count(*)::text FROM read_parquet('{glob}', hive_partitioning = true)"
        )),
        "17"
    );
    assert_eq!(
        duckdb_value(&format!(
            "SELECT max(rule) FROM read_parquet('{glob}', hive_partitioning = true) \
             WHERE rule_id = 11"
        )),
        long,
        "the name stays a column"
    );
    let python = setting("EXPORT_EVENTS_TEST_S3_PYTHON");
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import sys, pyarrow.dataset as ds; t = ds.dataset(sys.argv[1], format='parquet', \
             partitioning='hive').to_table(); \
             print(t.num_rows, sorted(set(t.column('rule_id').to_pylist()))[-1])",
        ])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "17 11",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn incremental_runs_into_rule_partitions_write_a_part_per_rule() {
    let db = TestDb::generated("seam_incr_rule", 3_000);
    db.settle();
    let dir = scratch();
    let run = Run::of(export_events(dir.path()).args([
        "-q",
        "--incremental",
        "--partition-by",
        "rule",
        "--format",
        "parquet",
        "--database-url",
        &db.url(),
    ]))
    .success();
    assert!(run.stdout.starts_with("Exported 3000 events"), "{run}");
    let rules: usize = db
        .value("SELECT count(DISTINCT rule_id) FROM events")
        .parse()
        .unwrap();
    let dataset = std::fs::read_dir(dir.path().join("exports"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap();
    assert_eq!(
        tree(&dataset).len(),
        rules + 1,
        "a part per rule, and the marker"
    );
}

#[test]
fn a_pair_whose_recovery_is_interrupted_is_never_left_mixed() {
    let db = TestDb::sample("seam_pair_order");
    let dir = scratch();
    let pair = ["--format", "parquet,csv", "-o", "x.parquet"];
    export(dir.path(), &db, &pair).success();
    // Enough rows for many batches: the interrupted run below is stopped in its first one.
    insert(&db, 30_000);
    let child = spawn_stopped_at(
        &mut export_cmd(dir.path(), &db, &pair),
        "commit.between-renames",
    );
    signal(child.id(), "KILL");
    finish(child);
    insert(&db, 10);
    // The next run is interrupted while it streams, after its recovery.
    let child = spawn_stopped_at(&mut export_cmd(dir.path(), &db, &pair), "export.streaming");
    signal(child.id(), "INT");
    signal(child.id(), "CONT");
    assert_eq!(finish(child).code, Some(130));
    // The killed run's commit was completed: its manifest describes both files.
    verify(dir.path(), &dir.path().join("x.parquet.manifest.json")).success();
    let csv_rows = csv::Reader::from_path(dir.path().join("x.csv"))
        .unwrap()
        .records()
        .count();
    assert_eq!(
        csv_rows, 30_015,
        "the CSV of the killed run, not the first one"
    );
}

#[test]
fn compressed_change_files_are_named_for_their_compression() {
    let db = TestDb::sample("seam_changes_gz");
    let dir = scratch();
    let slot = Slot::create(&db, dir.path());
    insert(&db, 5);
    Run::of(&mut slot.changes(dir.path(), &["--compression", "gzip"])).success();
    let names = files_in(&dir.path().join("exports/changes"));
    let files: Vec<&String> = names.iter().filter(|f| f.starts_with("changes_")).collect();
    assert_eq!(files.len(), 1, "{names:?}");
    assert!(files[0].ends_with(".csv.gz"), "{names:?}");
}

#[test]
fn a_role_with_a_connection_limit_gets_fewer_readers_and_no_password_is_shown() {
    let db = TestDb::generated("seam_connlimit", 600_000);
    db.sql("ANALYZE events");
    let role = format!("{}_limited", db.name);
    db.sql(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'Secr3t-pw' CONNECTION LIMIT 2; \
         GRANT SELECT ON events, rules TO {role}"
    ));
    let (host, port) = server_address();
    let url = format!("postgres://{role}:Secr3t-pw@{host}:{port}/{}", db.name);
    let dir = scratch();
    let run =
        Run::of(export_events(dir.path()).args(["-q", "--jobs", "4", "--database-url", &url]));
    assert!(
        !run.stderr.contains("Secr3t-pw") && !run.stdout.contains("Secr3t-pw"),
        "{run}"
    );
    let run = run.success();
    assert!(run.stdout.starts_with("Exported 600000 events"), "{run}");
    // A wrong password is reported without it.
    let wrong = format!("postgres://{role}:Wr0ng-pw@{host}:{port}/{}", db.name);
    let run = Run::of(export_events(dir.path()).args(["-q", "--database-url", &wrong]));
    assert!(!run.stderr.contains("Wr0ng-pw"), "{run}");
    db.sql(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

#[test]
fn inputs_that_once_panicked_or_were_half_supported_are_refused_in_one_line() {
    let dir = scratch();
    for since in ["2026-02-01T00:00+::", "2026-02-01T00:00+:"] {
        Run::of(export_events(dir.path()).args(["--demo", "--since", since]))
            .failure(2, "invalid --since value");
    }
    let run = Run::of(export_events(dir.path()).args([
        "--demo",
        "-o",
        "x_{time}.csv",
        "--keep-for",
        "30500568904944w",
    ]));
    assert!(
        run.code == Some(2) && run.stderr.contains("invalid age"),
        "{run}"
    );
    Run::of(export_events(dir.path()).args([
        "--incremental",
        "--state",
        "s3://bucket/st/state.json",
        "--database-url",
        "postgres://nobody@127.0.0.1:1/none",
    ]))
    .failure(2, "the state file must be a local file");
    assert!(!Path::new("/st").exists());
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[test]
fn a_hub_with_use_tz_false_gets_naive_timestamps_end_to_end() {
    let db = TestDb::sample("seam_naive");
    db.use_tz_false();
    let dir = scratch();
    export(dir.path(), &db, &["--format", "csv,parquet"]).success();
    let expected = String::from_utf8(compat_bytes("expected_all.csv"))
        .unwrap()
        .replace("+00:00,", ",");
    let csv = std::fs::read_to_string(dir.path().join("exports/events_export.csv")).unwrap();
    assert_eq!(
        csv, expected,
        "str() of naive datetimes, as export_events wrote them"
    );
    let file = std::fs::File::open(dir.path().join("exports/events_export.parquet")).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    assert_eq!(
        reader
            .schema()
            .field_with_name("timestamp")
            .unwrap()
            .data_type(),
        &arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
        "a Parquet timestamp not adjusted to UTC"
    );
    // --since compares the wall clock, as Django did on such a column.
    let since = export(
        dir.path(),
        &db,
        &["--since", "2026-02-01", "-o", "since.csv"],
    )
    .success();
    let expected_since = String::from_utf8(compat_bytes("expected_since.csv"))
        .unwrap()
        .replace("+00:00,", ",");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("since.csv")).unwrap(),
        expected_since,
        "{since}"
    );
    // Incremental files and change files alike.
    let slot = Slot::create(&db, dir.path());
    db.settle();
    Run::of(export_events(dir.path()).args([
        "-q",
        "--incremental",
        "-o",
        "inc_{time}.csv",
        "--database-url",
        &db.url(),
    ]))
    .success();
    let inc = files_in(dir.path())
        .into_iter()
        .find(|f| f.starts_with("inc_") && f.ends_with(".csv"))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join(inc)).unwrap(),
        expected
    );
    db.sql(
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
         VALUES ('2026-05-05 05:05:05.5', now(), 1, false)",
    );
    Run::of(&mut slot.changes(dir.path(), &[])).success();
    let folder = dir.path().join("exports/changes");
    let change = files_in(&folder)
        .into_iter()
        .find(|f| f.starts_with("changes_"))
        .unwrap();
    let text = std::fs::read_to_string(folder.join(change)).unwrap();
    assert!(text.contains(",2026-05-05 05:05:05.500000,"), "{text}");
}

#[test]
fn sigint_ends_a_wait_for_another_runs_lock() {
    let db = TestDb::sample("seam_wait_int");
    let dir = scratch();
    let holder = spawn_stopped_at(&mut export_cmd(dir.path(), &db, &[]), "export.streaming");
    let mut waiter = export_events(dir.path());
    waiter.args(["--wait", "--database-url", &db.url()]);
    let waiter = waiter
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    signal(waiter.id(), "INT");
    let started = std::time::Instant::now();
    let ended = finish(waiter);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(ended.code, Some(130), "{ended}");
    assert!(
        ended.stderr.contains("waiting for the other run"),
        "{ended}"
    );
    signal(holder.id(), "CONT");
    finish(holder).success();
}

#[test]
fn an_error_after_the_commit_of_an_interrupted_run_is_not_called_no_change() {
    let db = TestDb::sample("seam_after_commit");
    let dir = scratch();
    let nightly = ["-o", "d_{time}.csv", "--keep", "1"];
    export(dir.path(), &db, &nightly).success();
    // Retention will refuse this planted run after the commit.
    std::fs::write(
        dir.path().join("d_20000101T000000.000Z.csv.manifest.json"),
        serde_json::json!({
            "kind": "export-events manifest", "version": 1, "tool": "x",
            "created_at": "2000-01-01T00:00:00Z",
            "source": {"kind": "postgres", "system_identifier": null, "database": null,
                       "database_oid": null, "events_oid": null, "path": null},
            "since": null, "snapshot": null, "partition_by": null, "rows": 0,
            "files": [{"path": "../elsewhere", "rows": 0, "min_timestamp": null,
                       "max_timestamp": null, "bytes": 0, "sha256": ""}]
        })
        .to_string(),
    )
    .unwrap();
    let child = spawn_stopped_at(&mut export_cmd(dir.path(), &db, &nightly), "commit.done");
    signal(child.id(), "INT");
    signal(child.id(), "CONT");
    let ended = finish(child);
    assert_ne!(ended.code, Some(0), "{ended}");
    assert!(
        !ended.stderr.contains("no output file was changed"),
        "{ended}"
    );
    assert!(
        ended.stderr.contains("after the output was put in place"),
        "{ended}"
    );
    assert!(ended.stderr.contains("refusing it"), "{ended}");
}
