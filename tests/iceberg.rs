//! Exports into Apache Iceberg tables, read back by independent readers: pyiceberg (the SQL
//! catalog on the same SQLite file, and on PostgreSQL) and DuckDB's iceberg extension. A table
//! shows no snapshot or a whole one, whatever stops the run, and a failed run's data files are
//! removed by the next run, never referenced.

mod common;

use common::lake::Lake;
use common::own_s3::OwnS3;
use common::*;

/// The rows pyiceberg read, as `events_in_postgres` gives them.
fn rows(table: &serde_json::Value) -> Vec<EventRow> {
    event_rows(table["rows"].as_array().unwrap())
}

/// The timestamp `offset` events from the newest, as ISO 8601 in UTC.
fn timestamp_at(db: &TestDb, offset: usize) -> String {
    db.value(&format!(
        "SELECT to_char(\"timestamp\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"') \
         FROM events ORDER BY \"timestamp\" DESC, id DESC OFFSET {offset} LIMIT 1"
    ))
}

#[test]
fn an_export_is_one_snapshot_that_pyiceberg_and_duckdb_read_back_exactly() {
    let db = TestDb::generated("ice_full", 20_000);
    let lake = Lake::sqlite();
    let run = lake.export(&db, "hub.events", &[]).success();
    assert!(
        run.stdout
            .starts_with("Exported 20000 events to iceberg:hub.events (snapshot "),
        "{run}"
    );
    let table = lake.read("hub.events", None);
    assert_eq!(table["snapshots"], 1, "{table}");
    assert_eq!(rows(&table), events_in_postgres(&db, None));
    let summary = &table["summary"];
    assert_eq!(summary["total-records"], "20000", "{summary}");
    assert_eq!(summary["export-events.rows"], "20000", "{summary}");
    assert!(
        summary["export-events.pg-snapshot"].is_string(),
        "{summary}"
    );
    let spec = table["spec"].as_str().unwrap();
    assert!(spec.contains("day"), "partitioned by day: {spec}");
    let sort = table["sort"].as_str().unwrap();
    assert!(
        sort.contains("2 DESC") && sort.contains("1 DESC"),
        "newest first: {sort}"
    );

    // A filter on timestamp plans only the newest partitions' files, and reads their rows.
    let since = timestamp_at(&db, 1_000);
    let recent = lake.read("hub.events", Some(&since));
    let (planned, files) = (recent["planned"].as_u64(), recent["files"].as_u64());
    assert!(planned < files, "pruned: {planned:?} of {files:?} files");
    assert_eq!(rows(&recent), events_in_postgres(&db, Some(&since)));

    // DuckDB's own reader, on the committed metadata.
    let metadata = table["metadata_location"].as_str().unwrap();
    let duck = duckdb::Connection::open_in_memory().unwrap();
    duck.execute_batch("LOAD iceberg").unwrap();
    let (count, ids) = duck_count_and_sum(&duck, metadata);
    assert_eq!(count, 20_000);
    assert_eq!(ids.to_string(), db.value("SELECT sum(id) FROM events"));

    // verify: every data file of the snapshot is there, of its size and rows.
    let verified = lake.verify("hub.events").success();
    assert!(
        verified
            .stdout
            .contains("(20000 rows) of iceberg:hub.events, snapshot "),
        "{verified}"
    );
    // A data file changed behind the table's back fails it, naming the file.
    let data = lake.warehouse.join("hub/events/data");
    let file = tree(&data)
        .into_iter()
        .find(|f| f.ends_with(".parquet"))
        .unwrap();
    std::fs::write(data.join(&file), b"PAR1 not parquet PAR1").unwrap();
    let failed = lake.verify("hub.events");
    assert_eq!(failed.code, Some(1), "{failed}");
    assert!(failed.stderr.contains("1 of "), "{failed}");
    assert!(failed.stdout.contains("size differs"), "{failed}");
}

#[test]
fn a_table_that_holds_rows_is_refused_not_given_them_twice() {
    let db = TestDb::sample("ice_twice");
    let lake = Lake::sqlite();
    lake.export(&db, "hub.events", &[]).success();
    let before = lake.read("hub.events", None);
    lake.export(&db, "hub.events", &[])
        .failure(2, "already holds 15 rows");
    let after = lake.read("hub.events", None);
    assert_eq!(before["metadata_location"], after["metadata_location"]);
    assert_eq!(lake.run_folders("hub.events").0.len(), 1);
}

