//! The fault matrix: every output kind × every fault point of its runs × {SIGKILL, SIGINT}.
//! Each case exports once (the old output), adds rows, runs again stopped at the point, sends
//! the signal, then checks the promise: what a manifest (or a table's snapshot) describes
//! verifies (old or new, never a mix), the next run succeeds, verifies, holds every row of the
//! table, and leaves nothing behind that a killed run wrote: no hidden file beside a local
//! output, no incomplete upload or stray object in S3, no note, lock or record in the state
//! folder, no spool or spill in `$TMPDIR`, no data file a table does not reference. A full
//! export into a table goes into a new table each run (a table that holds rows is refused), so
//! there the next run is of another output on the same store, and still removes what the killed
//! one left. A kind or a point added to the lists below joins every case by itself; a fault
//! point added to the code and missing here fails `every_fault_point_is_in_a_matrix`.
//!
//! The server ending the session and a full disk are forced the same way in `faults.rs`; the
//! change feed's points in `changes.rs` and `feed.rs`; incremental runs under concurrent writers
//! in `incremental.rs`.

mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::leftovers::*;
use common::*;

/// An output kind: its name, the export's arguments (`{out}` is the case's output folder, or
/// S3 prefix; `{dir}` its local folder; `{table}` the table of the run), whether its store is
/// S3, whether its runs are incremental (each run adds what changed), and whether it is a table.
struct Kind {
    name: &'static str,
    args: &'static [&'static str],
    s3: bool,
    incremental: bool,
    table: Table,
}

/// Whether a kind writes a table, and how its runs name it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    /// Files, not a table.
    No,
    /// The same table every run.
    Same,
    /// A new table every run (a whole export into a table that holds rows is refused).
    New,
}

/// A whole export into a table of a SQLite catalog, read sequentially (its sort spills).
const FULL_TABLE: &[&str] = &[
    "--read",
    "scan",
    "--jobs",
    "2",
    "--output",
    "iceberg:mx.{table}",
    "--catalog",
    "sqlite:{dir}/lake.db",
    "--warehouse",
    "{out}/lake",
];

const KINDS: &[Kind] = &[
    Kind {
        name: "file",
        args: &["--format", "csv", "-o", "{out}/x.csv"],
        s3: false,
        incremental: false,
        table: Table::No,
    },
    Kind {
        name: "pair",
        args: &["--format", "csv,parquet", "-o", "{out}/x.csv"],
        s3: false,
        incremental: false,
        table: Table::No,
    },
    Kind {
        name: "pair_parquet_first",
        args: &["--format", "parquet,csv", "-o", "{out}/x.parquet"],
        s3: false,
        incremental: false,
        table: Table::No,
    },
    Kind {
        name: "compressed",
        args: &["--format", "csv,parquet", "-o", "{out}/x.csv.zst"],
        s3: false,
        incremental: false,
        table: Table::No,
    },
    Kind {
        name: "dataset",
        args: &[
            "--partition-by",
            "day",
            "--format",
            "csv,parquet",
            "-o",
            "{out}/x.csv",
        ],
        s3: false,
        incremental: false,
        table: Table::No,
    },
    Kind {
        name: "dataset_rule",
        args: &[
            "--partition-by",
            "rule",
            "--format",
            "parquet",
            "-o",
            "{out}/x.parquet",
        ],
        s3: false,
        incremental: false,
        table: Table::No,
    },
    Kind {
        name: "template_kept",
        args: &[
            "--format",
            "csv,parquet",
            "-o",
            "{out}/d_{time}.csv",
            "--keep",
            "2",
        ],
        s3: false,
        incremental: false,
        table: Table::No,
    },
    Kind {
        name: "incremental",
        args: &[
            "--incremental",
            "--format",
            "csv,parquet",
            "-o",
            "{out}/e_{time}.csv",
        ],
        s3: false,
        incremental: true,
        table: Table::No,
    },
    Kind {
        name: "incremental_dataset",
        args: &[
            "--incremental",
            "--partition-by",
            "month",
            "--format",
            "parquet",
            "-o",
            "{out}/e_{time}.parquet",
        ],
        s3: false,
        incremental: true,
        table: Table::No,
    },
    Kind {
        name: "s3_pair",
        // Read sequentially: its sort spills, in $TMPDIR for an object storage output.
        args: &[
            "--read",
            "scan",
            "--jobs",
            "2",
            "--format",
            "csv,parquet",
            "-o",
            "{out}/x.csv",
        ],
        s3: true,
        incremental: false,
        table: Table::No,
    },
    Kind {
        name: "s3_dataset",
        // By month: a part is a multipart upload, and hundreds of days per run would make this
        // kind most of the matrix's time without adding a case.
        args: &[
            "--partition-by",
            "month",
            "--format",
            "csv,parquet",
            "-o",
            "{out}/x.csv",
        ],
        s3: true,
        incremental: false,
        table: Table::No,
    },
    Kind {
        name: "iceberg",
        args: FULL_TABLE,
        s3: false,
        incremental: false,
        table: Table::New,
    },
    Kind {
        name: "iceberg_s3",
        args: FULL_TABLE,
        s3: true,
        incremental: false,
        table: Table::New,
    },
    Kind {
        name: "iceberg_incremental",
        args: &[
            "--incremental",
            "--output",
            "iceberg:mx.{table}",
            "--catalog",
            "sqlite:{dir}/lake.db",
            "--warehouse",
            "{out}/lake",
        ],
        s3: false,
        incremental: true,
        table: Table::Same,
    },
];

