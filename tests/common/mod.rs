//! Shared by the integration tests: a PostgreSQL database of their own, a scratch working
//! directory, and the real `export-events` binary run in it with a clean environment.
//!
//! The server is the one `.ci/run` makes sure of (127.0.0.1:5432, user postgres, trust auth);
//! `EXPORT_EVENTS_TEST_PG` points elsewhere (a `postgres://user@host:port` base URL).
#![allow(dead_code)] // each test file uses its own part of this module

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The compatibility fixtures: schema, data and the original command's CSV.
pub fn compat(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/compat")
        .join(name)
}

pub fn compat_bytes(name: &str) -> Vec<u8> {
    std::fs::read(compat(name)).unwrap()
}

fn server() -> String {
    std::env::var("EXPORT_EVENTS_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database created for one test and dropped when it ends.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    /// An empty database with a unique name.
    pub fn empty(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "ee_{label}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        psql_at(
            &format!("{}/postgres", server()),
            &[&format!("CREATE DATABASE {name}")],
            &[],
        );
        Self { name }
    }

    /// A database with the IoT Hub schema and the given SQL files of `fixtures/compat`.
    pub fn with(label: &str, files: &[&str]) -> Self {
        let db = Self::empty(label);
        let mut all = vec!["schema.sql"];
        all.extend_from_slice(files);
        let paths: Vec<PathBuf> = all.iter().map(|f| compat(f)).collect();
        psql_at(&db.url(), &[], &paths);
        db
    }

    /// The sample database of the compatibility contract.
    pub fn sample(label: &str) -> Self {
        Self::with(label, &["sample.sql"])
    }

    pub fn url(&self) -> String {
        format!("{}/{}", server(), self.name)
    }

    /// Runs SQL in this database (fails the test on error).
    pub fn sql(&self, sql: &str) {
        psql_at(&self.url(), &[sql], &[]);
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-q", "-d", &format!("{}/postgres", server()), "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

fn psql_at(url: &str, commands: &[&str], files: &[PathBuf]) {
    let mut cmd = Command::new("psql");
    cmd.args(["-q", "-X", "-v", "ON_ERROR_STOP=1", "-d", url]);
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    for f in files {
        cmd.arg("-f").arg(f);
    }
    let out = cmd
        .env("PGOPTIONS", "--client-min-messages=warning")
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scratch working directory, removed at the end of the test.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Environment variables that choose a source; cleared so the host's never leak into a test.
const SOURCE_VARS: [&str; 13] = [
    "DATABASE_URL",
    "DB_NAME",
    "DB_USER",
    "DB_PASSWORD",
    "DB_HOST",
    "DB_PORT",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGSERVICE",
];

/// The real binary, run in `dir` with no source settings in its environment.
pub fn export_events(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_export-events"));
    cmd.current_dir(dir);
    for var in SOURCE_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// What a run did, with both streams shown when an assertion fails.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(cmd: &mut Command) -> Self {
        let Output {
            status,
            stdout,
            stderr,
        } = cmd.output().expect("export-events runs");
        Self {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Asserts exit 0 and returns self.
    pub fn success(self) -> Self {
        assert_eq!(self.code, Some(0), "expected success\n{self}");
        self
    }

    /// Asserts the exit status and a one-line `error:` message containing `needle`.
    pub fn failure(self, code: i32, needle: &str) -> Self {
        assert_eq!(self.code, Some(code), "expected exit {code}\n{self}");
        assert!(
            self.stdout.is_empty(),
            "nothing on stdout on failure\n{self}"
        );
        assert!(self.stderr.starts_with("error: "), "one error line\n{self}");
        assert_eq!(
            self.stderr.trim_end().lines().count(),
            1,
            "one error line\n{self}"
        );
        assert!(
            self.stderr.contains(needle),
            "stderr should mention {needle:?}\n{self}"
        );
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The files in `dir` (names), sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The success line for `path`.
pub fn exported(rows: usize, path: &Path) -> String {
    format!("Exported {rows} events to {}\n", path.display())
}

/// Every event of `db` as PostgreSQL itself reports it, in export order:
/// `(id, epoch microseconds, rule, acknowledged, telemetry id, device id)`.
pub type EventRow = (i64, i64, String, bool, Option<i64>, Option<i64>);

pub fn events_in_postgres(db: &TestDb, since: Option<&str>) -> Vec<EventRow> {
    let filter = since.map_or(String::new(), |s| format!("WHERE e.\"timestamp\" >= '{s}'"));
    let sql = format!(
        "SELECT coalesce(json_agg(json_build_array(e.id::text, \
         (extract(epoch FROM e.\"timestamp\") * 1000000)::bigint::text, r.name, e.acknowledged, \
         e.trigger_telemetry_id::text, e.trigger_device_id::text) \
         ORDER BY e.\"timestamp\" DESC, e.id DESC), '[]') \
         FROM events e JOIN rules r ON r.id = e.rule_id {filter}"
    );
    let out = Command::new("psql")
        .args(["-X", "-qAt", "-d", &db.url(), "-c", &sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let int = |v: &serde_json::Value| v.as_str().map(|s| s.parse::<i64>().unwrap());
    rows.iter()
        .map(|r| {
            (
                int(&r[0]).unwrap(),
                int(&r[1]).unwrap(),
                r[2].as_str().unwrap().to_owned(),
                r[3].as_bool().unwrap(),
                int(&r[4]),
                int(&r[5]),
            )
        })
        .collect()
}