#[test]
fn a_postgres_catalog_holds_the_table_beside_the_hub() {
    let db = TestDb::sample("ice_pg");
    let lake = Lake::postgres(&db);
    let run = lake.export(&db, "lake.hub.events", &["--partition-by", "month"]);
    assert!(
        run.stdout
            .starts_with("Exported 15 events to iceberg:lake.hub.events"),
        "{run}"
    );
    let table = lake.read("lake.hub.events", None);
    assert_eq!(rows(&table), events_in_postgres(&db, None));
    assert!(table["spec"].as_str().unwrap().contains("month"), "{table}");

    // Wrong credentials: one line, no password, nothing written.
    let (host, port) = server_address();
    let role = setting("EXPORT_EVENTS_TEST_SCRAM_ROLE");
    let wrong = format!("postgres://{role}:n0t-the-pw@{host}:{port}/{}", db.name);
    let dir = scratch();
    let run = Run::of(export_events(dir.path()).args([
        "-q",
        "--database-url",
        &db.url(),
        "--output",
        "iceberg:hub.other",
        "--catalog",
        &wrong,
        "--warehouse",
        "lake",
    ]))
    .failure(1, "opening catalog");
    assert!(!run.stderr.contains("n0t-the-pw"), "{run}");
    assert!(!dir.path().join("lake").join("hub").exists());
}

#[test]
fn rule_buckets_partition_a_table_by_rule_without_a_folder_per_name() {
    let db = TestDb::generated("ice_rule", 5_000);
    let lake = Lake::sqlite();
    lake.export(&db, "hub.by_rule", &["--partition-by", "rule"])
        .success();
    let table = lake.read("hub.by_rule", None);
    assert!(
        table["spec"].as_str().unwrap().contains("bucket"),
        "{table}"
    );
    assert_eq!(rows(&table), events_in_postgres(&db, None));
    let (runs, _) = lake.run_folders("hub.by_rule");
    let parts = files_in(&lake.warehouse.join("hub/by_rule/data").join(&runs[0]));
    assert!(
        !parts.is_empty() && parts.iter().all(|p| p.starts_with("rule_bucket=")),
        "{parts:?}"
    );
}

/// Every point a run can be stopped at, with SIGKILL and SIGINT: readers see no snapshot or the
/// whole one; the next run removes what a failed run wrote, then succeeds (or, after a commit,
/// refuses a second copy); no data file of a failed run stays.
#[test]
fn a_run_stopped_anywhere_leaves_no_snapshot_or_a_whole_one() {
    let db = TestDb::generated("ice_faults", 30_000);
    let all = events_in_postgres(&db, None);
    for point in ["export.streaming", "table.files-written", "table.committed"] {
        for sig in ["KILL", "INT"] {
            let label = format!("{point} with SIG{sig}");
            let lake = Lake::sqlite();
            let child = spawn_stopped_at(&mut lake.export_cmd(&db, "hub.events", &[]), point);
            signal(child.id(), sig);
            signal(child.id(), "CONT");
            let ended = finish(child);
            let committed = point == "table.committed";
            match sig {
                "KILL" => assert_eq!(ended.code, None, "{label}"),
                _ if committed => assert!(matches!(ended.code, Some(0 | 130)), "{label}\n{ended}"),
                _ => assert_eq!(ended.code, Some(130), "{label}\n{ended}"),
            }
            let table = lake.read("hub.events", None);
            match committed {
                true => assert_eq!(rows(&table), all, "{label}: the whole snapshot"),
                false => assert!(
                    table["rows"].as_array().is_none_or(Vec::is_empty),
                    "{label}: no snapshot\n{table}"
                ),
            }
            let next = lake.export(&db, "hub.events", &[]);
            match committed {
                true => {
                    next.failure(2, "already holds 30000 rows");
                }
                false => {
                    next.success();
                }
            }
            assert_eq!(rows(&lake.read("hub.events", None)), all, "{label}");
            let (runs, pending) = lake.run_folders("hub.events");
            assert_eq!(
                runs.len(),
                1,
                "{label}: only the committed run's files: {runs:?}"
            );
            assert!(pending.is_empty(), "{label}: {pending:?}");
        }
    }
}

