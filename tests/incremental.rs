//! `--incremental` against real concurrency: writer threads insert events in transactions of
//! random size over their own PostgreSQL sessions (some held open across several export runs,
//! some rolled back, some back-dated, some flipping `acknowledged` of earlier events) while
//! incremental runs loop. Replaying every file in order, upserting by id, must give the table;
//! every committed insert must appear, untouched rows exactly once; no rolled-back event ever.
//! The same again with the exporter killed (SIGKILL) at each moment that matters, in turn.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;

/// A small deterministic random source (xorshift), one per thread.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// An interactive psql session: statements run when sent, transactions stay open between.
struct Session {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    fn open(url: &str) -> Self {
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url])
            .env("PGOPTIONS", "--client-min-messages=warning")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("psql runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            _child: child,
            stdin,
            stdout,
        }
    }

    /// Runs the statement `sql` and waits until it is done; panics if it failed.
    fn run(&mut self, sql: &str) {
        writeln!(self.stdin, "{sql};\n\\echo __done__ :ERROR").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "psql died");
            if let Some(failed) = line.trim_end().strip_prefix("__done__ ") {
                assert_eq!(failed, "false", "{sql} failed");
                return;
            }
        }
    }
}

/// What the writers did.
#[derive(Default)]
struct Ledger {
    committed: BTreeSet<i64>,
    rolled_back: BTreeSet<i64>,
    /// Ids whose `acknowledged` a committed transaction flipped.
    updated: BTreeSet<i64>,
}

/// Starts `threads` writers doing `transactions` each; returns their handles.
fn writers(
    url: &str,
    threads: u64,
    transactions: u64,
    ledger: &Arc<Mutex<Ledger>>,
) -> Vec<thread::JoinHandle<()>> {
    let next_id = Arc::new(AtomicI64::new(1_000_000));
    (0..threads)
        .map(|t| {
            let (url, ledger, next_id) = (url.to_owned(), ledger.clone(), next_id.clone());
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t + 1) * 0x1234_5678));
                let mut session = Session::open(&url);
                for _ in 0..transactions {
                    session.run("BEGIN");
                    let ids: Vec<i64> = (0..1 + rng.below(25))
                        .map(|_| next_id.fetch_add(1, Ordering::SeqCst))
                        .collect();
                    let rows: Vec<String> = ids
                        .iter()
                        .map(|id| {
                            // One in five back-dated by up to 30 days, like a device that was offline.
                            let back = if rng.below(5) == 0 { rng.below(2_592_000) } else { rng.below(5) };
                            format!(
                                "({id}, now() - interval '{back} seconds' - interval '{} microseconds', \
                                 now(), {}, {}, {}, {})",
                                rng.below(1_000_000),
                                1 + rng.below(10),
                                rng.below(3) == 0,
                                if rng.below(10) == 0 { "NULL".into() } else { id.to_string() },
                                1 + rng.below(200),
                            )
                        })
                        .collect();
                    session.run(&format!(
                        "INSERT INTO events (id, \"timestamp\", created_at, rule_id, acknowledged, \
                         trigger_telemetry_id, trigger_device_id) VALUES {}",
                        rows.join(", ")
                    ));
                    let flip = {
                        let ledger = ledger.lock().unwrap();
                        let known: Vec<i64> = ledger.committed.iter().copied().collect();
                        (rng.below(3) == 0 && !known.is_empty())
                            .then(|| known[rng.below(known.len() as u64) as usize])
                    };
                    if let Some(id) = flip {
                        session.run(&format!(
                            "UPDATE events SET acknowledged = NOT acknowledged WHERE id = {id}"
                        ));
                    }
                    // Most transactions are short; one in eight stays open across several runs.
                    let hold = if rng.below(8) == 0 { 400 + rng.below(1_200) } else { rng.below(60) };
                    thread::sleep(Duration::from_millis(hold));
                    let commit = rng.below(5) != 0;
                    session.run(if commit { "COMMIT" } else { "ROLLBACK" });
                    let mut ledger = ledger.lock().unwrap();
                    if commit {
                        ledger.committed.extend(&ids);
                        ledger.updated.extend(flip);
                    } else {
                        ledger.rolled_back.extend(&ids);
                    }
                }
            })
        })
        .collect()
}

