//! The change feed into Apache Iceberg tables: each batch one snapshot, the slot confirmed only
//! after the commit, each change in the table once whatever stops a run (SIGKILL and SIGINT at
//! every point a feed run has). Read back by pyiceberg, and compared with the change files a
//! second slot on the same database writes (the same transactions, so the same commit LSNs);
//! replaying the table on the initial export, itself a table (both in the S3 test server),
//! gives the Hub's table.

mod common;

use std::collections::BTreeMap;

use common::feed::*;
use common::lake::Lake;
use common::*;

#[test]
fn a_feed_into_a_table_stopped_anywhere_holds_each_change_once() {
    let db = TestDb::sample("icc_faults");
    let lake = Lake::sqlite();
    let dir = lake.dir.path();
    let feed = Slot::created(&db, "icc_faults", |s| {
        Run::of(&mut lake.changes_cmd(s, "hub.changes", &["--create-slot"]))
    });
    // The reference: a second slot from the same moment, into change files.
    let reference = Slot::created(&db, "icc_faults_ref", |s| {
        Run::of(&mut s.changes(dir, &["--create-slot", "--output", "ref"]))
    });
    // Not the rule rename: the feed expands it into updates of the rule's events as they are
    // when it decodes it, so two slots read at different times differ there by design.
    for sql in WRITES.iter().filter(|sql| !sql.starts_with("UPDATE rules")) {
        db.sql(sql);
    }
    // Mid-read, data files written but not committed, committed but not confirmed, and after.
    for point in feed_points("table") {
        for sig in ["KILL", "INT"] {
            // Two more transactions each time: every run has batches to stop in.
            two_more_transactions(&db);
            let args = ["--max-changes", "100", "-q"];
            signalled_at(
                &mut lake.changes_cmd(&feed, "hub.changes", &args),
                point,
                sig,
            );
        }
    }
    let last = Run::of(&mut lake.changes_cmd(&feed, "hub.changes", &["-q"])).success();
    assert!(
        last.stdout.starts_with("Wrote ") && last.stdout.contains("iceberg:hub.changes"),
        "{last}"
    );
    Run::of(&mut reference.changes(dir, &["-q", "--output", "ref"])).success();

    let table = lake.read("hub.changes", None);
    let expected = file_changes(&dir.join("ref"));
    assert!(
        expected.len() > 5_000,
        "the writes came: {}",
        expected.len()
    );
    let found = table_changes(&table);
    let missing: Vec<&Change> = expected
        .iter()
        .filter(|c| !found.contains(c))
        .take(5)
        .collect();
    let extra: Vec<&Change> = found
        .iter()
        .filter(|c| !expected.contains(c))
        .take(5)
        .collect();
    assert!(
        found == expected,
        "the table holds each change once, as the reference files do ({} rows, {} expected): \
         missing {missing:?}, extra {extra:?}, snapshots {}",
        found.len(),
        expected.len(),
        table["summaries"]
    );
    let held = lsn(table["summary"]["export-events.lsn-to"].as_str().unwrap());
    assert!(
        held <= lsn(&feed.confirmed()),
        "the slot is confirmed up to what the table holds, or past it when idle"
    );
    // Every data folder left is a committed batch's; no record of a pending one is left.
    let (folders, pending) = lake.run_folders("hub.changes");
    assert!(pending.is_empty(), "{pending:?}");
    assert_eq!(
        folders.len() as u64,
        table["snapshots"].as_u64().unwrap(),
        "one folder per snapshot, none left by a stopped batch: {folders:?}"
    );
}