#[test]
fn a_second_run_on_the_same_table_waits_or_is_refused() {
    let db = TestDb::sample("ice_overlap");
    let lake = Lake::sqlite();
    let first = spawn_stopped_at(
        &mut lake.export_cmd(&db, "hub.events", &[]),
        "export.streaming",
    );
    lake.export(&db, "hub.events", &[])
        .failure(1, "is in use by another export-events run");
    signal(first.id(), "CONT");
    finish(first).success();
    assert_eq!(rows(&lake.read("hub.events", None)).len(), 15);
}

#[test]
fn a_full_disk_under_the_warehouse_fails_in_one_line_and_commits_nothing() {
    let (small, _disk) = small_disk();
    let db = TestDb::generated("ice_full_disk", 200_000);
    let lake = Lake::sqlite();
    let warehouse = small.join("ice_lake");
    let run = Run::of(export_events(lake.dir.path()).args([
        "-q",
        "--database-url",
        &db.url(),
        "--output",
        "iceberg:hub.events",
        "--catalog",
        &lake.catalog,
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--compression",
        "none",
    ]));
    let run = run.failure(1, "no space left on device writing the table's data files");
    let table = Lake {
        warehouse: warehouse.clone(),
        ..lake
    };
    assert!(
        table.read("hub.events", None)["snapshot"].is_null(),
        "{run}"
    );
    let (runs, pending) = table.run_folders("hub.events");
    assert!(
        runs.is_empty() && pending.is_empty(),
        "{runs:?} {pending:?}"
    );
    std::fs::remove_dir_all(&warehouse).unwrap();
}

