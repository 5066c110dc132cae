//! The change feed against a PostgreSQL with wal_level = logical (the throwaway cluster of
//! `scripts/test`): an initial export at the slot's LSN, then inserts, acknowledged flips, deletes, a rule
//! rename, a rolled-back transaction and a large transaction; replaying the change files on the
//! initial export must give the final table. Also under SIGKILL, and the slot's lifecycle.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::feed::*;
use common::*;

fn changes(dir: &Path, slot: &Slot, args: &[&str]) -> Run {
    Run::of(&mut slot.changes(dir, args))
}

#[test]
fn replaying_change_files_on_the_initial_export_gives_the_table() {
    let db = TestDb::sample("chg_replay");
    let dir = scratch();
    let slot = Slot::create(&db, dir.path());
    let mut rows = table(dir.path(), &db, "initial.csv");
    for sql in WRITES {
        db.sql(sql);
    }
    let run = changes(dir.path(), &slot, &["--max-changes", "1000"]).success();
    assert!(run.stdout.starts_with("Wrote "), "{run}");
    let folder = dir.path().join("exports/changes");
    assert!(files_in(&folder).len() > 1, "--max-changes splits the feed");
    let seen = replay(&folder, &mut rows);
    assert!(
        rows == table(dir.path(), &db, "final.csv"),
        "replay gives the table"
    );
    assert!(seen.iter().any(|(_, op, _)| op == "delete"));
    let ids: BTreeSet<i64> = seen.iter().map(|s| s.2).collect();
    assert!(ids.len() > 5000, "the large transaction came");
    // Nothing new: no file, and the slot has been confirmed up to the end.
    let again = changes(dir.path(), &slot, &[]).success();
    assert_eq!(
        again.stdout.lines().next().unwrap(),
        format!("Wrote 0 changes to {}", folder.display())
    );
    let status = changes(dir.path(), &slot, &["--status"]).success();
    assert!(status.stdout.contains("bytes of WAL retained"), "{status}");
}

#[test]
fn a_feed_killed_at_each_moment_rewrites_the_same_files_and_loses_nothing() {
    let db = TestDb::sample("chg_kill");
    let dir = scratch();
    let slot = Slot::create(&db, dir.path());
    let mut rows = table(dir.path(), &db, "initial.csv");
    for sql in WRITES {
        db.sql(sql);
    }
    // Mid-read (a partial file), after its file is durable but before the slot is confirmed, and
    // after confirming with more batches to go.
    for (i, point) in feed_points("files").iter().cycle().take(12).enumerate() {
        let child = spawn_stopped_at(
            &mut slot.changes(dir.path(), &["--max-changes", "500", "-q"]),
            point,
        );
        signal(child.id(), "KILL");
        assert_eq!(finish(child).code, None, "killed at {point}");
        if i % 3 == 0 {
            db.sql("UPDATE events SET acknowledged = NOT acknowledged WHERE id % 13 = 0");
        }
    }
    changes(dir.path(), &slot, &["-q"]).success();
    let folder = dir.path().join("exports/changes");
    let seen = replay(&folder, &mut rows);
    assert!(
        rows == table(dir.path(), &db, "final.csv"),
        "replay gives the table"
    );
    let unique: BTreeSet<&(String, String, i64)> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no change written twice");
    let others: Vec<String> = files_in(&folder)
        .into_iter()
        .filter(|n| !n.ends_with(".csv") && !n.ends_with(".slot.json"))
        .collect();
    assert_eq!(
        others,
        [".export-events-changes.json"],
        "no partial or lock file left, only the folder's owner"
    );
}

#[test]
fn overlapping_feed_runs_are_refused_and_together_lose_and_repeat_nothing() {
    let db = TestDb::sample("chg_overlap");
    let dir = scratch();
    let slot = Slot::create(&db, dir.path());
    let mut rows = table(dir.path(), &db, "initial.csv");
    db.sql(WRITES[0]);
    // Forced: one run holds the slot (its file written, not yet confirmed) while another starts.
    let first = spawn_stopped_at(&mut slot.changes(dir.path(), &["-q"]), "changes.written");
    let refused = changes(dir.path(), &slot, &["-q"]).failure(1, "slot ");
    let holder = format!("is in use by another export-events run (pid {}", first.id());
    assert!(refused.stderr.contains(&holder), "{refused}");
    signal(first.id(), "CONT");
    finish(first).success();
    // Then three runners loop while a writer inserts, flips and deletes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runners: Vec<_> = (0..3)
        .map(|_| {
            let (dir, url, name) = (dir.path().to_owned(), db.url(), slot.name.clone());
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut outcomes = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let run = Run::of(export_events(&dir).args([
                        "changes",
                        "--slot",
                        &name,
                        "--database-url",
                        &url,
                        "-q",
                        "--max-changes",
                        "40",
                    ]));
                    if run.code == Some(0) {
                        outcomes.0 += 1;
                    } else {
                        run.failure(1, "is in use by another export-events run");
                        outcomes.1 += 1;
                    }
                }
                outcomes
            })
        })
        .collect();
    for i in 0..60 {
        db.sql(match i % 3 {
            0 => {
                "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
                  SELECT now() - i * interval '1 minute', now(), 1 + i % 10, false \
                  FROM generate_series(1, 25) AS i"
            }
            1 => "UPDATE events SET acknowledged = NOT acknowledged WHERE id % 5 = 0",
            _ => "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY random() LIMIT 3)",
        });
        std::thread::sleep(Duration::from_millis(15));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let ran: usize = runners.into_iter().map(|r| r.join().unwrap().0).sum();
    assert!(ran > 0, "runs succeeded meanwhile");
    changes(dir.path(), &slot, &["-q"]).success();
    let seen = replay(&dir.path().join("exports/changes"), &mut rows);
    assert!(
        rows == table(dir.path(), &db, "final.csv"),
        "replay gives the table"
    );
    let unique: BTreeSet<&(String, String, i64)> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no change written twice");
}

