//! The change feed into Kafka, exactly once: one Kafka transaction per batch, the slot confirmed
//! after the commit. Read back by confluent-kafka with `isolation.level=read_committed` (an
//! independent client), from a real Kafka-protocol broker (`scripts/kafka-broker`: nisshi), and
//! compared with the change files a second slot on the same database writes (the same
//! transactions, so the same commit LSNs): each change once, whatever stops a run (SIGKILL and
//! SIGINT at every point a run into Kafka has) and when the broker is killed mid-batch and
//! started again; per key in order.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::feed::*;
use common::*;

/// A topic name of this test's own.
fn topic(label: &str) -> String {
    format!("ee.test.{label}.{}", std::process::id())
}

/// A slot named `name` on `db`, created by `changes --create-slot` with `args`.
fn slot<'a>(db: &'a TestDb, dir: &Path, name: &str, args: &[&str]) -> Slot<'a> {
    Slot::created(db, name, |s| {
        Run::of(s.changes(dir, &["--create-slot"]).args(args))
    })
}

#[test]
fn a_feed_into_kafka_stopped_anywhere_holds_each_change_once_for_read_committed_readers() {
    let db = TestDb::sample("kafka_faults");
    let dir = scratch();
    let dir = dir.path();
    let url = setting("EXPORT_EVENTS_TEST_KAFKA");
    let topic = topic("faults");
    let to = ["--to", &url, "--topic", &topic, "--create-stream"];
    let feed = slot(&db, dir, "kafka_faults", &[]);
    let reference = slot(&db, dir, "kafka_faults_ref", &["--output", "ref"]);
    // Not the rule rename: the feed expands it into updates of the rule's events as they are
    // when it decodes it, so two slots read at different times differ there by design.
    for sql in WRITES.iter().filter(|sql| !sql.starts_with("UPDATE rules")) {
        db.sql(sql);
    }
    // Mid-read, the batch sent but its transaction not committed, committed but not confirmed,
    // and after the confirmation.
    for point in feed_points("kafka") {
        for sig in ["KILL", "INT"] {
            two_more_transactions(&db);
            let mut cmd = feed.changes(dir, &["--max-changes", "100", "-q"]);
            signalled_at(cmd.args(to), point, sig);
        }
    }
    let last = Run::of(feed.changes(dir, &[]).args(to)).success();
    assert!(last.stdout.contains(&topic), "{last}");
    Run::of(&mut reference.changes(dir, &["-q", "--output", "ref"])).success();
    let expected = file_changes(&dir.join("ref"));
    assert!(
        expected.len() > 5_000,
        "the writes came: {}",
        expected.len()
    );
    let found = kafka_changes(&url, &topic);
    assert!(
        found == expected,
        "the topic holds each change once ({} messages, {} expected)",
        found.len(),
        expected.len()
    );
    // Nothing new: nothing is sent, the run says so.
    let again = Run::of(feed.changes(dir, &[]).args(to)).success();
    assert!(again.stdout.starts_with("Wrote 0 changes"), "{again}");
}

/// A broker of the test's own, its log in a folder of its own, so that it can be killed and
/// started again with what it had committed.
struct Broker {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut broker = Self {
            dir: scratch(),
            port,
            child: None,
        };
        broker.run();
        broker
    }

    fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(setting("EXPORT_EVENTS_TEST_KAFKA_BROKER"))
            .current_dir(self.dir.path())
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args([
                "--storage-engine",
                "sqlite://broker.db",
                "--cluster-id",
                "ee-own",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(started.elapsed().as_secs() < 30, "the broker did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn the_broker_killed_mid_batch_and_started_again_loses_and_doubles_nothing() {
    let db = TestDb::sample("kafka_broker");
    let dir = scratch();
    let dir = dir.path();
    let mut broker = Broker::start();
    let url = broker.url();
    let topic = topic("broker");
    let to = ["--to", &url, "--topic", &topic, "--create-stream"];
    let feed = slot(&db, dir, "kafka_broker", &[]);
    let reference = slot(&db, dir, "kafka_broker_ref", &["--output", "ref"]);
    Run::of(feed.changes(dir, &["-q"]).args(to)).success();
    for _ in 0..3 {
        two_more_transactions(&db);
    }
    // The batch is sent, its transaction open: the broker dies, and comes back two seconds
    // later while the run tries to commit. Whether that run's commit lands or fails, the next
    // run finds what the topic holds.
    let mut cmd = feed.changes(dir, &["--max-changes", "20", "-q"]);
    let child = spawn_stopped_at(cmd.args(to), "kafka.sent");
    broker.kill();
    signal(child.id(), "CONT");
    std::thread::sleep(std::time::Duration::from_secs(2));
    broker.run();
    let first = finish(child);
    assert!(matches!(first.code, Some(0) | Some(1)), "{first}");
    two_more_transactions(&db);
    Run::of(feed.changes(dir, &["-q"]).args(to)).success();
    Run::of(&mut reference.changes(dir, &["-q", "--output", "ref"])).success();
    let expected = file_changes(&dir.join("ref"));
    assert!(kafka_changes(&url, &topic) == expected, "each change once");
}

#[test]
fn kafka_settings_are_checked_and_secrets_never_shown() {
    let db = TestDb::sample("kafka_settings");
    let dir = scratch();
    let dir = dir.path();
    let url = setting("EXPORT_EVENTS_TEST_KAFKA");
    let feed = slot(&db, dir, "kafka_settings", &[]);
    // No such topic, and no --create-stream: refused before anything is read.
    let missing = topic("missing");
    let run = Run::of(
        feed.changes(dir, &[])
            .args(["--to", &url, "--topic", &missing]),
    )
    .failure(2, "--create-stream");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    // A name Kafka would refuse, and credentials in the URL: refused, the secret unshown.
    Run::of(
        feed.changes(dir, &[])
            .args(["--to", &url, "--topic", "a/b"]),
    )
    .failure(2, "--topic a/b");
    let with_secret = url.replace("kafka://", "kafka://hub:hunter2@");
    let run = Run::of(feed.changes(dir, &[]).args(["--to", &with_secret]))
        .failure(2, "credentials do not go in the URL");
    assert!(!run.stderr.contains("hunter2"), "{run}");
    // SASL settings from the environment reach librdkafka (this broker has no SASL: the
    // handshake fails), and no line shows the password.
    let topic = topic("settings");
    let run = Run::of(
        feed.changes(dir, &[])
            .args(["--to", &url, "--topic", &topic, "--create-stream"])
            .env("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
            .env("KAFKA_SASL_MECHANISM", "PLAIN")
            .env("KAFKA_SASL_USERNAME", "hub")
            .env("KAFKA_SASL_PASSWORD", "s3cr3t-pw")
            .env("KAFKA_HOME", "/opt/kafka"),
    );
    assert_ne!(run.code, Some(0), "{run}");
    assert!(
        !run.stderr.contains("s3cr3t-pw") && !run.stdout.contains("s3cr3t-pw"),
        "{run}"
    );
}