#[test]
fn flags_that_cannot_apply_to_a_table_are_refused_before_anything_is_read() {
    let dir = scratch();
    let base = [
        "--database-url",
        "postgres://nobody@127.0.0.1:1/none",
        "--output",
        "iceberg:hub.events",
        "--catalog",
        "sqlite:lake.db",
        "--warehouse",
        "lake",
    ];
    for (extra, says) in [
        (&["--format", "csv,parquet"][..], "--format is about files"),
        (&["--keep", "2"][..], "--keep"),
        (
            &["--incremental", "--state", "s.json"][..],
            "--state is about files",
        ),
    ] {
        Run::of(export_events(dir.path()).args(base).args(extra)).failure(2, says);
    }
    Run::of(export_events(dir.path()).args(["--output", "iceberg:hub.events"]))
        .failure(2, "needs --catalog");
    Run::of(export_events(dir.path()).args(["-o", "x.csv", "--catalog", "sqlite:lake.db"]))
        .failure(2, "use them with --output iceberg:");
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

/// Each version once: the rows pyiceberg reads, as `(id, version)` pairs, and the newest version
/// of each event as `events_in_postgres` gives it (newest first).
fn versions(table: &serde_json::Value) -> (Vec<(i64, i64)>, Vec<EventRow>) {
    let all = table["rows"].as_array().unwrap();
    let pairs = all
        .iter()
        .map(|r| (r[0].as_i64().unwrap(), r[6].as_i64().unwrap()))
        .collect();
    let mut newest: std::collections::BTreeMap<i64, (i64, EventRow)> = Default::default();
    for (row, raw) in rows(table).into_iter().zip(all) {
        let version = raw[6].as_i64().unwrap();
        if newest.get(&row.0).is_none_or(|(v, _)| version > *v) {
            newest.insert(row.0, (version, row));
        }
    }
    let mut latest: Vec<EventRow> = newest.into_values().map(|(_, r)| r).collect();
    latest.sort_by_key(|r| std::cmp::Reverse((r.1, r.0)));
    (pairs, latest)
}

#[test]
fn incremental_runs_append_each_change_once_with_the_cursor_in_the_table() {
    let db = TestDb::generated("ice_incr", 3_000);
    db.settle();
    let lake = Lake::sqlite();
    let first = lake
        .export(&db, "hub.versions", &["--incremental"])
        .success();
    assert!(
        first
            .stdout
            .starts_with("Exported 3000 events to iceberg:hub.versions"),
        "{first}"
    );
    db.sql("UPDATE events SET acknowledged = NOT acknowledged WHERE id % 10 = 0");
    db.settle();
    let second = lake
        .export(&db, "hub.versions", &["--incremental"])
        .success();
    assert!(second.stdout.starts_with("Exported 300 events"), "{second}");
    let none = lake
        .export(&db, "hub.versions", &["--incremental"])
        .success();
    assert_eq!(
        none.stdout,
        "Exported 0 events to iceberg:hub.versions (nothing to add)\n"
    );

    let table = lake.read("hub.versions", None);
    assert_eq!(table["snapshots"], 2, "no snapshot for nothing new");
    assert!(
        table["summary"]["export-events.horizon"].is_string(),
        "{table}"
    );
    let (pairs, latest) = versions(&table);
    assert_eq!(pairs.len(), 3_300, "each change once");
    assert_eq!(
        latest,
        events_in_postgres(&db, None),
        "the newest versions are the table"
    );

    // The README's query for the current table, in DuckDB.
    let metadata = table["metadata_location"].as_str().unwrap();
    let duck = duckdb::Connection::open_in_memory().unwrap();
    duck.execute_batch("LOAD iceberg").unwrap();
    let acknowledged: i64 = duck
        .query_row(
            &format!(
                "SELECT count(*) FILTER (WHERE acknowledged) FROM (SELECT * FROM \
                 iceberg_scan('{metadata}') QUALIFY row_number() OVER (PARTITION BY id \
                 ORDER BY version DESC) = 1)"
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        acknowledged.to_string(),
        db.value("SELECT count(*) FROM events WHERE acknowledged")
    );

    // A table a full export wrote has no cursor: incremental runs are refused there.
    lake.export(&db, "hub.full", &[]).success();
    lake.export(&db, "hub.full", &["--incremental"])
        .failure(2, "give the incremental runs a table of their own");
}

/// Incremental runs into `hub.versions` of `rows` generated events, with another engine's work
/// on the table (`work`) between the first run and the second: the second exports the tenth of
/// the events changed meanwhile, each change is in the table once, and the newest versions are
/// PostgreSQL's rows, every value in its column.
fn another_engine_between_two_runs(
    label: &str,
    rows: usize,
    work: impl FnOnce(&Lake),
) -> (TestDb, Lake) {
    let db = TestDb::generated(label, rows as u64);
    db.settle();
    let lake = Lake::sqlite();
    lake.export(&db, "hub.versions", &["--incremental"])
        .success();
    work(&lake);
    db.sql("UPDATE events SET acknowledged = NOT acknowledged WHERE id % 10 = 0");
    db.settle();
    let second = lake
        .export(&db, "hub.versions", &["--incremental"])
        .success();
    let changed = format!("Exported {} events", rows / 10);
    assert!(second.stdout.starts_with(&changed), "{second}");
    let table = lake.read("hub.versions", None);
    let (pairs, latest) = versions(&table);
    assert_eq!(pairs.len(), rows + rows / 10, "each change once");
    assert_eq!(
        latest,
        events_in_postgres(&db, None),
        "every value in its column"
    );
    (db, lake)
}

/// Other engines maintain lake tables: a column order changed and a column added are honoured
/// (values by name, nulls in the new column), and what cannot be honoured is refused in one line
/// before anything is read.
#[test]
fn a_table_another_engine_evolved_gets_each_value_in_its_column_or_a_refusal() {
    let (db, lake) = another_engine_between_two_runs("ice_evolve", 2_000, |lake| {
        lake.pyiceberg(
            "hub.versions",
            "with t.update_schema() as u:\n    \
             u.move_before('trigger_device_id', 'trigger_telemetry_id')\n    \
             u.move_first('acknowledged')\n    \
             u.add_column('note', StringType())",
        );
    });
    let notes = lake.pyiceberg(
        "hub.versions",
        "a = t.scan().to_arrow()\nprint(a.num_rows, a['note'].null_count)",
    );
    assert_eq!(
        notes.trim(),
        "2200 2200",
        "the added column is null in our rows"
    );

    // What export-events cannot honour stops the next run before it reads, and commits nothing.
    let refusals = [
        (
            "u.delete_column('rule')",
            "has no column rule (dropped or renamed since",
        ),
        (
            "u.rename_column('trigger_device_id', 'device')",
            "has no column trigger_device_id",
        ),
        (
            "u.add_column('must', StringType(), required=True)",
            "has a required column must",
        ),
        (
            "u.update_column('trigger_telemetry_id', required=True)",
            "has column trigger_telemetry_id as required",
        ),
    ];
    for (index, (change, refusal)) in refusals.into_iter().enumerate() {
        let name = format!("hub.refused_{index}");
        lake.export(&db, &name, &["--incremental"]).success();
        lake.pyiceberg(
            &name,
            &format!("with t.update_schema(allow_incompatible_changes=True) as u:\n    {change}"),
        );
        db.sql(&format!(
            "UPDATE events SET acknowledged = NOT acknowledged WHERE id % 7 = {index}"
        ));
        db.settle();
        let snapshots = || lake.pyiceberg(&name, "print(len(t.metadata.snapshots))");
        let before = snapshots();
        lake.export(&db, &name, &["--incremental"])
            .failure(2, refusal);
        assert_eq!(snapshots(), before, "{change}: nothing committed");
    }
}

/// Another engine's maintenance: a compaction (pyiceberg rewrites the table's rows in one
/// overwrite) and then the expiry of every older snapshot, the ones whose summaries held the
/// cursor. The cursor is also in the table's properties, so the next run goes on from it: each
/// change once, nothing exported again.
#[test]
fn compaction_and_snapshot_expiry_by_another_engine_keep_the_cursor() {
    another_engine_between_two_runs("ice_maintained", 1_000, |lake| {
        lake.compact_and_expire("hub.versions")
    });
}

/// Incremental runs stopped at every point, with both signals: across all runs each change is
/// in the table once, and the newest versions are the table.
#[test]
fn incremental_runs_stopped_anywhere_hold_each_change_once() {
    let db = TestDb::generated("ice_incr_faults", 2_000);
    db.settle();
    let lake = Lake::sqlite();
    lake.export(&db, "hub.versions", &["--incremental"])
        .success();
    let mut changes = 2_000;
    let mut case = 0;
    for point in ["export.streaming", "table.files-written", "table.committed"] {
        for sig in ["KILL", "INT"] {
            let label = format!("{point} with SIG{sig}");
            case += 1;
            db.sql(&format!(
                "UPDATE events SET acknowledged = NOT acknowledged WHERE id % 50 = {case}"
            ));
            db.settle();
            let changed: usize = db
                .value(&format!(
                    "SELECT count(*) FROM events WHERE id % 50 = {case}"
                ))
                .parse()
                .unwrap();
            changes += changed;
            let child = spawn_stopped_at(
                &mut lake.export_cmd(&db, "hub.versions", &["--incremental"]),
                point,
            );
            signal(child.id(), sig);
            signal(child.id(), "CONT");
            finish(child);
            lake.export(&db, "hub.versions", &["--incremental"])
                .success();
            let (pairs, latest) = versions(&lake.read("hub.versions", None));
            assert_eq!(pairs.len(), changes, "{label}: each change once");
            assert_eq!(latest, events_in_postgres(&db, None), "{label}");
            let (_, pending) = lake.run_folders("hub.versions");
            assert!(pending.is_empty(), "{label}: {pending:?}");
        }
    }
}

#[test]
fn a_hub_with_naive_timestamps_gets_an_iceberg_timestamp_without_zone() {
    let db = TestDb::sample("ice_naive");
    db.use_tz_false();
    let lake = Lake::sqlite();
    lake.export(&db, "hub.naive", &[]).success();
    let table = lake.read("hub.naive", None);
    assert_eq!(rows(&table), events_in_postgres(&db, None));
    let metadata = std::fs::read_to_string(
        table["metadata_location"]
            .as_str()
            .unwrap()
            .trim_start_matches("file:"),
    )
    .unwrap();
    assert!(
        metadata.contains("\"type\":\"timestamp\"") && !metadata.contains("timestamptz"),
        "{metadata}"
    );
}

#[test]
fn a_commit_by_another_writer_meanwhile_stops_the_run_and_commits_nothing() {
    let db = TestDb::sample("ice_conflict");
    let lake = Lake::sqlite();
    let child = spawn_stopped_at(
        &mut lake.export_cmd(&db, "hub.events", &[]),
        "table.files-written",
    );
    // The table now has a snapshot this run did not start from.
    lake.append_one("hub.events");
    signal(child.id(), "CONT");
    finish(child).failure(1, "was changed by another writer while this run exported");
    let table = lake.read("hub.events", None);
    assert_eq!(table["snapshots"], 1, "only the other writer's: {table}");
    assert_eq!(rows(&table).len(), 1);
    // The failed run's files are the next run's to remove (it then refuses the full export).
    lake.export(&db, "hub.events", &[])
        .failure(2, "already holds 1 rows");
    let (runs, pending) = lake.run_folders("hub.events");
    assert!(
        runs.iter().all(|r| !r.starts_with("run-")) && pending.is_empty(),
        "{runs:?} {pending:?}"
    );
}

#[test]
fn a_table_in_s3_is_whole_whatever_stops_a_run_and_pyiceberg_reads_it_back() {
    let db = TestDb::generated("ice_s3", 5_000);
    db.settle();
    let lake = Lake::s3();
    // Killed once its data files are uploaded, before the commit: readers see no snapshot.
    let mut first = lake.export_cmd(&db, "hub.versions", &["--incremental"]);
    let child = spawn_stopped_at(&mut first, "table.files-written");
    let uploaded = lake.objects("hub/versions/data/");
    assert!(!uploaded.is_empty(), "the data files are in the bucket");
    signal(child.id(), "KILL");
    assert_eq!(finish(child).code, None);
    assert_eq!(
        lake.read("hub.versions", None)["snapshot"],
        serde_json::Value::Null
    );

    // The next run removes them and commits its own, whole.
    let run = lake
        .export(&db, "hub.versions", &["--incremental"])
        .success();
    assert!(run.stdout.starts_with("Exported 5000 events"), "{run}");
    let table = lake.read("hub.versions", None);
    assert_eq!(table["snapshots"], 1, "{table}");
    assert!(table["metadata_location"]
        .as_str()
        .unwrap()
        .starts_with("s3://"));
    assert_eq!(versions(&table).1, events_in_postgres(&db, None));
    lake.verify("hub.versions").success();
    // DuckDB's own reader, from the bucket (httpfs, path-style requests to the test server).
    let duck = duckdb::Connection::open_in_memory().unwrap();
    duck.execute_batch("LOAD httpfs; LOAD iceberg").unwrap();
    let endpoint = setting("EXPORT_EVENTS_TEST_S3_ENDPOINT");
    duck.execute_batch(&format!(
        "CREATE SECRET (TYPE s3, KEY_ID '{}', SECRET '{}', ENDPOINT '{}', URL_STYLE 'path', \
         USE_SSL false, REGION 'garage')",
        setting("EXPORT_EVENTS_TEST_S3_KEY"),
        setting("EXPORT_EVENTS_TEST_S3_SECRET"),
        endpoint.trim_start_matches("http://")
    ))
    .unwrap();
    let metadata = table["metadata_location"].as_str().unwrap();
    let (count, ids) = duck_count_and_sum(&duck, metadata);
    assert_eq!(count, 5_000);
    assert_eq!(ids.to_string(), db.value("SELECT sum(id) FROM events"));
    let data = lake.objects("hub/versions/data/");
    assert_eq!(
        data.len() as u64,
        table["files"].as_u64().unwrap(),
        "only the committed run's files are left: {data:?} (killed run's: {uploaded:?})"
    );

    // A full export beside it, and a --since filter that plans only the matching partitions.
    lake.export(&db, "hub.events", &[]).success();
    let since = timestamp_at(&db, 500);
    let recent = lake.read("hub.events", Some(&since));
    let (planned, files) = (recent["planned"].as_u64(), recent["files"].as_u64());
    assert!(planned < files, "pruned: {planned:?} of {files:?} files");
    assert_eq!(rows(&recent), events_in_postgres(&db, Some(&since)));

    // Wrong credentials: one line naming the bucket, before anything is read; no secret shown.
    let mut wrong = lake.export_cmd(&db, "hub.other", &[]);
    wrong.env("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789");
    let wrong = Run::of(&mut wrong);
    assert_ne!(wrong.code, Some(0), "{wrong}");
    assert_eq!(wrong.stderr.trim().lines().count(), 1, "{wrong}");
    assert!(wrong.stderr.contains("s3://"), "{wrong}");
    assert!(!wrong.stderr.contains("not-the-secret"), "{wrong}");
}

#[test]
fn a_rest_catalog_names_the_table_that_pyiceberg_reads_through_it() {
    let db = TestDb::generated("ice_rest", 3_000);
    db.settle();
    let lake = Lake::rest();
    let table = "ice_rest.events_versions";
    let first = lake.export(&db, table, &["--incremental"]).success();
    assert!(
        first.stdout.starts_with(&format!(
            "Exported 3000 events to iceberg:{table} (snapshot "
        )),
        "{first}"
    );
    db.sql("UPDATE events SET acknowledged = NOT acknowledged WHERE id % 10 = 0");
    db.settle();
    let second = lake.export(&db, table, &["--incremental"]).success();
    assert!(second.stdout.starts_with("Exported 300 events"), "{second}");

    // pyiceberg, through the same REST catalog.
    let read = lake.read(table, None);
    assert_eq!(read["snapshots"], 2, "{read}");
    assert_eq!(versions(&read).1, events_in_postgres(&db, None));
    lake.verify(table).success();

    // A wrong token: one line, nothing written, the token not shown.
    let mut wrong = lake.export_cmd(&db, "ice_rest.other", &[]);
    wrong.env("ICEBERG_REST_TOKEN", "rb_not-the-token-0123456789");
    let wrong = Run::of(&mut wrong);
    assert_eq!(wrong.code, Some(1), "{wrong}");
    assert_eq!(wrong.stderr.trim().lines().count(), 1, "{wrong}");
    assert!(!wrong.stderr.contains("not-the-token"), "{wrong}");
    assert!(
        wrong.stderr.contains("401"),
        "the catalog's refusal: {wrong}"
    );
    assert_eq!(lake.read("ice_rest.other", None)["exists"], false);
}

#[test]
fn a_catalog_gone_before_the_commit_fails_in_one_line_and_the_next_run_commits_whole() {
    let db = TestDb::generated("ice_gone", 3_000);
    let catalog = TestDb::empty("ice_gone_catalog");
    let lake = Lake::postgres(&catalog);
    let mut first = lake.export_cmd(&db, "hub.events", &[]);
    let child = spawn_stopped_at(&mut first, "table.files-written");
    // The catalog's database goes away while the run holds its data files: no connection is
    // allowed, and the run's are ended.
    let name = &catalog.name;
    db.sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
    db.sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ));
    signal(child.id(), "CONT");
    let ended = finish(child);
    assert_eq!(ended.code, Some(1), "{ended}");
    assert_eq!(ended.stderr.trim().lines().count(), 1, "{ended}");
    assert!(ended.stderr.contains("hub.events"), "{ended}");

    // Back: no snapshot of the failed run; the next run settles its files and commits whole.
    db.sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    assert!(lake.read("hub.events", None)["snapshot"].is_null());
    lake.export(&db, "hub.events", &[]).success();
    let table = lake.read("hub.events", None);
    assert_eq!(table["snapshots"], 1, "{table}");
    assert_eq!(rows(&table), events_in_postgres(&db, None));
    let (runs, pending) = lake.run_folders("hub.events");
    assert_eq!(runs.len(), 1, "only the committed run's folder: {runs:?}");
    assert!(pending.is_empty(), "{pending:?}");
    lake.verify("hub.events").success();
}