#[test]
fn the_initial_export_and_the_change_table_replay_to_the_hubs_table() {
    let db = TestDb::sample("icc_replay");
    // In the S3 server: the feed, the initial export and verify compose with an S3 warehouse.
    let lake = Lake::s3();
    let initial = ["--create-slot", "--initial-export", "iceberg:hub.events"];
    let feed = Slot::created(&db, "icc_replay", |s| {
        Run::of(&mut lake.changes_cmd(s, "hub.changes", &initial))
    });
    for sql in WRITES {
        db.sql(sql);
    }
    let run =
        Run::of(&mut lake.changes_cmd(&feed, "hub.changes", &["--max-changes", "1000"])).success();
    assert!(
        run.stdout.starts_with("Wrote ") && run.stdout.contains("iceberg:hub.changes"),
        "{run}"
    );
    assert!(run.stderr.contains("snapshot "), "a line per batch: {run}");

    let changes = lake.read("hub.changes", None);
    let snapshots = changes["snapshots"].as_u64().unwrap();
    assert!(snapshots > 1, "one snapshot per batch: {snapshots}");
    let summary = &changes["summary"];
    let held = lsn(summary["export-events.lsn-to"].as_str().unwrap());
    assert!(held <= lsn(&feed.confirmed()), "{summary}");
    assert!(summary["export-events.feed"]
        .as_str()
        .unwrap()
        .ends_with("-icc_replay"));
    assert!(changes["spec"]
        .as_str()
        .unwrap()
        .contains("commit_time_day"));

    // Replayed in (lsn, position) order on the initial export: the table now.
    let events = lake.read("hub.events", None);
    let mut table: BTreeMap<i64, EventRow> = event_rows(events["rows"].as_array().unwrap())
        .into_iter()
        .map(|row| (row.0, row))
        .collect();
    let mut rows: Vec<&serde_json::Value> = changes["changes"].as_array().unwrap().iter().collect();
    rows.sort_by_key(|c| (lsn(c[0].as_str().unwrap()), c[1].as_i64().unwrap()));
    for change in rows {
        let id = change[3].as_i64().unwrap();
        match change[2].as_str().unwrap() {
            "delete" => {
                table.remove(&id);
            }
            _ => {
                let values = change.as_array().unwrap()[3..].to_vec();
                let row = event_rows(&[serde_json::Value::Array(values)]).remove(0);
                table.insert(id, row);
            }
        }
    }
    let mut replayed: Vec<EventRow> = table.into_values().collect();
    replayed.sort_by_key(|r| std::cmp::Reverse((r.1, r.0)));
    assert!(
        replayed == events_in_postgres(&db, None),
        "replaying the change table on the initial export gives the table"
    );
    lake.verify("hub.changes").success();

    // Nothing new: no snapshot.
    let again = Run::of(&mut lake.changes_cmd(&feed, "hub.changes", &[])).success();
    assert!(
        again
            .stdout
            .starts_with("Wrote 0 changes to iceberg:hub.changes"),
        "{again}"
    );
    assert_eq!(lake.read("hub.changes", None)["snapshots"], snapshots);

    // Another feed's changes, or a table of events, are refused in one line.
    let other = Slot::created(&db, "icc_replay_other", |s| {
        Run::of(&mut lake.changes_cmd(s, "hub.other", &["--create-slot"]))
    });
    db.sql("UPDATE events SET acknowledged = NOT acknowledged WHERE id = 3");
    for (table, says) in [
        ("hub.changes", "holds the changes of another feed"),
        ("hub.events", "holds events, not changes"),
    ] {
        let refused = Run::of(&mut lake.changes_cmd(&other, table, &[]));
        assert_eq!(refused.code, Some(2), "{table}: {refused}");
        assert!(refused.stderr.contains(says), "{table}: {refused}");
        assert_eq!(refused.stderr.trim().lines().count(), 1, "{refused}");
    }
    let mut both = lake.changes_cmd(&other, "hub.other", &["--to", "nats://127.0.0.1:1"]);
    let both = Run::of(&mut both);
    assert_eq!(both.code, Some(2), "{both}");
    assert!(both.stderr.contains("not both"), "{both}");
}

/// Other writers on the change table: an engine that reorders its columns (`lsn` and `op` are
/// both strings, `xid` and `position` both integers) and adds one gets every value in its own
/// column; a snapshot whose summary another writer forged (this feed's scope, an `lsn-to` far
/// ahead) stops the feed in one line instead of making it skip every change.
#[test]
fn another_writer_on_the_change_table_neither_moves_values_nor_steers_the_feed() {
    let db = TestDb::sample("icc_other");
    let lake = Lake::sqlite();
    let feed = Slot::created(&db, "icc_other", |s| {
        Run::of(&mut lake.changes_cmd(s, "hub.changes", &["--create-slot"]))
    });
    db.sql(WRITES[0]);
    Run::of(&mut lake.changes_cmd(&feed, "hub.changes", &["-q"])).success();
    lake.pyiceberg(
        "hub.changes",
        "with t.update_schema() as u:\n    u.move_first('op')\n    \
         u.move_before('position', 'xid')\n    u.add_column('note', StringType())",
    );
    db.sql(WRITES[5]);
    Run::of(&mut lake.changes_cmd(&feed, "hub.changes", &["-q"])).success();
    let table = lake.read("hub.changes", None);
    // `lsn` parses as an LSN in every row (`table_changes`), every op is one, and positions
    // count 0, 1, 2... within each transaction (an xid would repeat).
    let changes = table_changes(&table);
    assert_eq!(changes.len(), 5_002, "both batches, each change once");
    let mut expected = 0;
    for (index, ((commit, position), op, _)) in changes.iter().enumerate() {
        if index > 0 && changes[index - 1].0 .0 != *commit {
            expected = 0;
        }
        assert_eq!(*position, expected, "positions in order");
        assert_eq!(op, "insert");
        expected += 1;
    }

    // Maintenance by another engine: a compaction, then every older snapshot expired (their
    // summaries held where the feed ends; the table's properties hold it too).
    lake.compact_and_expire("hub.changes");
    db.sql(WRITES[2]);
    Run::of(&mut lake.changes_cmd(&feed, "hub.changes", &["-q"])).success();
    let table = lake.read("hub.changes", None);
    assert_eq!(
        table_changes(&table).len(),
        5_004,
        "each change once after maintenance"
    );

    // A snapshot of another writer, with a summary that claims this feed's changes up to an
    // LSN the server never reached.
    let scope = table["summary"]["export-events.feed"].as_str().unwrap();
    lake.pyiceberg(
        "hub.changes",
        &format!(
            "t.append(t.scan().to_arrow().slice(0, 1), snapshot_properties={{\
             'export-events.feed': '{scope}', 'export-events.lsn-to': 'FFFFFFFF/FFFFFFFF'}})"
        ),
    );
    let confirmed = feed.confirmed();
    db.sql(WRITES[1]);
    Run::of(&mut lake.changes_cmd(&feed, "hub.changes", &["-q"]))
        .failure(2, "past this server's WAL position");
    assert_eq!(feed.confirmed(), confirmed, "the slot did not move");
}
