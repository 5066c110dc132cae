//! The change feed's shared test pieces: the table as the export writes it, replaying change
//! rows on it, a mix of writes that covers every kind of change, the changes as each
//! destination holds them (files, a table, a JetStream subject), and NATS servers of a test's own.

use std::collections::BTreeMap;
use std::path::Path;

use async_nats::jetstream;

use super::*;

/// The table as the export writes it, by id.
pub fn table(dir: &Path, db: &TestDb, name: &str) -> BTreeMap<i64, Vec<String>> {
    Run::of(export_events(dir).args(["-q", "--database-url", &db.url(), "-o", name])).success();
    table_of(&dir.join(name))
}

/// The export CSV at `path`, by id.
pub fn table_of(path: &Path) -> BTreeMap<i64, Vec<String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader
        .records()
        .map(|r| {
            let row: Vec<String> = r.unwrap().iter().map(str::to_owned).collect();
            (row[0].parse().unwrap(), row)
        })
        .collect()
}

/// Applies every change file of `folder`, in name order, to `rows`; returns the changes seen as
/// (lsn, op, id), to check that none repeats.
pub fn replay(folder: &Path, rows: &mut BTreeMap<i64, Vec<String>>) -> Vec<(String, String, i64)> {
    let mut seen = Vec::new();
    for name in files_in(folder).iter().filter(|n| n.ends_with(".csv")) {
        let mut reader = csv::Reader::from_path(folder.join(name)).unwrap();
        for record in reader.records() {
            let record = record.unwrap();
            let (lsn, op) = (record[0].to_owned(), record[3].to_owned());
            let event: Vec<String> = record.iter().skip(4).map(str::to_owned).collect();
            let id: i64 = event[0].parse().unwrap();
            apply(rows, &op, id, event);
            seen.push((lsn, op, id));
        }
    }
    seen
}

/// Where every change feed can stop, in the order a run reaches them: mid-read, written (the
/// sink's own points between), then confirmed.
const FEED_POINTS: [&str; 3] = ["stream.batch", "changes.written", "changes.confirmed"];

/// Each change sink's own fault points, between the read and the write. A point added to a sink
/// goes here, and so into that sink's fault test and `matrix.rs`'s check that every point in the
/// code is covered.
pub const SINK_POINTS: &[(&str, &[&str])] = &[
    ("files", &[]),
    ("nats", &[]),
    ("table", &["table.files-written", "table.committed"]),
    ("kafka", &["kafka.sent"]),
];

/// Every point a feed into `sink` (a name in [`SINK_POINTS`]) can stop at, in order.
pub fn feed_points(sink: &str) -> Vec<&'static str> {
    let (_, own) = SINK_POINTS
        .iter()
        .find(|(name, _)| *name == sink)
        .unwrap_or_else(|| panic!("no sink {sink} in SINK_POINTS"));
    let mut points = vec![FEED_POINTS[0]];
    points.extend_from_slice(own);
    points.extend_from_slice(&FEED_POINTS[1..]);
    points
}

/// Every fault point of the change feed, of every sink.
pub fn all_feed_points() -> Vec<&'static str> {
    let mut points: Vec<&str> = FEED_POINTS.to_vec();
    points.extend(SINK_POINTS.iter().flat_map(|(_, own)| own.iter().copied()));
    points
}

pub const WRITES: &[&str] = &[
    "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged, trigger_telemetry_id) \
     VALUES ('2026-03-01 00:00:00.25+00', now(), 4, false, 7), ('2020-01-01 00:00:00+00', now(), 1, true, NULL)",
    "UPDATE events SET acknowledged = NOT acknowledged WHERE id IN (3, 7)",
    "DELETE FROM events WHERE id IN (4, 9)",
    "UPDATE rules SET name = 'Renamed, \"again\"' WHERE id = 5",
    "BEGIN; INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
     VALUES (now(), now(), 2, false); ROLLBACK",
    "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged, trigger_device_id) \
     SELECT now() - i * interval '1 second', now(), 1 + i % 10, i % 3 = 0, i FROM generate_series(1, 5000) AS i",
    "UPDATE events SET acknowledged = true WHERE id % 7 = 0",
    "DELETE FROM events WHERE id % 11 = 0",
];

/// Applies one change (`op` on event `id`, its values `event`) to `rows`.
pub fn apply(rows: &mut BTreeMap<i64, Vec<String>>, op: &str, id: i64, event: Vec<String>) {
    match op {
        "insert" | "update" => {
            rows.insert(id, event);
        }
        "delete" => {
            rows.remove(&id);
        }
        other => panic!("unknown op {other}"),
    }
}

/// A NATS server of the test's own (JetStream, on a free port), started with `args` (such as
/// `--user`, `--pass` or `--auth`), stopped when dropped.
pub struct NatsServer {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl NatsServer {
    pub fn start(args: &[&str]) -> Self {
        let dir = scratch();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|b| Path::new(b).exists())
            .unwrap_or("nats-server");
        let child = std::process::Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server runs (scripts/test installs it)");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed().as_secs() < 20,
                "nats-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self {
            child,
            _dir: dir,
            port,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `16/B374D848` as a number, so that LSNs sort.
pub fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// A change as both sides give it: (commit LSN, position in its transaction), op, event id.
pub type Change = ((u64, i64), String, i64);

/// The table's changes, in replay order.
pub fn table_changes(table: &serde_json::Value) -> Vec<Change> {
    let mut changes: Vec<Change> = table["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                (lsn(c[0].as_str().unwrap()), c[1].as_i64().unwrap()),
                c[2].as_str().unwrap().to_owned(),
                c[3].as_i64().unwrap(),
            )
        })
        .collect();
    changes.sort();
    changes
}

