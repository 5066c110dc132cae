//! The change feed over the replication protocol: an initial export taken in the slot's exported
//! snapshot (exact while writers run: nothing in both), delivery to NATS JetStream (a consumer
//! reading the stream from the start and applying it to the initial export gets the table, also
//! after kills between publishing and confirming, with no message twice), and a quiet `events`
//! table that does not pin WAL while another table is written.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use common::feed::*;
use common::*;

/// `changes --create-slot --initial-export <name>`; the slot is dropped with the returned guard.
fn create_with_initial<'a>(db: &'a TestDb, dir: &Path, name: &str) -> (Slot<'a>, Run) {
    let slot = Slot {
        db,
        name: db.name.to_lowercase(),
    };
    let run = Run::of(&mut slot.changes(dir, &["--create-slot", "--initial-export", name]));
    (slot, run)
}

/// An event as a comparable tuple, from the export's CSV row.
fn from_csv(row: &[String]) -> Vec<String> {
    let stamp = chrono::DateTime::parse_from_str(&row[1], "%Y-%m-%d %H:%M:%S%.f%:z")
        .map(|t| t.timestamp_micros().to_string())
        .unwrap_or_else(|_| row[1].clone());
    let ack = (row[3] == "True").to_string();
    vec![
        row[0].clone(),
        stamp,
        row[2].clone(),
        ack,
        row[4].clone(),
        row[5].clone(),
    ]
}

/// The same from a JetStream message's JSON.
fn from_json(v: &serde_json::Value) -> Vec<String> {
    let text = |key: &str| match &v[key] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let stamp = chrono::DateTime::parse_from_rfc3339(&text("timestamp"))
        .map(|t| t.timestamp_micros().to_string())
        .unwrap_or_else(|_| text("timestamp"));
    vec![
        text("id"),
        stamp,
        text("rule"),
        text("acknowledged"),
        text("trigger_telemetry_id"),
        text("trigger_device_id"),
    ]
}

/// The table, normalised, by id.
fn normal(rows: &BTreeMap<i64, Vec<String>>) -> BTreeMap<i64, Vec<String>> {
    rows.iter().map(|(id, row)| (*id, from_csv(row))).collect()
}

/// Applies the stream's messages to `rows` (normalised); returns their ids.
fn apply_stream(messages: &[(String, serde_json::Value)], rows: &mut BTreeMap<i64, Vec<String>>) {
    for (_, change) in messages {
        let event = from_json(change);
        let id: i64 = event[0].parse().unwrap();
        apply(rows, change["op"].as_str().unwrap(), id, event);
    }
}

#[test]
fn a_consumer_of_the_jetstream_stream_rebuilds_the_table_from_the_initial_export() {
    let db = TestDb::sample("feed_nats");
    let dir = scratch();
    let (slot, run) = create_with_initial(&db, dir.path(), "initial.csv");
    let run = run.success();
    assert!(run.stdout.contains("exported snapshot"), "{run}");
    let initial = table_of(&dir.path().join("initial.csv"));
    for sql in WRITES {
        db.sql(sql);
    }
    let nats = Subject::new("replay");
    let mut cmd = slot.changes(dir.path(), &["--max-changes", "1000", "-q"]);
    let run = Run::of(cmd.args(nats.args())).success();
    assert!(run.stdout.starts_with("Wrote "), "{run}");
    let messages = nats.messages();
    let ids: BTreeSet<&String> = messages.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), messages.len(), "every message id once");
    let mut rows = normal(&initial);
    apply_stream(&messages, &mut rows);
    assert!(
        rows == normal(&table(dir.path(), &db, "final.csv")),
        "stream replayed on the initial export gives the table"
    );
    // Nothing new: no message, and the run ends at once.
    Run::of(slot.changes(dir.path(), &["-q"]).args(nats.args())).success();
    assert_eq!(nats.messages().len(), messages.len());
}