#[test]
fn a_refused_initial_export_leaves_no_slot_and_no_publication() {
    let db = TestDb::sample("chg_refused");
    let dir = scratch();
    // Not created through `Slot::create`: dropped at the end all the same, should one appear.
    let slot = Slot {
        db: &db,
        name: db.name.to_lowercase(),
    };
    let on_server = || {
        db.value(&format!(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{0}') \
             + (SELECT count(*) FROM pg_publication WHERE pubname = '{0}')",
            slot.name
        ))
    };
    // Refused by its plan: the initial export's folder does not exist.
    let create = ["--create-slot", "--initial-export"];
    changes(
        dir.path(),
        &slot,
        &[&create[..], &["missing/initial.csv"]].concat(),
    )
    .failure(2, "does not exist");
    assert_eq!(on_server(), "0", "no slot, no publication");
    // Refused once its output is checked: a table that already holds rows.
    let lake = common::lake::Lake::sqlite();
    lake.export(&db, "hub.events", &[]).success();
    let into_table = [&create[..], &["iceberg:hub.events"]].concat();
    Run::of(&mut lake.changes_cmd(&slot, "hub.changes", &into_table))
        .failure(2, "already holds 15 rows");
    assert_eq!(on_server(), "0", "no slot, no publication");
    // Taken: the slot and its publication, and the export in its snapshot.
    let run = changes(dir.path(), &slot, &[&create[..], &["initial.csv"]].concat()).success();
    assert!(run.stdout.contains("taken in the slot's snapshot"), "{run}");
    assert_eq!(on_server(), "2");
}

#[test]
fn slot_lifecycle_and_clear_errors() {
    let db = TestDb::sample("chg_life");
    let dir = scratch();
    let missing = Slot {
        db: &db,
        name: "ee_no_such_slot".into(),
    };
    changes(dir.path(), &missing, &[]).failure(1, "create it with --create-slot");
    Run::of(export_events(dir.path()).args(["changes", "--slot", "Bad-Name"]))
        .failure(2, "lower-case letters");
    let slot = Slot::create(&db, dir.path());
    changes(dir.path(), &slot, &["--create-slot"]).failure(1, "already exists");
    // A role that may read the tables but not use replication slots.
    let role = format!("ee_norepl_{}", std::process::id());
    db.sql(&format!(
        "CREATE ROLE {role} LOGIN; GRANT SELECT ON events, rules TO {role}"
    ));
    let url = db.url().replace("postgres@", &format!("{role}@"));
    let run = Run::of(export_events(dir.path()).args([
        "changes",
        "--slot",
        &slot.name,
        "--database-url",
        &url,
    ]));
    db.sql(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));
    run.failure(1, "ALTER ROLE <role> REPLICATION");
    let dropped = changes(dir.path(), &slot, &["--drop-slot"]).success();
    assert!(dropped.stdout.starts_with("Dropped slot"), "{dropped}");
    changes(dir.path(), &slot, &["--status"]).failure(1, "does not exist");
}

