//! The sequential plan (page ranges read at once in one snapshot, put in order by the
//! distribution sort) writes exactly what one ordered query writes (`--jobs 1`), byte for byte,
//! for every `--jobs`: on both generated shapes, on heavy timestamp ties with extreme values
//! (1901, 2199), with statistics never gathered and then stale, with `--since` cutting a run of
//! equal timestamps, and on a partitioned `events`; it reads one snapshot while rows change; a
//! killed run's spill is removed by the next run; a full disk under the spill is one clear line
//! and leaves nothing; and the plan is chosen by cost.

mod common;

use common::*;

/// Exports with one ordered query, then with the sequential plan at `--jobs` 1 to 3 under the
/// least memory (so the sort spills into many buckets and splits some again), and checks the
/// same CSV bytes and Parquet values every time.
fn same_as_one_ordered_query(db: &TestDb, extra: &[&str], what: &str) {
    let dir = scratch();
    export_pair(
        dir.path(),
        db,
        &[
            &["--jobs", "1", "--read", "index", "-q", "-o", "serial.csv"],
            extra,
        ]
        .concat(),
    );
    let serial = std::fs::read(dir.path().join("serial.csv")).unwrap();
    assert!(serial.len() > 100, "{what}: rows to compare");
    // Both plans join the rules themselves: the rows are those of PostgreSQL's inner join.
    let since = extra
        .iter()
        .position(|a| *a == "--since")
        .map(|i| format!(" WHERE e.\"timestamp\" >= '{}'", extra[i + 1]))
        .unwrap_or_default();
    let joined = db.value(&format!(
        "SELECT count(*) FROM events AS e JOIN rules AS r ON r.id = e.rule_id{since}"
    ));
    let records = csv::Reader::from_reader(serial.as_slice())
        .records()
        .count();
    assert_eq!(records.to_string(), joined, "{what}: the inner join's rows");
    for jobs in ["1", "2", "3"] {
        let run = export_pair(
            dir.path(),
            db,
            &[
                &[
                    "--jobs", jobs, "--read", "scan", "--memory", "16MB", "-o", "scan.csv",
                ],
                extra,
            ]
            .concat(),
        );
        assert!(
            run.stderr.contains("sequential read"),
            "{what} {jobs}: {run}"
        );
        assert!(
            serial == std::fs::read(dir.path().join("scan.csv")).unwrap(),
            "{what}, --jobs {jobs}: the same CSV bytes"
        );
        assert!(
            parquet_values(&dir.path().join("serial.parquet"))
                == parquet_values(&dir.path().join("scan.parquet")),
            "{what}, --jobs {jobs}: the same Parquet values"
        );
    }
    let left: Vec<String> = files_in(dir.path())
        .into_iter()
        .filter(|f| f.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{what}: no spill left: {left:?}");
}

#[test]
fn both_generated_shapes_come_out_as_one_ordered_query_writes_them() {
    for shape in ["hub", "ordered"] {
        let db = TestDb::generated_as(&format!("scan_{shape}"), shape, 300_000);
        same_as_one_ordered_query(&db, &[], shape);
        let since = db.value(
            "SELECT to_json(\"timestamp\") #>> '{}' FROM events ORDER BY \"timestamp\" \
             OFFSET 100000 LIMIT 1",
        );
        same_as_one_ordered_query(&db, &["--since", &since], &format!("{shape} --since"));
    }
}

/// 200,000 events on 40 timestamps (1901 and 2199 among them), inserted in random order, with
/// the awkward rule names of the sample (quotes, line breaks, non-ASCII).
const TIES: &str = "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged, \
     trigger_telemetry_id, trigger_device_id) \
     SELECT CASE WHEN i % 40 = 0 THEN TIMESTAMPTZ '1901-12-14 20:45:52.000001+00' \
                 WHEN i % 40 = 1 THEN TIMESTAMPTZ '2199-12-31 23:59:59.999999+00' \
                 ELSE TIMESTAMPTZ '2026-01-01 00:00:00+00' + (i % 40) * INTERVAL '1 hour' END, \
            now(), 1 + i % 3, i % 2 = 0, i, NULL \
     FROM (SELECT i FROM generate_series(1, 200000) AS i ORDER BY md5(i::text)) AS s";

#[test]
fn heavy_ties_extreme_timestamps_and_missing_or_stale_statistics() {
    let db = TestDb::sample("scan_ties");
    db.sql("ALTER TABLE events SET (autovacuum_enabled = false); DELETE FROM events;");
    db.sql(TIES);
    // An event whose rule is gone (a Hub that dropped the foreign key): the join drops it.
    db.sql(
        "SET session_replication_role = replica; INSERT INTO events (\"timestamp\", created_at, \
         rule_id, acknowledged) VALUES ('2026-01-01 05:00', now(), 999999, true)",
    );
    // Never analyzed: no histogram, the sort starts from one bucket and splits it.
    assert_eq!(
        db.value("SELECT count(*) FROM pg_stats WHERE tablename = 'events'"),
        "0"
    );
    same_as_one_ordered_query(&db, &[], "never analyzed");
    // `--since` at a tied timestamp: the whole run of equal timestamps is in.
    same_as_one_ordered_query(
        &db,
        &["--since", "2026-01-01T05:00:00Z"],
        "--since inside a run of ties",
    );
    // Analyzed, then as many rows again at later and earlier times: stale statistics.
    db.sql("ANALYZE events");
    db.sql(
        &TIES
            .replace("2026-01-01", "2027-06-01")
            .replace("1901-12-14", "1950-01-01"),
    );
    same_as_one_ordered_query(&db, &[], "stale statistics");
}

#[test]
fn a_partitioned_events_table_is_read_partition_by_partition() {
    let db = TestDb::generated_as("scan_parts", "hub", 100_000);
    db.sql(
        "ALTER TABLE events RENAME TO events_plain; \
         CREATE TABLE events (LIKE events_plain INCLUDING DEFAULTS) PARTITION BY RANGE (\"timestamp\"); \
         CREATE TABLE events_old PARTITION OF events FOR VALUES FROM (MINVALUE) TO ('2025-07-01'); \
         CREATE TABLE events_new PARTITION OF events FOR VALUES FROM ('2025-07-01') TO (MAXVALUE); \
         ALTER TABLE events ADD PRIMARY KEY (id, \"timestamp\"); \
         CREATE INDEX ON events (\"timestamp\"); \
         INSERT INTO events SELECT * FROM events_plain; DROP TABLE events_plain; ANALYZE events",
    );
    assert_eq!(
        db.value("SELECT count(*) > 1000 FROM events_old"),
        "t",
        "both partitions hold rows"
    );
    same_as_one_ordered_query(&db, &[], "partitioned");
}

#[test]
fn the_read_is_one_snapshot_when_a_transaction_commits_mid_read() {
    let db = TestDb::generated_as("scan_snapshot", "hub", 200_000);
    // New rows at both ends and a moved row: none of it is in the snapshot.
    reads_one_snapshot(
        &db,
        &["--jobs", "2", "--read", "scan"],
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged, \
         trigger_telemetry_id) VALUES ('2099-01-01', now(), 1, true, 777000001), \
         ('1990-01-01', now(), 1, true, 777000002); \
         UPDATE events SET \"timestamp\" = '2098-01-01', trigger_telemetry_id = 777000003 \
         WHERE id = (SELECT min(id) FROM events)",
        "sequential read",
    );
}