#[test]
fn kills_between_publishing_and_confirming_put_no_change_twice_in_the_stream() {
    let db = TestDb::sample("feed_nats_kill");
    let dir = scratch();
    let (slot, run) = create_with_initial(&db, dir.path(), "initial.csv");
    run.success();
    let initial = table_of(&dir.path().join("initial.csv"));
    for sql in WRITES {
        db.sql(sql);
    }
    let nats = Subject::new("kill");
    for (i, point) in feed_points("nats")
        .iter()
        .cycle()
        .skip(1)
        .take(9)
        .enumerate()
    {
        let mut cmd = slot.changes(dir.path(), &["--max-changes", "700", "-q"]);
        let child = spawn_stopped_at(cmd.args(nats.args()), point);
        signal(child.id(), "KILL");
        assert_eq!(finish(child).code, None, "killed at {point}");
        if i % 3 == 0 {
            db.sql("UPDATE events SET acknowledged = NOT acknowledged WHERE id % 13 = 0");
        }
    }
    Run::of(slot.changes(dir.path(), &["-q"]).args(nats.args())).success();
    let messages = nats.messages();
    let ids: BTreeSet<&String> = messages.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), messages.len(), "no change twice in the stream");
    let mut rows = normal(&initial);
    apply_stream(&messages, &mut rows);
    assert!(rows == normal(&table(dir.path(), &db, "final.csv")));
}

#[test]
fn the_initial_export_in_the_slots_snapshot_overlaps_nothing_while_writers_run() {
    let db = TestDb::sample("feed_snapshot");
    let dir = scratch();
    db.sql(
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
         SELECT now() - i * interval '1 second', now(), 1 + i % 10, false \
         FROM generate_series(1, 20000) AS i",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), db.url());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) {
                let out = std::process::Command::new("psql")
                    .args(["-X", "-q", "-d", &url, "-c"])
                    .arg(
                        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
                         SELECT now(), now(), 1 + i % 10, false FROM generate_series(1, 20) i; \
                         UPDATE events SET acknowledged = NOT acknowledged \
                         WHERE id IN (SELECT id FROM events ORDER BY random() LIMIT 5)",
                    )
                    .output()
                    .unwrap();
                assert!(out.status.success());
                rounds += 1;
            }
            rounds
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (slot, run) = create_with_initial(&db, dir.path(), "initial.csv");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    assert!(writer.join().unwrap() > 2, "writers ran throughout");
    assert!(run
        .success()
        .stdout
        .contains("taken in the slot's snapshot"));
    let mut rows = table_of(&dir.path().join("initial.csv"));
    let exported: BTreeSet<i64> = rows.keys().copied().collect();
    Run::of(&mut slot.changes(dir.path(), &["-q"])).success();
    let seen = replay(&dir.path().join("exports/changes"), &mut rows);
    let overlap: Vec<i64> = seen
        .iter()
        .filter(|(_, op, id)| op == "insert" && exported.contains(id))
        .map(|s| s.2)
        .collect();
    assert!(
        overlap.is_empty(),
        "inserted rows also in the export: {overlap:?}"
    );
    assert!(
        seen.iter().any(|(_, op, _)| op == "insert"),
        "writers came after the slot"
    );
    assert!(
        rows == table(dir.path(), &db, "final.csv"),
        "export + feed = table"
    );
}

#[test]
fn a_quiet_events_table_does_not_pin_wal_while_another_table_is_written() {
    let db = TestDb::sample("feed_quiet");
    let dir = scratch();
    let slot = Slot::create(&db, dir.path());
    db.sql("CREATE TABLE other (id bigserial, payload text)");
    let retained = || slot.retained_wal();
    let start = db.value("SELECT pg_current_wal_lsn()::text");
    for _ in 0..4 {
        db.sql(
            "INSERT INTO other (payload) SELECT repeat(md5(i::text), 32) \
             FROM generate_series(1, 12000) i; CHECKPOINT",
        );
        Run::of(&mut slot.changes(dir.path(), &["-q"])).success();
    }
    // Two runs: the first confirms past the writes, the server then moves the slot's restart
    // point at its next running-transactions record.
    db.sql("CHECKPOINT");
    Run::of(&mut slot.changes(dir.path(), &["-q"])).success();
    let kept = retained();
    let written: i64 = db
        .value(&format!(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start}')::bigint"
        ))
        .parse()
        .unwrap();
    assert!(
        written > 32 << 20,
        "the other table wrote {written} bytes of WAL"
    );
    assert!(
        kept < written / 4,
        "the slot keeps {kept} bytes of WAL after {written} bytes written elsewhere"
    );
    let status = Run::of(&mut slot.changes(dir.path(), &["--status"])).success();
    assert!(status.stdout.contains("server WAL at"), "{status}");
    assert!(status.stdout.contains("last confirmed"), "{status}");
}