/// The fault points of an export, in the order a run reaches them.
const EXPORT_POINTS: &[&str] = &[
    "export.streaming",
    "commit.staged",
    "commit.between-renames",
    "commit.done",
];
/// Where only incremental runs stop.
const INCREMENTAL_POINTS: &[&str] = &["incremental.pending-saved", "incremental.committed"];
/// Where a run into a table stops (besides `export.streaming`); the change feed's into a table
/// are covered by `iceberg_changes.rs`.
const TABLE_POINTS: &[&str] = &["table.files-written", "table.committed"];

const SIGNALS: &[&str] = &["KILL", "INT"];

/// One case's world: its database, folder (with its own state folder and `$TMPDIR`) and
/// output location, and the tables its runs wrote.
struct Case<'a> {
    kind: &'a Kind,
    db: &'a TestDb,
    dir: tempfile::TempDir,
    out: String,
    label: String,
    tables: RefCell<Vec<String>>,
}

impl<'a> Case<'a> {
    fn new(kind: &'a Kind, db: &'a TestDb, point: &str, sig: &str) -> Self {
        let dir = scratch();
        let label = format!("{} at {point} with SIG{sig}", kind.name);
        let out = if kind.s3 {
            format!(
                "s3://{}/matrix-{}-{}",
                setting("EXPORT_EVENTS_TEST_S3_BUCKET"),
                std::process::id(),
                dir.path().file_name().unwrap().to_string_lossy()
            )
        } else {
            std::fs::create_dir_all(dir.path().join("out")).unwrap();
            dir.path().join("out").display().to_string()
        };
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        Self {
            kind,
            db,
            dir,
            out,
            label,
            tables: RefCell::new(Vec::new()),
        }
    }

    /// The next run's command (in a new table, for kinds that need one).
    fn cmd(&self) -> Command {
        let table = match self.kind.table {
            Table::New => format!("t{}", self.tables.borrow().len() + 1),
            Table::Same | Table::No => "t".to_owned(),
        };
        if self.kind.table != Table::No && !self.tables.borrow().contains(&table) {
            self.tables.borrow_mut().push(table.clone());
        }
        let dir = self.dir.path().display().to_string();
        let mut cmd = export_events(self.dir.path());
        cmd.args(["-q", "--database-url", &self.db.url()]);
        cmd.args(self.kind.args.iter().map(|a| {
            a.replace("{out}", &self.out)
                .replace("{dir}", &dir)
                .replace("{table}", &table)
        }));
        if self.kind.incremental && self.kind.table == Table::No {
            // The state goes beside the output.
            cmd.args([
                "--state",
                &format!("{}/.export-events-state.json", self.out),
            ]);
        }
        cmd.env("XDG_STATE_HOME", self.dir.path().join(".state"))
            .env("TMPDIR", self.dir.path().join("tmp"));
        if self.kind.s3 {
            with_s3(&mut cmd);
        }
        cmd
    }

