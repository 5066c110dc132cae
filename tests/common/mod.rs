//! Shared by the integration tests: a PostgreSQL database of their own, a scratch working
//! directory, the real `export-events` binary run in it with a clean environment, and the
//! means to stop it at a named point and inject a fault there.
//!
//! The server is the throwaway cluster `scripts/test` starts (`scripts/test-cluster`), given as
//! `EXPORT_EVENTS_TEST_PG` (a `postgres://user@host:port` base URL of a superuser).
#![allow(dead_code)] // each test file uses its own part of this module

pub mod cluster;
pub mod feed;
pub mod lake;
pub mod leftovers;
pub mod own_s3;

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

/// A setting `scripts/test` provides; its absence fails the test with what to do.
/// The small filesystem of the full-disk tests, held by one test at a time: while one test
/// fills it, another's ordinary writes there would fail too.
pub fn small_disk() -> (PathBuf, std::sync::MutexGuard<'static, ()>) {
    static DISK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let held = DISK.lock().unwrap_or_else(|e| e.into_inner());
    (
        PathBuf::from(setting("EXPORT_EVENTS_TEST_SMALL_DISK")),
        held,
    )
}

pub fn setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with scripts/test, which starts a throwaway \
             PostgreSQL cluster and the other test services"
        )
    })
}

fn server() -> String {
    setting("EXPORT_EVENTS_TEST_PG")
}

/// `host` and `port` of the test server.
pub fn server_address() -> (String, String) {
    let base = server();
    let authority = base.rsplit('@').next().unwrap().to_owned();
    let (host, port) = authority.rsplit_once(':').unwrap();
    (host.to_owned(), port.to_owned())
}

/// A database created for one test and dropped when it ends.
pub struct TestDb {
    pub name: String,
    /// The server's base URL (`postgres://user@host:port`).
    pub server: String,
}

impl TestDb {
    /// An empty database with a unique name.
    pub fn empty(label: &str) -> Self {
        Self::empty_on(&server(), label)
    }