/// `export-events --incremental` into `dir/out`, state in `dir`.
fn incremental(dir: &Path, db: &TestDb) -> Command {
    let mut cmd = export_events(dir);
    cmd.args([
        "--incremental",
        "--quiet",
        "--database-url",
        &db.url(),
        "--output",
        "out/events_{time}.csv",
    ]);
    cmd
}

/// Rows of a CSV file by id, as text.
fn csv_rows(path: &Path) -> Vec<(i64, Vec<String>)> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader
        .records()
        .map(|r| {
            let record = r.unwrap();
            let fields: Vec<String> = record.iter().map(str::to_owned).collect();
            (fields[0].parse().unwrap(), fields)
        })
        .collect()
}

/// Replays every export file in name order; returns the table by id and how often each id came.
fn replay(out: &Path) -> (BTreeMap<i64, Vec<String>>, BTreeMap<i64, usize>) {
    let (mut table, mut seen) = (BTreeMap::new(), BTreeMap::new());
    let exports = files_in(out);
    let exports = exports
        .iter()
        .filter(|n| !n.starts_with('.') && !n.ends_with(".manifest.json"));
    for name in exports {
        for (id, row) in csv_rows(&out.join(name)) {
            table.insert(id, row);
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    (table, seen)
}

/// Runs `export` until replaying `out` gives `expected` (at most 100 times); returns the replay.
fn settle(
    out: &Path,
    expected: &BTreeMap<i64, Vec<String>>,
    mut export: impl FnMut(),
) -> (BTreeMap<i64, Vec<String>>, BTreeMap<i64, usize>) {
    for _ in 0..100 {
        export();
        let replayed = replay(out);
        if &replayed.0 == expected {
            return replayed;
        }
        thread::sleep(Duration::from_millis(100));
    }
    replay(out)
}

/// Runs the writers while `exporter` loops, then a final run; checks the replay.
fn check_under_concurrency(label: &str, mut exporter: impl FnMut(&Path, &TestDb)) {
    let db = TestDb::sample(label);
    let dir = scratch();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let handles = writers(&db.url(), 4, 40, &ledger);
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        thread::spawn(move || {
            handles.into_iter().for_each(|h| h.join().unwrap());
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut loops = 0;
    while !done.load(Ordering::SeqCst) || loops < 25 {
        exporter(dir.path(), &db);
        loops += 1;
    }
    watcher.join().unwrap();
    let full = dir.path().join("full.csv");
    Run::of(export_events(dir.path()).args([
        "--quiet",
        "--database-url",
        &db.url(),
        "-o",
        "full.csv",
    ]))
    .success();
    let expected: BTreeMap<i64, Vec<String>> = csv_rows(&full).into_iter().collect();
    // Transactions still open elsewhere on the server (other tests) can hold the horizon back:
    // the last rows may take a few more runs, but they must come.
    let out = dir.path().join("out");
    let (table, seen) = settle(&out, &expected, || {
        Run::of(&mut incremental(dir.path(), &db)).success();
    });
    assert_eq!(table.len(), expected.len(), "same ids");
    assert!(table == expected, "replaying the files gives the table");
    // Runs after a killed one removed the partial files it left.
    for folder in ["out", "exports"] {
        let partial: Vec<String> = files_in(&dir.path().join(folder))
            .into_iter()
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(partial.is_empty(), "{folder}: {partial:?}");
    }
    let ledger = ledger.lock().unwrap();
    assert!(
        ledger.committed.len() > 100
            && !ledger.rolled_back.is_empty()
            && !ledger.updated.is_empty()
    );
    for id in &ledger.committed {
        let times = seen.get(id).copied().unwrap_or(0);
        if ledger.updated.contains(id) {
            assert!(times >= 1, "updated event {id} appears");
        } else {
            assert_eq!(times, 1, "event {id} appears exactly once");
        }
    }
    for id in (1..=15).filter(|id| !ledger.updated.contains(id)) {
        assert_eq!(seen.get(&id), Some(&1), "sample event {id} exactly once");
    }
    for id in &ledger.rolled_back {
        assert!(
            !seen.contains_key(id),
            "rolled-back event {id} never appears"
        );
    }
}

#[test]
fn replaying_incremental_files_gives_the_table_under_concurrent_writers() {
    check_under_concurrency("incr_concurrent", |dir, db| {
        Run::of(&mut incremental(dir, db)).success();
    });
}

/// Every moment an incremental run can be killed at: its files named in the state but not
/// written, mid-stream (partial files), and its files in place but the cursor not yet moved.
const KILL_POINTS: [&str; 3] = [
    "incremental.pending-saved",
    "stream.batch",
    "incremental.committed",
];

#[test]
fn runs_killed_at_each_moment_lose_and_repeat_nothing() {
    let mut kills = [0; KILL_POINTS.len()];
    let mut next = 0;
    check_under_concurrency("incr_sigkill", |dir, db| {
        let point = KILL_POINTS[next];
        match run_to(&mut incremental(dir, db), point) {
            Ok(child) => {
                signal(child.id(), "KILL");
                assert_eq!(finish(child).code, None);
                kills[next] += 1;
                next = (next + 1) % KILL_POINTS.len();
            }
            // Nothing new to stream or commit this time: the run ended normally; try again.
            Err(run) => {
                run.success();
            }
        }
    });
    assert!(
        kills.iter().all(|&k| k > 0),
        "killed at every point: {kills:?} for {KILL_POINTS:?}"
    );
}

#[test]
fn a_second_run_on_the_same_state_is_refused_with_the_holders_pid() {
    let db = TestDb::sample("incr_overlap");
    // The first run must see all 15: no other test's transaction may hold the horizon back.
    db.settle();
    let dir = scratch();
    let first = spawn_stopped_at(
        &mut run_cmd(dir.path(), &db, &["-q"]),
        "incremental.pending-saved",
    );
    let second = run_in(dir.path(), &db, &["-q"]).failure(1, "state file ");
    let holder = format!("is in use by another export-events run (pid {}", first.id());
    assert!(second.stderr.contains(&holder), "{second}");
    signal(first.id(), "CONT");
    let first = finish(first).success();
    assert!(
        first.stdout.starts_with("Exported 15 events to "),
        "{first}"
    );
}

/// A plain export of the same `{time}` template while an incremental run is in its commit:
/// every run locks its own files, so the export's sweep of killed runs leaves the live run's
/// temporaries and journal alone, and both commit whole.
#[test]
fn a_template_export_beside_a_live_incremental_run_leaves_its_commit_alone() {
    let db = TestDb::sample("incr_beside");
    db.settle();
    let dir = scratch();
    let template = "exports/events_{time}.csv";
    std::fs::create_dir_all(dir.path().join("exports")).unwrap();
    let live = spawn_stopped_at(
        &mut run_cmd(dir.path(), &db, &["-q", "-o", template]),
        "commit.staged",
    );
    std::thread::sleep(Duration::from_millis(5));
    Run::of(export_events(dir.path()).args(["-q", "--database-url", &db.url(), "-o", template]))
        .success();
    signal(live.id(), "CONT");
    let live = finish(live).success();
    assert!(live.stdout.starts_with("Exported 15 events to "), "{live}");
    let exports = dir.path().join("exports");
    let csv: Vec<String> = files_in(&exports)
        .into_iter()
        .filter(|f| f.starts_with("events_") && f.ends_with(".csv"))
        .collect();
    assert_eq!(csv.len(), 2, "both runs' files: {:?}", files_in(&exports));
    for name in csv {
        let records = csv::Reader::from_path(exports.join(&name))
            .unwrap()
            .records()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .len();
        assert_eq!(records, 15, "{name} whole: 15 events");
    }
}

/// One incremental run in `dir` with `args`, not yet run.
fn run_cmd(dir: &Path, db: &TestDb, args: &[&str]) -> Command {
    let mut cmd = export_events(dir);
    cmd.args(["--incremental", "--database-url", &db.url()])
        .args(args);
    cmd
}

/// One incremental run in `dir` with `args`.
fn run_in(dir: &Path, db: &TestDb, args: &[&str]) -> Run {
    Run::of(&mut run_cmd(dir, db, args))
}

fn insert_events(db: &TestDb, ids: std::ops::Range<i64>) {
    db.sql(&format!(
        "INSERT INTO events (id, \"timestamp\", created_at, rule_id, acknowledged) \
         SELECT i, now() - i * interval '1 hour', now(), 1, false \
         FROM generate_series({}, {}) AS i",
        ids.start,
        ids.end - 1
    ));
}

/// Runs until a run exports something: transactions still open anywhere on the server (other
/// tests included) hold the horizon back, which delays rows, never loses them.
fn until_exported(dir: &Path, db: &TestDb, args: &[&str]) -> Vec<Run> {
    let mut runs = Vec::new();
    for _ in 0..300 {
        let run = run_in(dir, db, args).success();
        let done = run.stdout != "Exported 0 events\n";
        runs.push(run);
        if done {
            return runs;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing exported in 300 runs: {}", runs.last().unwrap());
}

#[test]
fn rows_frozen_by_vacuum_since_the_last_run_are_not_missed() {
    let db = TestDb::sample("incr_freeze");
    let dir = scratch();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let template = ["--output", "out/events_{time}.csv"];
    until_exported(dir.path(), &db, &template);
    insert_events(&db, 100..110);
    // Frozen before any run saw them: their window must still find them, once.
    db.sql("VACUUM (FREEZE) events");
    let full = dir.path().join("full.csv");
    Run::of(export_events(dir.path()).args(["-q", "--database-url", &db.url(), "-o", "full.csv"]))
        .success();
    let expected: BTreeMap<i64, Vec<String>> = csv_rows(&full).into_iter().collect();
    let (table, seen) = settle(&out, &expected, || {
        run_in(dir.path(), &db, &template).success();
    });
    assert!(table == expected, "the frozen rows came");
    assert!(seen.values().all(|&n| n == 1), "each row once: {seen:?}");
}

#[test]
fn runs_report_what_they_wrote_and_nothing_new_writes_no_file() {
    let db = TestDb::sample("incr_report");
    let dir = scratch();
    let runs = until_exported(dir.path(), &db, &[]);
    let first = runs.last().unwrap();
    let path = first
        .stdout
        .trim()
        .strip_prefix("Exported 15 events to ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    assert!(
        path.starts_with(&dir.path().join("exports/events_").display().to_string()),
        "{path}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        compat_bytes("expected_all.csv"),
        "the first rows are the full export, byte for byte"
    );
    assert_eq!(
        run_in(dir.path(), &db, &[]).success().stdout,
        "Exported 0 events\n"
    );
    let empty = run_in(dir.path(), &db, &["--write-empty", "--format", "both"]).success();
    assert!(empty.stdout.starts_with("Exported 0 events to "), "{empty}");
    assert!(empty.stdout.contains(".parquet"), "{empty}");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("exports/.export-events-state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["runs"], runs.len() + 2);
    assert_eq!(state["last_run"]["files"].as_array().unwrap().len(), 2);
    assert_eq!(state["pending"].as_array().unwrap().len(), 0);
}

#[test]
fn a_state_of_another_database_or_a_late_since_is_refused() {
    let (a, b) = (
        TestDb::sample("incr_state_a"),
        TestDb::sample("incr_state_b"),
    );
    let dir = scratch();
    run_in(dir.path(), &a, &["-q"]).success();
    run_in(dir.path(), &b, &["-q"]).failure(2, "--reset-state");
    run_in(dir.path(), &a, &["--since", "2020-01-01"]).failure(2, "--since only applies");
    run_in(
        dir.path(),
        &b,
        &["-q", "--reset-state", "--state", "b.json"],
    )
    .success();
    run_in(dir.path(), &b, &["-q", "--state", "b.json"]).success();
}

#[test]
fn bad_incremental_arguments_touch_nothing() {
    let db = TestDb::sample("incr_args");
    let dir = scratch();
    run_in(dir.path(), &db, &["--output", "events.csv"]).failure(2, "needs {time}");
    run_in(dir.path(), &db, &["--state", "missing/s.json"]).failure(2, "--state missing/s.json");
    let duckdb = Run::of(export_events(dir.path()).args(["--incremental", "--demo"]));
    duckdb.failure(2, "give a PostgreSQL source");
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}