#[test]
fn follow_logs_a_line_per_batch_with_its_rate() {
    let db = TestDb::sample("feed_follow");
    let dir = scratch();
    let slot = Slot::create(&db, dir.path());
    let child = slot
        .changes(dir.path(), &["--follow", "--flush-interval", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    db.sql("UPDATE events SET acknowledged = NOT acknowledged");
    std::thread::sleep(Duration::from_millis(1_500));
    signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("changes ("))
        .unwrap_or_default();
    assert!(line.contains("changes/s"), "{stderr}");
}

#[test]
fn the_replication_stream_logs_in_with_scram_over_verify_full_tls() {
    let db = TestDb::sample("feed_auth");
    let dir = scratch();
    let slot = Slot::create(&db, dir.path());
    let role = setting("EXPORT_EVENTS_TEST_SCRAM_ROLE");
    let password = setting("EXPORT_EVENTS_TEST_SCRAM_PASSWORD");
    db.sql(&format!("GRANT SELECT ON events, rules TO {role}"));
    db.sql("UPDATE events SET acknowledged = NOT acknowledged WHERE id = 1");
    let (_, port) = server_address();
    // pg_hba.conf of the test cluster lets this role in with scram-sha-256 only.
    let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
    let conninfo = format!(
        "host=localhost port={port} dbname={} user={role} password='{quoted}' \
         sslmode=verify-full sslrootcert={}",
        db.name,
        setting("EXPORT_EVENTS_TEST_CA")
    );
    let run = Run::of(export_events(dir.path()).args([
        "changes",
        "--slot",
        &slot.name,
        "--database-url",
        &conninfo,
    ]))
    .success();
    assert!(run.stdout.starts_with("Wrote 1 changes"), "{run}");
    assert!(!run.stderr.contains(&password), "{run}");
}

#[test]
fn two_databases_never_share_a_subject_or_a_folder_silently() {
    let (east, west) = (
        TestDb::sample("feed_two_east"),
        TestDb::sample("feed_two_west"),
    );
    let dir = scratch();
    let east_slot = Slot::create(&east, dir.path());
    let west_slot = Slot::create(&west, dir.path());
    let nats = Subject::new("two_sites");
    for db in [&east, &west] {
        db.sql(
            "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
             SELECT now(), now(), 1, false FROM generate_series(1, 200)",
        );
    }
    Run::of(east_slot.changes(dir.path(), &["-q"]).args(nats.args())).success();
    let published = nats.messages().len();
    assert_eq!(published, 200);
    // The other site on the same subject is refused, naming the fix; nothing is published.
    Run::of(west_slot.changes(dir.path(), &["-q"]).args(nats.args()))
        .failure(2, "give each database and slot its own --subject");
    assert_eq!(nats.messages().len(), published);
    let scope = east.value(&format!(
        "SELECT (SELECT system_identifier FROM pg_control_system())::text || '-' || \
         (SELECT oid FROM pg_database WHERE datname = current_database())::text || '-{}'",
        east_slot.name
    ));
    assert!(
        nats.messages()
            .iter()
            .all(|(id, _)| id.starts_with(&format!("{scope}:"))),
        "message ids name their feed"
    );
    // Change files: one folder per feed, likewise.
    Run::of(&mut east_slot.changes(dir.path(), &[])).success();
    Run::of(&mut west_slot.changes(dir.path(), &[]))
        .failure(2, "holds the change files of another feed");
    // On its own subject the other site loses nothing.
    let own = Subject::new("two_sites_west");
    Run::of(west_slot.changes(dir.path(), &["-q"]).args(own.args())).success();
    assert_eq!(own.messages().len(), 200);
}

#[test]
fn a_partitioned_events_table_feeds_every_change_through_its_root() {
    let db = TestDb::sample("feed_partitioned");
    // Events at scale: declaratively partitioned by month, as Hubs partition them.
    db.sql(
        "ALTER TABLE events RENAME TO events_plain; \
         CREATE TABLE events (LIKE events_plain INCLUDING DEFAULTS) PARTITION BY RANGE (\"timestamp\"); \
         CREATE TABLE events_old PARTITION OF events FOR VALUES FROM (MINVALUE) TO ('2026-01-01'); \
         CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO (MAXVALUE); \
         ALTER TABLE events ADD PRIMARY KEY (id, \"timestamp\"); \
         INSERT INTO events SELECT * FROM events_plain; DROP TABLE events_plain; \
         CREATE SEQUENCE events_id_seq START 1000; \
         ALTER TABLE events ALTER COLUMN id SET DEFAULT nextval('events_id_seq')",
    );
    let dir = scratch();
    let (slot, run) = create_with_initial(&db, dir.path(), "initial.csv");
    run.success();
    let mut rows = table_of(&dir.path().join("initial.csv"));
    db.sql("UPDATE events SET acknowledged = NOT acknowledged");
    db.sql(
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
         SELECT '2025-06-01'::timestamptz + make_interval(days => i), now(), 1, false \
         FROM generate_series(1, 50) AS i",
    );
    db.sql("DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT 10)");
    let run = Run::of(&mut slot.changes(dir.path(), &[])).success();
    let updates = 15;
    assert!(
        run.stdout
            .starts_with(&format!("Wrote {} changes", updates + 50 + 10)),
        "{run}"
    );
    replay(&dir.path().join("exports/changes"), &mut rows);
    assert!(
        rows == table(dir.path(), &db, "final.csv"),
        "replay gives the table"
    );
}

#[test]
fn a_change_the_stream_refuses_mid_chunk_is_published_again_never_skipped() {
    let db = TestDb::sample("feed_nats_gap");
    let dir = scratch();
    let (slot, run) = create_with_initial(&db, dir.path(), "initial.csv");
    run.success();
    let initial = table_of(&dir.path().join("initial.csv"));
    let nats = Subject::new("gap");
    // A stream that refuses large messages: the change of an event whose rule has a long name
    // is refused while the ones after it (small) would be taken.
    let config = |max_message_size: i32| jetstream::stream::Config {
        name: nats.stream.clone(),
        subjects: vec![nats.subject.clone()],
        max_message_size,
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let js = rt.block_on(async { jetstream::new(async_nats::connect(&nats.url).await.unwrap()) });
    rt.block_on(js.create_stream(config(700))).unwrap();
    let long = "温".repeat(255); // 765 bytes, within varchar(255)
    db.sql(&format!(
        "INSERT INTO rules (id, name, condition, action, is_active, device_metric_id) \
         VALUES (20, '{long}', '{{}}', '{{}}', true, 20)"
    ));
    db.sql(
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
         SELECT now(), now(), CASE WHEN i = 5 THEN 20 ELSE 1 END, false \
         FROM generate_series(1, 20) AS i",
    );
    let to = ["--to", &nats.url, "--subject", &nats.subject, "-q"];
    let failed = Run::of(&mut slot.changes(dir.path(), &to));
    assert_eq!(failed.code, Some(1), "{failed}");
    let stored = nats.messages();
    assert!(stored.len() < 20, "a prefix only: {}", stored.len());
    // The stream takes large messages again: the next run publishes from the refused change.
    rt.block_on(js.update_stream(config(-1))).unwrap();
    Run::of(&mut slot.changes(dir.path(), &to)).success();
    let messages = nats.messages();
    let ids: BTreeSet<&String> = messages.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), messages.len(), "no change twice");
    let mut rows = normal(&initial);
    apply_stream(&messages, &mut rows);
    assert!(
        rows == normal(&table(dir.path(), &db, "final.csv")),
        "no change lost"
    );
}

