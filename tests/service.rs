//! `changes --follow` run as a service, on a PostgreSQL cluster of the test's own (it is
//! restarted, and its settings changed): the feed survives its sessions being terminated and
//! the server restarting, into change files, JetStream, Kafka and an Iceberg table alike, delivering
//! every change once and never exiting until SIGTERM, which drains and exits 0; heartbeats keep
//! an idle slot from pinning WAL; an invalidated slot is named as such; the metrics endpoint,
//! scraped by a real HTTP client, shows the lag falling back to zero after a burst.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::feed::*;
use common::lake::Lake;
use common::*;

/// `cmd` with `--follow`, its output piped, started.
fn following(cmd: &mut Command, args: &[&str]) -> Child {
    cmd.args(["--follow", "--flush-interval", "1"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("export-events runs")
}

/// Waits until every slot of `db` named in `slots` is confirmed up to `lsn`.
fn caught_up(db: &TestDb, slots: &[&Slot], lsn: &str) {
    let names: Vec<String> = slots.iter().map(|s| format!("'{}'", s.name)).collect();
    let sql = format!(
        "SELECT bool_and(confirmed_flush_lsn >= '{lsn}') FROM pg_replication_slots \
         WHERE slot_name IN ({})",
        names.join(", ")
    );
    let started = Instant::now();
    while db.value(&sql) != "t" {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the feeds did not catch up with {lsn}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A few transactions of every kind of change to events.
fn write_some(db: &TestDb, round: usize) {
    db.sql(&format!(
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
         SELECT now() - i * interval '1 minute', now(), 1 + i % 5, false \
         FROM generate_series(1, {}) AS i",
        20 + round
    ));
    db.sql(&format!(
        "UPDATE events SET acknowledged = NOT acknowledged WHERE id % 7 = {}",
        round % 7
    ));
    db.sql(&format!(
        "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT {})",
        round % 3
    ));
}

/// Feeds of a test, killed if the test ends before they do (they would retry for ever
/// against a cluster that is gone).
struct Feeds(Vec<Child>);

impl Feeds {
    /// Stops each with SIGTERM and waits for it.
    fn stop(mut self) -> Vec<Run> {
        let children = std::mem::take(&mut self.0);
        for child in &children {
            signal(child.id(), "TERM");
        }
        children.into_iter().map(finish).collect()
    }
}

impl Drop for Feeds {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `count` slots named `<prefix>%` are being read.
fn streaming(db: &TestDb, prefix: &str, count: usize) {
    let sql = format!(
        "SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name LIKE '{prefix}%'"
    );
    let started = Instant::now();
    while db.value(&sql) != count.to_string() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the feeds did not connect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks that every feed still runs; one that ended is shown.
fn alive(children: &mut [Child]) {
    for child in children.iter_mut() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
            }
            panic!("a feed exited ({status}):\n{stderr}");
        }
    }
}

#[test]
fn follow_outlives_terminated_sessions_and_a_restart_and_delivers_every_change_once() {
    let cluster = Cluster::start(&[]);
    let db = TestDb::sample_on(&cluster.server, "service");
    let lake = Lake::sqlite();
    let dir = lake.dir.path();
    let nats = Subject::new("service");
    let files = Slot::created(&db, "svc_files", |s| {
        Run::of(&mut s.changes(dir, &["--create-slot", "--output", "files"]))
    });
    let jetstream = Slot::created(&db, "svc_nats", |s| {
        Run::of(&mut s.changes(dir, &["--create-slot"]))
    });
    let table = Slot::created(&db, "svc_table", |s| {
        Run::of(&mut lake.changes_cmd(s, "hub.changes", &["--create-slot"]))
    });
    let kafka = Slot::created(&db, "svc_kafka", |s| {
        Run::of(&mut s.changes(dir, &["--create-slot"]))
    });
    let kafka_url = setting("EXPORT_EVENTS_TEST_KAFKA");
    let topic = format!("ee.test.service.{}", std::process::id());
    // The reference: a slot from the same moment, read once at the end, untouched by faults.
    let reference = Slot::created(&db, "svc_ref", |s| {
        Run::of(&mut s.changes(dir, &["--create-slot", "--output", "ref"]))
    });
    let nats_args: Vec<String> = nats.args();
    let nats_args: Vec<&str> = nats_args.iter().map(String::as_str).collect();
    let mut feeds = Feeds(vec![
        following(&mut files.changes(dir, &["--output", "files"]), &[]),
        following(&mut jetstream.changes(dir, &nats_args), &[]),
        following(&mut lake.changes_cmd(&table, "hub.changes", &[]), &[]),
        following(
            &mut kafka.changes(dir, &["--to", &kafka_url, "--topic", &topic]),
            &["--create-stream"],
        ),
    ]);
    let slots = [&files, &jetstream, &table, &kafka];
    for round in 0..10 {
        streaming(&db, "svc_", 4);
        write_some(&db, round);
        let lsn = db.value("SELECT pg_current_wal_lsn()");
        if round % 2 == 0 {
            // Mid-batch as often as not: the feeds may be delivering what was just written.
            std::thread::sleep(Duration::from_millis(300));
        } else {
            caught_up(&db, &slots, &lsn);
        }
        let ended = db.value(
            "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots \
             WHERE active_pid IS NOT NULL AND slot_name LIKE 'svc_%'",
        );
        assert_eq!(ended, "4", "round {round}: every feed's walsender ended");
        alive(&mut feeds.0);
    }
    write_some(&db, 10);
    // Every feed has a session open when the server restarts: it ends them all.
    streaming(&db, "svc_", 4);
    cluster.restart();
    write_some(&db, 11);
    let end = db.value("SELECT pg_current_wal_lsn()");
    caught_up(&db, &slots, &end);
    alive(&mut feeds.0);
    // systemd's stop: SIGTERM; the batch in hand is delivered and the run ends well.
    for run in feeds.stop() {
        assert_eq!(run.code, Some(0), "{run}");
        let again = run.stderr.matches("connecting again").count();
        assert!(again >= 11, "a new session after each end ({again})\n{run}");
    }

    Run::of(&mut reference.changes(dir, &["-q", "--output", "ref"])).success();
    let expected = file_changes(&dir.join("ref"));
    assert!(expected.len() > 300, "the writes came: {}", expected.len());
    assert!(
        file_changes(&dir.join("files")) == expected,
        "change files: each change once, in order"
    );
    assert!(
        nats.changes() == expected,
        "JetStream: each change once, in order"
    );
    let held = table_changes(&lake.read("hub.changes", None));
    assert!(held == expected, "the table: each change once");
    assert!(
        kafka_changes(&kafka_url, &topic) == expected,
        "Kafka: each change once"
    );
}

#[test]
fn an_invalidated_slot_is_named_with_the_way_back_and_never_retried() {
    let cluster = Cluster::start(&["max_slot_wal_keep_size = 1MB", "wal_keep_size = 0"]);
    let db = TestDb::sample_on(&cluster.server, "lost");
    let dir = scratch();
    let lost = Slot::create(&db, dir.path());
    // WAL past what the slot may keep: a few segments, then a checkpoint removes them.
    for _ in 0..4 {
        write_some(&db, 1);
        db.sql("SELECT pg_switch_wal()");
    }
    db.sql("CHECKPOINT");
    assert_eq!(
        db.value(&format!(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{}'",
            lost.name
        )),
        "lost"
    );
    for args in [&[][..], &["--follow"][..]] {
        let run = Run::of(&mut lost.changes(dir.path(), args)).failure(1, "was invalidated");
        assert!(run.stderr.contains("--drop-slot"), "{run}");
        assert!(!run.stderr.contains("connecting again"), "{run}");
    }
}

#[test]
fn an_idle_slot_keeps_its_wal_bounded_while_another_database_writes_and_heartbeats_move_it() {
    let cluster = Cluster::start(&[]);
    let db = TestDb::sample_on(&cluster.server, "beat");
    let busy = TestDb::empty_on(&cluster.server, "busy");
    busy.sql("CREATE TABLE t (v text)");
    let dir = scratch();
    let beat = Slot::created(&db, "beat", |s| {
        Run::of(&mut s.changes(dir.path(), &["--create-slot"]))
    });
    let quiet = Slot::created(&db, "quiet", |s| {
        Run::of(&mut s.changes(dir.path(), &["--create-slot"]))
    });
    let mut feeds = Feeds(vec![
        following(
            &mut beat.changes(dir.path(), &["-o", "beat"]),
            &["--heartbeat", "1s"],
        ),
        following(
            &mut quiet.changes(dir.path(), &["-o", "quiet"]),
            &["--heartbeat", "0"],
        ),
    ]);
    // 20 x ~5 MB of WAL in another database; events is never written.
    for _ in 0..20 {
        busy.sql("INSERT INTO t SELECT repeat('x', 1000) FROM generate_series(1, 5000)");
        busy.sql("CHECKPOINT");
    }
    // Each slot keeps at most 16 MB: with heartbeats, and without (the feed confirms the
    // positions of the server's keepalives, which move past the other database's writes).
    let bound = 16 << 20;
    let started = Instant::now();
    while [&beat, &quiet].iter().any(|s| s.retained_wal() > bound) {
        alive(&mut feeds.0);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "after 100 MB written elsewhere the slots keep {} and {} bytes of WAL",
            beat.retained_wal(),
            quiet.retained_wal()
        );
        std::thread::sleep(Duration::from_millis(250));
        busy.sql("CHECKPOINT");
    }
    // Nothing is written anywhere now but the heartbeats: the WAL moves, and the slot with it.
    let before = db.value("SELECT pg_current_wal_lsn()");
    std::thread::sleep(Duration::from_secs(3));
    let after = db.value("SELECT pg_current_wal_lsn()");
    assert_ne!(before, after, "heartbeats write into the WAL");
    caught_up(&db, &[&beat], &after);
    alive(&mut feeds.0);
    for run in feeds.stop() {
        assert_eq!(run.code, Some(0), "{run}");
    }
}

/// `GET url` by Python's HTTP client: (status, body); status 0 when nothing answers.
fn get(url: &str) -> (u16, String) {
    let script = "import sys, urllib.request, urllib.error\n\
                  try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status); print(r.read().decode())\n\
                  except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n\
                  except OSError as e:\n    print(0); print(e)\n";
    let out = Command::new("python3")
        .args(["-c", script, url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, body) = text.split_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

/// The value of the sample named `name` in Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn the_metrics_endpoint_shows_the_lag_falling_back_to_zero_after_a_burst() {
    let db = TestDb::sample("metrics");
    let dir = scratch();
    let slot = Slot::create(&db, dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut feed = Feeds(vec![following(
        &mut slot.changes(dir.path(), &["--max-changes", "1000"]),
        &["--metrics", &address],
    )]);
    let base = format!("http://{address}");
    let started = Instant::now();
    while get(&format!("{base}/healthz")).0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "never healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Scraped all along by a real HTTP client, while the burst comes: 100,000 events in one
    // transaction, then 50 small ones.
    let done = std::sync::atomic::AtomicBool::new(false);
    let (behind, text) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut behind = 0.0f64;
            let started = Instant::now();
            loop {
                let (status, text) = get(&format!("{base}/metrics"));
                assert_eq!(status, 200);
                let lag = sample(&text, "export_events_replication_lag_bytes");
                behind = behind.max(lag);
                let changes = sample(&text, "export_events_changes_total");
                let written = done.load(std::sync::atomic::Ordering::SeqCst);
                if written && changes >= 100_050.0 && lag == 0.0 {
                    return (behind, text);
                }
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "the lag did not fall back to zero:\n{text}"
                );
            }
        });
        db.sql(
            "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
             SELECT now(), now(), 1, false FROM generate_series(1, 100000)",
        );
        for _ in 0..50 {
            db.sql("UPDATE events SET acknowledged = NOT acknowledged WHERE id = 1");
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        watcher.join().unwrap()
    });
    assert_eq!(
        sample(&text, "export_events_replication_lag_seconds"),
        0.0,
        "{text}"
    );
    assert!(
        sample(&text, "export_events_transactions_total") >= 51.0,
        "{text}"
    );
    assert!(sample(&text, "export_events_confirmed_lsn") > 0.0, "{text}");
    assert!(behind > 0.0, "the burst showed as lag");
    assert_eq!(get(&format!("{base}/healthz")).0, 200);
    assert_eq!(get(&format!("{base}/nothing")).0, 404);
    alive(&mut feed.0);
    let run = feed.stop().remove(0);
    assert_eq!(run.code, Some(0), "{run}");
    // Another run cannot take the same address: refused in one line before it starts.
    let _held = std::net::TcpListener::bind(&address).unwrap();
    let run = Run::of(&mut slot.changes(dir.path(), &["--follow", "--metrics", &address]))
        .failure(2, "--metrics");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
}