#[test]
fn a_killed_sort_leaves_a_spill_the_next_run_removes() {
    let db = TestDb::generated_as("scan_kill", "hub", 200_000);
    // Stopped while it writes sorted rows: the spill folder is there.
    killed_run_is_cleaned_up(&db, &["--jobs", "2", "--read", "scan"], "export.streaming");
}

#[test]
fn a_full_disk_under_the_spill_fails_naming_it_and_leaves_nothing() {
    let db = TestDb::generated_as("scan_full", "hub", 200_000);
    let (small, _disk) = small_disk();
    let dir = scratch();
    let out = small.join("scan_full.csv");
    let run = Run::of(export_events(dir.path()).args([
        "--database-url",
        &db.url(),
        "-q",
        "--read",
        "scan",
        "-o",
        out.to_str().unwrap(),
    ]))
    .failure(1, "no space left on device writing the sort's spill in");
    assert!(run.stderr.contains(&small.display().to_string()), "{run}");
    let left: Vec<String> = files_in(&small)
        .into_iter()
        .filter(|f| f.starts_with(".scan_full.csv") || f.starts_with("scan_full.csv"))
        .collect();
    assert!(left.is_empty(), "nothing left: {left:?}");
}

#[test]
fn the_plan_is_chosen_by_the_share_of_the_table_exported() {
    let db = TestDb::generated_as("scan_choice", "hub", 600_000);
    let dir = scratch();
    let all = export_pair(dir.path(), &db, &["--jobs", "2", "-o", "all.csv"]);
    assert!(all.stderr.contains("sequential read"), "{all}");
    let since = db.value(
        "SELECT to_json(\"timestamp\") #>> '{}' FROM events ORDER BY \"timestamp\" DESC \
         OFFSET 6000 LIMIT 1",
    );
    let slice = export_pair(
        dir.path(),
        &db,
        &["--jobs", "2", "--since", &since, "-o", "slice.csv"],
    );
    assert!(!slice.stderr.contains("sequential read"), "1%: {slice}");
    let one = export_pair(dir.path(), &db, &["--jobs", "1", "-o", "one.csv"]);
    assert!(!one.stderr.contains("sequential read"), "--jobs 1: {one}");
    let index = export_pair(
        dir.path(),
        &db,
        &["--jobs", "2", "--read", "index", "-o", "index.csv"],
    );
    assert!(index.stderr.contains("time windows"), "{index}");
    let run =
        Run::of(export_events(dir.path()).args(["--database-url", &db.url(), "--memory", "1MB"]));
    assert!(
        run.code == Some(2) && run.stderr.contains("give at least 16MB"),
        "{run}"
    );
}