/// `changes` of `slot` to the NATS server `url` on `subject`, logging in with `env` only (none
/// of the test's own NATS_* variables), and no line may show `secret`.
fn feed_nats(
    slot: &Slot,
    dir: &Path,
    url: &str,
    subject: &str,
    env: &[(&str, &str)],
    secret: &str,
) -> Run {
    let mut cmd = slot.changes(dir, &["--to", url, "--subject", subject, "--create-stream"]);
    for name in [
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_TOKEN",
        "NATS_CREDS",
        "NATS_NKEY",
    ] {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    let run = Run::of(&mut cmd);
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "a secret shown\n{run}"
    );
    run
}

/// NATS servers as production runs them ask for credentials: a user and password, or a token,
/// in the URL or in the variables the `nats` CLI reads. The feed logs in with each, and no line
/// (refusal or success) shows a secret.
#[test]
fn a_nats_server_with_authentication_takes_the_feed_and_no_line_shows_its_secret() {
    let db = TestDb::sample("feed_auth");
    let dir = scratch();
    let (slot, created) = create_with_initial(&db, dir.path(), "initial.csv");
    created.success();
    let users = NatsServer::start(&["--user", "hub", "--pass", "s3cret-pass"]);
    let tokens = NatsServer::start(&["--auth", "s3cret-token"]);
    let feed = |url: String, env: &[(&str, &str)], subject: &str| {
        feed_nats(&slot, dir.path(), &url, subject, env, "s3cret")
    };
    // Without credentials, or with wrong ones: refused in one line.
    let refused = feed(format!("nats://127.0.0.1:{}", users.port), &[], "a.changes");
    assert_ne!(refused.code, Some(0), "{refused}");
    assert!(
        refused.stderr.contains("authorization violation"),
        "{refused}"
    );
    let wrong = feed(
        format!("nats://s3cret-wrong@127.0.0.1:{}", tokens.port),
        &[],
        "a.changes",
    );
    assert!(
        wrong.stderr.contains("nats://********@127.0.0.1"),
        "{wrong}"
    );
    assert_eq!(wrong.stderr.trim().lines().count(), 1, "{wrong}");

    db.sql(WRITES[0]);
    let first = feed(
        format!("nats://hub:s3cret-pass@127.0.0.1:{}", users.port),
        &[],
        "a.changes",
    )
    .success();
    assert!(
        first
            .stdout
            .starts_with("Wrote 2 changes to a.changes (nats://********@127.0.0.1"),
        "{first}"
    );
    db.sql(WRITES[1]);
    let env = [("NATS_USER", "hub"), ("NATS_PASSWORD", "s3cret-pass")];
    feed(
        format!("nats://127.0.0.1:{}", users.port),
        &env,
        "a.changes",
    )
    .success();

    // A token: in the URL, then in NATS_TOKEN (a second subject: the slot moved on).
    db.sql(WRITES[2]);
    let token = feed(
        format!("nats://s3cret-token@127.0.0.1:{}", tokens.port),
        &[],
        "b.changes",
    )
    .success();
    assert!(
        token.stdout.starts_with("Wrote 2 changes to b.changes"),
        "{token}"
    );
    db.sql(WRITES[1]);
    let env = [("NATS_TOKEN", "s3cret-token")];
    feed(
        format!("nats://127.0.0.1:{}", tokens.port),
        &env,
        "b.changes",
    )
    .success();
}