    /// The manifests beside the output, newest run last.
    fn manifests(&self) -> Vec<String> {
        if self.kind.s3 {
            let first = self.kind.args.last().unwrap().replace("{out}", &self.out);
            return vec![format!("{first}.manifest.json")];
        }
        let folder = PathBuf::from(&self.out);
        files_in(&folder)
            .into_iter()
            .filter(|f| f.ends_with(".manifest.json"))
            .map(|f| folder.join(f).display().to_string())
            .collect()
    }

    /// `verify` of what the runs wrote: every manifest, or every table.
    fn verify_cmd(&self, what: &str) -> Command {
        let mut cmd = export_events(self.dir.path());
        cmd.args(["verify", what]);
        if self.kind.table != Table::No {
            cmd.args([
                "--catalog",
                &format!("sqlite:{}/lake.db", self.dir.path().display()),
            ])
            .args(["--warehouse", &format!("{}/lake", self.out)]);
        }
        if self.kind.s3 {
            with_s3(&mut cmd);
        }
        cmd
    }

    /// What `verify` checks: the manifests, or the tables.
    fn verified(&self) -> Vec<String> {
        match self.kind.table {
            Table::No => self.manifests(),
            _ => self
                .tables
                .borrow()
                .iter()
                .map(|t| format!("iceberg:mx.{t}"))
                .collect(),
        }
    }

    /// Runs `verify` on every manifest or table there is; returns the rows they hold.
    fn verify_all(&self, when: &str) -> Vec<u64> {
        let mut rows = Vec::new();
        for what in self.verified() {
            let run = Run::of(&mut self.verify_cmd(&what));
            if self.kind.s3 && self.kind.table == Table::No && run.stderr.contains("not found") {
                continue; // removed before a commit that did not finish
            }
            assert_eq!(
                run.code,
                Some(0),
                "{}: verify {what} {when}\n{run}",
                self.label
            );
            let text = match self.kind.s3 || self.kind.table != Table::No {
                true => run.stdout.clone(),
                false => std::fs::read_to_string(&what).unwrap(),
            };
            rows.push(manifest_rows(&text, &run.stdout));
        }
        rows
    }

    /// Nothing a killed run wrote is left: beside a local output, in S3, in the state folder,
    /// in `$TMPDIR`, or in a table's data folder.
    fn nothing_left(&self) {
        let label = &self.label;
        let local = self
            .kind
            .s3
            .then(Vec::new)
            .unwrap_or_else(|| hidden(Path::new(&self.out)));
        assert!(local.is_empty(), "{label}: left behind {local:?}");
        let state = in_state(&self.dir.path().join(".state"));
        assert!(
            state.is_empty(),
            "{label}: left in the state folder {state:?}"
        );
        let tmp = in_tmp(&self.dir.path().join("tmp"));
        assert!(tmp.is_empty(), "{label}: left in $TMPDIR {tmp:?}");
        if self.kind.s3 {
            let uploads = s3_uploads(&self.out);
            assert!(uploads.is_empty(), "{label}: uploads left {uploads:?}");
            let stray: Vec<String> = s3_objects(&self.out)
                .into_iter()
                .filter(|o| {
                    o.split('/')
                        .any(|p| p.starts_with('.') && p != ".export-events-dataset")
                })
                .collect();
            assert!(stray.is_empty(), "{label}: hidden objects left {stray:?}");
        }
        for table in self.tables.borrow().iter() {
            let data = format!("{}/lake/mx/{table}/data", self.out);
            let files = match self.kind.s3 {
                true => s3_objects(&data),
                false if Path::new(&data).exists() => tree(Path::new(&data))
                    .into_iter()
                    .map(|f| format!("{data}/{f}"))
                    .collect(),
                false => Vec::new(),
            };
            let verified = Run::of(&mut self.verify_cmd(&format!("iceberg:mx.{table}")));
            let orphans = unreferenced(&files, &verified.stdout);
            assert!(
                orphans.is_empty(),
                "{label}: {table} keeps unreferenced {orphans:?}"
            );
        }
    }
}