#[test]
fn follow_writes_as_changes_arrive_and_stops_cleanly_on_sigterm() {
    let db = TestDb::sample("chg_follow");
    let dir = scratch();
    let slot = Slot::create(&db, dir.path());
    let child = export_events(dir.path())
        .args(["changes", "--slot", &slot.name, "--database-url", &db.url()])
        .args(["--follow", "--flush-interval", "1", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let folder = dir.path().join("exports/changes");
    for round in 0..3 {
        db.sql(&format!(
            "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
             SELECT now(), now(), 1, false FROM generate_series(1, {})",
            round + 1
        ));
        std::thread::sleep(Duration::from_millis(1_300));
    }
    let written = files_in(&folder).len();
    assert!(written >= 2, "a file per flush interval, got {written}");
    db.sql("INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) VALUES (now(), now(), 2, true)");
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("Wrote 7 changes to "), "{stdout}");
    let mut rows = BTreeMap::new();
    let seen = replay(&folder, &mut rows);
    assert_eq!(
        seen.len(),
        7,
        "every insert once, the last one flushed at the stop"
    );
}

#[test]
fn parquet_change_files_are_typed() {
    use arrow::array::{Array as _, AsArray as _};
    use arrow::datatypes::{DataType, Int64Type};

    let db = TestDb::sample("chg_parquet");
    let dir = scratch();
    let slot = Slot::create(&db, dir.path());
    db.sql(
        "INSERT INTO events (id, \"timestamp\", created_at, rule_id, acknowledged) \
         VALUES (100, '2026-05-01 10:00:00.123456+00', now(), 1, true), \
                (101, '2026-05-01 10:00:01+00', now(), 2, false); \
         DELETE FROM events WHERE id = 100",
    );
    changes(dir.path(), &slot, &["--format", "parquet", "-q"]).success();
    let folder = dir.path().join("exports/changes");
    let names: Vec<String> = files_in(&folder)
        .into_iter()
        .filter(|n| n.starts_with("changes_"))
        .collect();
    assert!(
        names.len() == 1 && names[0].ends_with(".parquet"),
        "{names:?}"
    );
    let file = std::fs::File::open(folder.join(&names[0])).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let batch = &batches[0];
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "lsn",
            "commit_time",
            "xid",
            "op",
            "id",
            "timestamp",
            "rule",
            "acknowledged",
            "trigger_telemetry_id",
            "trigger_device_id"
        ]
    );
    assert!(
        matches!(schema.field(5).data_type(), DataType::Timestamp(_, Some(tz)) if &**tz == "UTC")
    );
    let ops: Vec<&str> = batch
        .column(3)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(ops, ["insert", "insert", "delete"]);
    let ids: Vec<i64> = batch
        .column(4)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    assert_eq!(ids, [100, 101, 100]);
    let stamps = batch
        .column(5)
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    assert_eq!(stamps.value(0), 1_777_629_600_123_456);
    assert!(stamps.is_null(2), "a delete carries the id only");
}

#[test]
fn with_replica_identity_full_a_delete_carries_the_whole_row() {
    let db = TestDb::sample("chg_full");
    let dir = scratch();
    db.sql("ALTER TABLE events REPLICA IDENTITY FULL");
    let slot = Slot::create(&db, dir.path());
    let before = table(dir.path(), &db, "before.csv");
    db.sql("DELETE FROM events WHERE id = 3");
    changes(dir.path(), &slot, &["-q"]).success();
    let folder = dir.path().join("exports/changes");
    let name = files_in(&folder)
        .into_iter()
        .find(|n| n.ends_with(".csv"))
        .unwrap();
    let mut reader = csv::Reader::from_path(folder.join(name)).unwrap();
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][3], "delete");
    assert_eq!(
        rows[0][4..],
        before[&3][..],
        "the deleted row as the export wrote it"
    );
}

/// What a feed meets after its server was restored from a backup or failed over: a slot behind
/// what the destination holds, and a destination ending past the server's WAL. Taken at its
/// word, the run would remove delivered change files as unconfirmed; it stops in one line, and
/// nothing is removed and the slot does not move.
#[test]
fn a_destination_ahead_of_the_server_is_refused_and_nothing_is_removed() {
    let db = TestDb::sample("chg_ahead");
    let dir = scratch();
    let slot = Slot::create(&db, dir.path());
    db.sql(WRITES[0]);
    changes(dir.path(), &slot, &["-q"]).success();
    let folder = dir.path().join("exports/changes");
    let confirmed = slot.confirmed();
    let (hi, lo) = confirmed.split_once('/').unwrap();
    let at = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    // Changes delivered from the slot's position on, up to a point this server never reached.
    let delivered = format!("changes_{at:016X}_{:016X}.csv", at + (1 << 40));
    std::fs::write(folder.join(&delivered), "lsn\n").unwrap();
    let before = files_in(&folder);
    db.sql(WRITES[1]);
    changes(dir.path(), &slot, &["-q"]).failure(2, "past this server's WAL position");
    assert_eq!(files_in(&folder), before, "nothing removed or added");
    assert_eq!(slot.confirmed(), confirmed, "the slot did not move");
}

/// Timestamps PostgreSQL keeps and chrono does not (BC, and years past 262143) are changes
/// like any other: the feed writes them, as the export does, instead of stopping for good.
#[test]
fn timestamps_before_christ_and_past_chronos_years_are_fed() {
    let db = TestDb::sample("chg_far_times");
    let dir = scratch();
    let slot = Slot::create(&db, dir.path());
    db.sql(
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) VALUES \
         ('0044-03-15 12:00:00+00 BC', now(), 1, false), \
         ('262144-06-15 12:34:56.789012+00', now(), 2, true)",
    );
    let run = changes(dir.path(), &slot, &["--format", "csv,parquet"]).success();
    assert!(run.stdout.starts_with("Wrote 2 changes"), "{run}");
    let folder = dir.path().join("exports/changes");
    let parquet = files_in(&folder)
        .into_iter()
        .find(|f| f.ends_with(".parquet"))
        .unwrap();
    let batch = parquet_values(&folder.join(parquet));
    let stamps = batch
        .column_by_name("timestamp")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
        .unwrap();
    let mut values: Vec<i64> = stamps.values().to_vec();
    values.sort();
    assert_eq!(values, [-63_517_780_800_000_000, 8_210_312_800_496_789_012]);
}