#[test]
fn the_s3_server_gone_before_the_commit_fails_in_one_line_and_the_next_run_commits_whole() {
    let db = TestDb::generated("ice_s3_gone", 3_000);
    let s3 = OwnS3::start();
    let lake = Lake::s3_on(&|name| s3.get(name));
    let mut first = lake.export_cmd(&db, "hub.events", &[]);
    first.env("AWS_MAX_ATTEMPTS", "2");
    let child = spawn_stopped_at(&mut first, "table.files-written");
    assert!(!lake.objects("hub/events/data/").is_empty(), "uploaded");
    s3.kill();
    signal(child.id(), "CONT");
    let ended = finish(child);
    assert_eq!(ended.code, Some(1), "{ended}");
    assert_eq!(ended.stderr.trim().lines().count(), 1, "{ended}");
    assert!(ended.stderr.contains("hub.events"), "{ended}");

    s3.restart();
    assert!(lake.read("hub.events", None)["snapshot"].is_null());
    lake.export(&db, "hub.events", &[]).success();
    let table = lake.read("hub.events", None);
    assert_eq!(table["snapshots"], 1, "{table}");
    assert_eq!(rows(&table), events_in_postgres(&db, None));
    assert_eq!(
        lake.objects("hub/events/data/").len() as u64,
        table["files"].as_u64().unwrap(),
        "only the committed run's data files are left"
    );
    lake.verify("hub.events").success();
}

/// DuckDB's iceberg extension's count of the table at `metadata`, and the sum of its ids.
fn duck_count_and_sum(duck: &duckdb::Connection, metadata: &str) -> (i64, i64) {
    duck.query_row(
        &format!("SELECT count(*), sum(id)::BIGINT FROM iceberg_scan('{metadata}')"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}