/// The other ways a production NATS server lets a client in: an NKey user (the seed in a file,
/// `NATS_NKEY`) over TLS (`tls://`, the server's CA in `NATS_CA`). Without the CA, or without the
/// key, the run is refused in one line; with both, the feed is published, and the seed is never
/// shown.
#[test]
fn a_nats_server_with_an_nkey_user_over_tls_takes_the_feed() {
    let db = TestDb::sample("feed_nkey");
    let dir = scratch();
    let (slot, created) = create_with_initial(&db, dir.path(), "initial.csv");
    created.success();
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let seed_file = dir.path().join("user.nk");
    std::fs::write(&seed_file, &seed).unwrap();
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    // The test cluster's server certificate is for localhost and 127.0.0.1.
    let cluster = setting("EXPORT_EVENTS_TEST_CLUSTER");
    let (cert, key) = (
        format!("{cluster}/server.crt"),
        format!("{cluster}/server.key"),
    );
    let server = NatsServer::start(&[
        "-c",
        &config.display().to_string(),
        "--tls",
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
    ]);
    let ca = setting("EXPORT_EVENTS_TEST_CA");
    let seed_path = seed_file.display().to_string();
    let url = format!("tls://127.0.0.1:{}", server.port);
    let feed = |env: &[(&str, &str)]| feed_nats(&slot, dir.path(), &url, "k.changes", env, &seed);
    let untrusted = feed(&[("NATS_NKEY", &seed_path)]);
    assert_ne!(untrusted.code, Some(0), "{untrusted}");
    assert_eq!(untrusted.stderr.trim().lines().count(), 1, "{untrusted}");
    let refused = feed(&[("NATS_CA", &ca)]);
    assert!(
        refused.stderr.contains("authorization violation"),
        "{refused}"
    );
    db.sql(WRITES[0]);
    let run = feed(&[("NATS_CA", &ca), ("NATS_NKEY", &seed_path)]).success();
    assert!(
        run.stdout
            .starts_with("Wrote 2 changes to k.changes (tls://127.0.0.1:"),
        "{run}"
    );
}