/// The rows a manifest lists: from its JSON, or from `verify`'s closing line (none for a table
/// with no snapshot yet).
fn manifest_rows(text: &str, verify_out: &str) -> u64 {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        return json["rows"].as_u64().unwrap();
    }
    let line = verify_out
        .lines()
        .find(|l| l.starts_with("Verified "))
        .unwrap();
    if line.ends_with("no snapshot yet (an empty table)") {
        return 0;
    }
    let rows = line.split('(').nth(1).unwrap().split(' ').next().unwrap();
    rows.parse().unwrap()
}

fn insert(db: &TestDb, n: usize) {
    db.sql(&format!(
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
         SELECT now() - make_interval(days => i % 70), now(), 1 + i % 5, i % 2 = 0 \
         FROM generate_series(1, {n}) AS i"
    ));
    // Other kinds' tests write to the same server: their open transactions would hold these
    // rows back past the next run (late, not lost), which this matrix does not test.
    db.settle();
}

/// The points a kind's runs reach.
fn points(kind: &Kind) -> Vec<&'static str> {
    match (kind.table, kind.incremental) {
        (Table::No, false) => EXPORT_POINTS.to_vec(),
        (Table::No, true) => [EXPORT_POINTS, INCREMENTAL_POINTS].concat(),
        (_, _) => [&["export.streaming"][..], TABLE_POINTS].concat(),
    }
}

/// Every case of `kind`.
fn matrix(kind_name: &str) {
    let kind = KINDS.iter().find(|k| k.name == kind_name).unwrap();
    let db = TestDb::generated(&format!("mx_{kind_name}"), 2_000);
    db.settle();
    for point in points(kind) {
        for sig in SIGNALS {
            let case = Case::new(kind, &db, point, sig);
            Run::of(&mut case.cmd()).success();
            insert(&db, 25);
            let child = match run_to(&mut case.cmd(), point) {
                Ok(child) => child,
                Err(run) => panic!("{}: never reached the point\n{run}", case.label),
            };
            signal(child.id(), sig);
            signal(child.id(), "CONT");
            let ended = finish(child);
            match *sig {
                "KILL" => assert_eq!(ended.code, None, "{}", case.label),
                // Before the commit the run stops and changes nothing; a commit under way
                // always completes.
                _ => assert!(
                    matches!(ended.code, Some(0) | Some(130)),
                    "{}\n{ended}",
                    case.label
                ),
            }
            case.verify_all("after the fault");
            let next = Run::of(&mut case.cmd());
            assert_eq!(next.code, Some(0), "{}: the next run\n{next}", case.label);
            let rows = case.verify_all("after the next run");
            let table: u64 = db.value("SELECT count(*) FROM events").parse().unwrap();
            if kind.incremental {
                assert_eq!(
                    rows.iter().sum::<u64>(),
                    table,
                    "{}: each event once across the runs",
                    case.label
                );
            } else {
                assert_eq!(rows.iter().max(), Some(&table), "{}", case.label);
            }
            case.nothing_left();
        }
    }
}

macro_rules! kinds {
    ($($name:ident),*) => {
        $(#[test] fn $name() { matrix(stringify!($name)); })*

        #[test]
        fn every_kind_has_its_test() {
            let tested = [$(stringify!($name)),*];
            for kind in KINDS {
                assert!(tested.contains(&kind.name), "add {} to kinds!", kind.name);
            }
        }
    };
}

kinds!(
    file,
    pair,
    pair_parquet_first,
    compressed,
    dataset,
    dataset_rule,
    template_kept,
    incremental,
    incremental_dataset,
    s3_pair,
    s3_dataset,
    iceberg,
    iceberg_s3,
    iceberg_incremental
);

/// Every `fault::point` in the code is in one of the lists above.
#[test]
fn every_fault_point_is_in_a_matrix() {
    // The change feed's points are covered per sink (`changes.rs`, `feed.rs`, `kafka.rs`,
    // `iceberg_changes.rs`), from `common::feed::SINK_POINTS`.
    let feed = common::feed::all_feed_points();
    let known: Vec<&str> = [EXPORT_POINTS, INCREMENTAL_POINTS, TABLE_POINTS, &feed].concat();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for part in text.split("fault::point(\"").skip(1) {
                let name = part.split('"').next().unwrap();
                assert!(
                    known.contains(&name),
                    "fault point {name} ({}) is in no matrix",
                    path.display()
                );
            }
        }
    }
}
