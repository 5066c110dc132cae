//! The change feed's shared test pieces: the table as the export writes it, replaying change
//! rows on it, and a mix of writes that covers every kind of change.

use std::collections::BTreeMap;
use std::path::Path;

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