/// The change files' changes, in file order, positions counted within each transaction.
pub fn file_changes(folder: &Path) -> Vec<Change> {
    let mut changes: Vec<Change> = Vec::new();
    for name in files_in(folder).iter().filter(|n| n.ends_with(".csv")) {
        let mut reader = csv::Reader::from_path(folder.join(name)).unwrap();
        for record in reader.records() {
            let record = record.unwrap();
            let commit = lsn(&record[0]);
            let position = match changes.last() {
                Some(((last, position), ..)) if *last == commit => position + 1,
                _ => 0,
            };
            changes.push((
                (commit, position),
                record[3].to_owned(),
                record[4].parse().unwrap(),
            ));
        }
    }
    changes
}

/// A JetStream stream of one test, deleted at the end.
pub struct Subject {
    pub url: String,
    pub subject: String,
    pub stream: String,
}

impl Subject {
    pub fn new(label: &str) -> Self {
        let id = format!("{label}_{}", std::process::id());
        Self {
            url: setting("EXPORT_EVENTS_TEST_NATS"),
            subject: format!("ee.test.{id}"),
            stream: format!("EE_TEST_{}", id.to_uppercase()),
        }
    }

    pub fn args(&self) -> Vec<String> {
        [
            "--to",
            &self.url,
            "--subject",
            &self.subject,
            "--create-stream",
            "--stream",
            &self.stream,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Every message of the stream, in order: (Nats-Msg-Id, JSON).
    pub fn messages(&self) -> Vec<(String, serde_json::Value)> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let js = jetstream::new(async_nats::connect(&self.url).await.unwrap());
            let mut stream = js.get_stream(&self.stream).await.unwrap();
            let last = stream.info().await.unwrap().state.last_sequence;
            let mut out = Vec::new();
            for seq in 1..=last {
                let m = stream.get_raw_message(seq).await.unwrap();
                let id = m.headers.get("Nats-Msg-Id").unwrap().as_str().to_owned();
                out.push((id, serde_json::from_slice(&m.payload).unwrap()));
            }
            out
        })
    }

    /// The changes of the messages, in stream order, as [`table_changes`] gives a table's.
    pub fn changes(&self) -> Vec<Change> {
        self.messages()
            .iter()
            .map(|(_, m)| {
                (
                    (
                        lsn(m["lsn"].as_str().unwrap()),
                        m["position"].as_i64().unwrap(),
                    ),
                    m["op"].as_str().unwrap().to_owned(),
                    m["id"].as_i64().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            if let Ok(client) = async_nats::connect(&self.url).await {
                let _ = jetstream::new(client).delete_stream(&self.stream).await;
            }
        });
    }
}

/// Two more transactions of events: an update of every 13th and ten inserts.
pub fn two_more_transactions(db: &TestDb) {
    db.sql("UPDATE events SET acknowledged = NOT acknowledged WHERE id % 13 = 0");
    db.sql(
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
         SELECT now() - i * interval '1 minute', now(), 1 + i % 5, false \
         FROM generate_series(1, 10) AS i",
    );
}

/// The messages of `topic` at `url` as a read_committed consumer reads them: per message
/// (partition, key, headers, JSON), partition by partition in offset order.
fn kafka_messages(
    url: &str,
    topic: &str,
) -> Vec<(i64, String, serde_json::Value, serde_json::Value)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/kafka_topic.py");
    let out = Command::new(setting("EXPORT_EVENTS_TEST_KAFKA_PYTHON"))
        .arg(script)
        .args([url.trim_start_matches("kafka://"), topic])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka_topic.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.into_iter()
        .map(|m| {
            (
                m[0].as_i64().unwrap(),
                m[2].as_str().unwrap_or_default().to_owned(),
                m[3].clone(),
                m[4].clone(),
            )
        })
        .collect()
}

/// The changes of the topic, sorted as replay orders them; checks on the way that every
/// message's key is its event's id, its headers its place, and that each key's changes come in
/// order within its partition.
pub fn kafka_changes(url: &str, topic: &str) -> Vec<Change> {
    let mut by_key: BTreeMap<String, Vec<(u64, i64)>> = BTreeMap::new();
    let mut changes: Vec<Change> = kafka_messages(url, topic)
        .into_iter()
        .map(|(_, key, headers, m)| {
            let change: Change = (
                (
                    lsn(m["lsn"].as_str().unwrap()),
                    m["position"].as_i64().unwrap(),
                ),
                m["op"].as_str().unwrap().to_owned(),
                m["id"].as_i64().unwrap(),
            );
            assert_eq!(key, change.2.to_string(), "keyed by event id");
            assert_eq!(headers["lsn"], m["lsn"]);
            assert_eq!(headers["position"], change.0 .1.to_string());
            assert!(headers["export-events.id"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{}:{}", m["lsn"].as_str().unwrap(), change.0 .1)));
            by_key.entry(key).or_default().push(change.0);
            change
        })
        .collect();
    for (key, places) in &by_key {
        assert!(
            places.windows(2).all(|w| w[0] < w[1]),
            "key {key}: its changes in order, once: {places:?}"
        );
    }
    changes.sort();
    changes
}