/// A sort the statistics plan into some 1,800 buckets (a table analyzed when it was far larger)
/// under a limit of 256 open files, as `ulimit -n 256` sets it: each bucket is an open file
/// while the read fills it, so the buckets are bounded by that limit (and by `--memory`), and
/// the export is the same bytes as one ordered query's.
#[test]
fn a_sort_of_many_buckets_stays_within_the_open_files_limit() {
    use std::os::unix::process::CommandExt as _;
    let db = TestDb::generated_as("scan_fds", "hub", 300_000);
    db.sql(
        "ALTER TABLE events SET (autovacuum_enabled = false); \
         ALTER TABLE events ALTER COLUMN \"timestamp\" SET STATISTICS 10000; ANALYZE events; \
         UPDATE pg_class SET reltuples = 2e8 WHERE oid = 'events'::regclass",
    );
    let dir = scratch();
    let export = |args: &[&str]| {
        let mut cmd = export_events(dir.path());
        cmd.args(["--database-url", &db.url()]).args(args);
        // SAFETY: setrlimit is async-signal-safe, and only this child's limit changes.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 256,
                };
                match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
        Run::of(&mut cmd).success()
    };
    export(&["-q", "--jobs", "1", "--read", "index", "-o", "serial.csv"]);
    let run = export(&[
        "--jobs", "2", "--read", "scan", "--memory", "64MB", "-o", "scan.csv",
    ]);
    assert!(run.stderr.contains("sequential read"), "{run}");
    assert!(
        std::fs::read(dir.path().join("serial.csv")).unwrap()
            == std::fs::read(dir.path().join("scan.csv")).unwrap(),
        "the same CSV bytes"
    );
}