    /// An empty database with a unique name on the server `server`.
    pub fn empty_on(server: &str, label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "ee_{label}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        psql_at(
            &format!("{server}/postgres"),
            &[&format!("CREATE DATABASE {name}")],
            &[],
        );
        Self {
            name,
            server: server.to_owned(),
        }
    }

    /// A database with the IoT Hub schema and the given SQL files of `fixtures/compat`.
    pub fn with(label: &str, files: &[&str]) -> Self {
        Self::schema_and(Self::empty(label), files)
    }

    fn schema_and(db: Self, files: &[&str]) -> Self {
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

    /// The sample database on the server `server`.
    pub fn sample_on(server: &str, label: &str) -> Self {
        Self::schema_and(Self::empty_on(server, label), &["sample.sql"])
    }

    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// A database of `rows` generated events (`export-events generate`).
    pub fn generated(label: &str, rows: u64) -> Self {
        Self::generated_as(label, "hub", rows)
    }

    /// A database of `rows` generated events of `shape` (`hub` or `ordered`).
    pub fn generated_as(label: &str, shape: &str, rows: u64) -> Self {
        let db = Self::empty(label);
        let dir = scratch();
        Run::of(export_events(dir.path()).args([
            "generate",
            "-q",
            "--shape",
            shape,
            "--rows",
            &rows.to_string(),
            "--database-url",
            &db.url(),
        ]))
        .success();
        db
    }

    /// Waits until every transaction begun on the server so far has ended: until the snapshot
    /// horizon (`pg_snapshot_xmin`) has passed the next transaction id as of now. An incremental
    /// run exports a transaction's rows once the horizon is past it, and the horizon is
    /// server-wide, so another test's open transaction delays rows (never loses them); a test
    /// that expects rows in a given run waits here first, rather than hoping nothing is open.
    pub fn settle(&self) {
        let next = self.value("SELECT pg_snapshot_xmax(pg_current_snapshot())");
        let passed = format!("SELECT pg_snapshot_xmin(pg_current_snapshot()) >= '{next}'::xid8");
        for _ in 0..1200 {
            if self.value(&passed) == "t" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("a transaction on the test server stayed open for a minute; nothing settles");
    }

    /// Makes `events.timestamp` what Django makes with USE_TZ = False: `timestamp without time
    /// zone`, the same wall clock (read as UTC).
    pub fn use_tz_false(&self) {
        self.sql(
            "ALTER TABLE events ALTER COLUMN \"timestamp\" TYPE timestamp without time zone \
             USING \"timestamp\" AT TIME ZONE 'UTC'",
        );
    }

    /// Runs SQL in this database (fails the test on error).
    pub fn sql(&self, sql: &str) {
        psql_at(&self.url(), &[sql], &[]);
    }

    /// The single value `sql` returns, as text.
    pub fn value(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-qAt", "-d", &self.url(), "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Ends every other session on this database, as an administrator would
    /// (`pg_terminate_backend`); returns how many there were.
    pub fn terminate_sessions(&self) -> usize {
        self.value(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .parse()
        .unwrap()
    }
}

/// A slot (and its publication) on a test database, dropped at the end of the test even when it
/// fails: a forgotten slot keeps WAL on the server for ever.
pub struct Slot<'a> {
    pub db: &'a TestDb,
    pub name: String,
}

impl<'a> Slot<'a> {
    /// `export-events changes --create-slot` in `dir`.
    pub fn create(db: &'a TestDb, dir: &Path) -> Self {
        let slot = Self {
            db,
            name: db.name.to_lowercase(),
        };
        let run = Run::of(&mut slot.changes(dir, &["--create-slot"])).success();
        assert!(
            run.stdout
                .starts_with(&format!("Created slot {} at LSN ", slot.name)),
            "{run}"
        );
        slot
    }

    /// `export-events changes --slot <this> ...args` in `dir`, not yet run.
    pub fn changes(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = export_events(dir);
        cmd.args([
            "changes",
            "--slot",
            &self.name,
            "--database-url",
            &self.db.url(),
        ])
        .args(args);
        cmd
    }

    /// A slot named `name` on `db`, created by `create` (a `changes --create-slot` command).
    pub fn created(db: &'a TestDb, name: &str, create: impl FnOnce(&Slot) -> Run) -> Self {
        let slot = Self {
            db,
            name: name.to_owned(),
        };
        let run = create(&slot).success();
        assert!(run.stdout.starts_with("Created slot "), "{run}");
        slot
    }

    /// How much WAL the server keeps for the slot, in bytes.
    pub fn retained_wal(&self) -> i64 {
        self.db
            .value(&format!(
                "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots \
                 WHERE slot_name = '{}'",
                self.name
            ))
            .parse()
            .unwrap()
    }

    /// Where the slot has been confirmed up to.
    pub fn confirmed(&self) -> String {
        self.db.value(&format!(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
            self.name
        ))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", "-d", &self.db.url(), "-c"])
            .arg(format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = '{0}'; DROP PUBLICATION IF EXISTS {0}",
                self.name
            ))
            .output();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-q", "-d", &format!("{}/postgres", self.server), "-c"])
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

/// Files under `root`, recursively, relative, sorted.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
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
    event_rows(&rows)
}

/// Rows of JSON arrays `[id, epoch microseconds, rule, acknowledged, telemetry id, device id]`
/// (integers as numbers or as text) as [`EventRow`]s.
pub fn event_rows(rows: &[serde_json::Value]) -> Vec<EventRow> {
    let int = |v: &serde_json::Value| {
        v.as_i64()
            .or_else(|| v.as_str().map(|s| s.parse::<i64>().unwrap()))
    };
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

/// Every row of a Parquet file, as one batch.
pub fn parquet_values(path: &Path) -> arrow::record_batch::RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// A successful export of `db` to CSV and Parquet in `dir` with `args`.
pub fn export_pair(dir: &Path, db: &TestDb, args: &[&str]) -> Run {
    Run::of(
        export_events(dir)
            .args(["--database-url", &db.url(), "--format", "csv,parquet"])
            .args(args),
    )
    .success()
}

/// Exports `db` to `out.csv` with `args`, stopped at its first batch while `change` commits
/// (rows whose telemetry id starts with 77700000), then checks that stderr names `plan` and that
/// the file holds the rows of the export's snapshot, no more and none of the change.
pub fn reads_one_snapshot(db: &TestDb, args: &[&str], change: &str, plan: &str) {
    let dir = scratch();
    let before: usize = db.value("SELECT count(*) FROM events").parse().unwrap();
    let mut cmd = export_events(dir.path());
    cmd.args(["--database-url", &db.url(), "-o", "out.csv"])
        .args(args);
    let child = spawn_stopped_at(&mut cmd, "stream.batch");
    db.sql(change);
    signal(child.id(), "CONT");
    let run = finish(child).success();
    assert!(run.stderr.contains(plan), "{run}");
    let mut reader = csv::Reader::from_path(dir.path().join("out.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), before, "the rows of the snapshot, no more");
    assert!(
        rows.iter().all(|r| !r[4].starts_with("77700000")),
        "nothing of the later transaction"
    );
}

/// Kills an export of `db` to `out.csv` with `args` where it stops at `point`, checks that it
/// left temporary files, and that the next run removes them.
pub fn killed_run_is_cleaned_up(db: &TestDb, args: &[&str], point: &str) {
    let dir = scratch();
    let mut cmd = export_events(dir.path());
    cmd.args(["--database-url", &db.url(), "-q", "-o", "out.csv"])
        .args(args);
    let child = spawn_stopped_at(&mut cmd, point);
    signal(child.id(), "KILL");
    assert_eq!(finish(child).code, None);
    assert!(
        files_in(dir.path()).iter().any(|f| f.ends_with(".tmp")),
        "{:?}",
        files_in(dir.path())
    );
    Run::of(export_events(dir.path()).args(["--database-url", &db.url(), "-q", "-o", "out.csv"]))
        .success();
    assert_eq!(files_in(dir.path()), ["out.csv", "out.csv.manifest.json"]);
}

/// Runs `cmd` with `EXPORT_EVENTS_STOP_AT=point`, and waits until it has stopped itself there.
pub fn spawn_stopped_at(cmd: &mut Command, point: &str) -> std::process::Child {
    match run_to(cmd, point) {
        Ok(child) => child,
        Err(run) => panic!("ended before reaching {point}\n{run}"),
    }
}

/// Runs `cmd` until it stops itself at `point` (`Ok`, still stopped there) or ends without
/// reaching it (`Err`, how it ended).
pub fn run_to(cmd: &mut Command, point: &str) -> Result<std::process::Child, Run> {
    let mut child = cmd
        .env("EXPORT_EVENTS_STOP_AT", point)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("export-events runs");
    let started = std::time::Instant::now();
    loop {
        if is_stopped(child.id()) {
            return Ok(child);
        }
        if child.try_wait().unwrap().is_some() {
            return Err(finish(child));
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "never reached {point}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Whether the process is stopped (SIGSTOP), from /proc.
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(") ")?.1.to_owned();
            after.chars().next()
        })
        == Some('T')
}

/// Sends `signal` (`"INT"`, `"KILL"`, `"CONT"`...) to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Runs `cmd` to `point`, sends it `sig` (`KILL` or `INT`) there and lets it go on: killed,
/// it ends there; interrupted, it ends cleanly (exit 0 when it had finished, 130 otherwise).
pub fn signalled_at(cmd: &mut Command, point: &str, sig: &str) -> Run {
    let child = spawn_stopped_at(cmd, point);
    signal(child.id(), sig);
    signal(child.id(), "CONT");
    let ended = finish(child);
    match sig {
        "KILL" => assert_eq!(ended.code, None, "killed at {point}"),
        _ => assert!(
            matches!(ended.code, Some(0) | Some(130)),
            "SIG{sig} at {point}\n{ended}"
        ),
    }
    ended
}

/// Waits for a child started by [`spawn_stopped_at`] (or any piped child) to end.
pub fn finish(child: std::process::Child) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
