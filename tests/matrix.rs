//! The fault matrix: every output kind × every fault point of an export × {SIGKILL, SIGINT}.
//! Each case exports once (the old output), adds rows, runs again stopped at the point, sends
//! the signal, then checks the promise: what a manifest describes verifies (old or new, never a
//! mix), the next run succeeds, verifies, holds every row of the table, and leaves nothing
//! hidden behind. A kind or a point added to the lists below joins every case by itself; a
//! fault point added to the code and missing here fails `every_fault_point_is_in_a_matrix`.
//!
//! The server ending the session and a full disk are forced the same way in `faults.rs`; the
//! change feed's points in `changes.rs` and `feed.rs`; incremental runs under concurrent writers
//! in `incremental.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// An output kind: its name, the export's arguments (`{out}` is the case's output folder, or
/// S3 prefix), and whether its runs are incremental (each run adds a file of what changed).
struct Kind {
    name: &'static str,
    args: &'static [&'static str],
    s3: bool,
    incremental: bool,
}

const KINDS: &[Kind] = &[
    Kind {
        name: "file",
        args: &["--format", "csv", "-o", "{out}/x.csv"],
        s3: false,
        incremental: false,
    },
    Kind {
        name: "pair",
        args: &["--format", "csv,parquet", "-o", "{out}/x.csv"],
        s3: false,
        incremental: false,
    },
    Kind {
        name: "pair_parquet_first",
        args: &["--format", "parquet,csv", "-o", "{out}/x.parquet"],
        s3: false,
        incremental: false,
    },
    Kind {
        name: "compressed",
        args: &["--format", "csv,parquet", "-o", "{out}/x.csv.zst"],
        s3: false,
        incremental: false,
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
    },
    Kind {
        name: "s3_pair",
        args: &["--format", "csv,parquet", "-o", "{out}/x.csv"],
        s3: true,
        incremental: false,
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
/// The change feed's points, covered by `changes.rs` and `feed.rs`.
const FEED_POINTS: &[&str] = &["stream.batch", "changes.written", "changes.confirmed"];
/// An Iceberg table's points, covered by `iceberg.rs` (exports, with `export.streaming`) and
/// `iceberg_changes.rs` (the change feed, with the feed's points), each with both signals.
/// Tables are not a kind here yet: this matrix runs each output twice, and a full export into a
/// table that holds rows is refused.
const TABLE_POINTS: &[&str] = &["table.files-written", "table.committed"];

const SIGNALS: &[&str] = &["KILL", "INT"];

/// The S3 test server's variables, for the S3 kinds.
fn with_s3(cmd: &mut Command, dir: &Path) {
    cmd.env(
        "AWS_ENDPOINT_URL",
        setting("EXPORT_EVENTS_TEST_S3_ENDPOINT"),
    )
    .env("AWS_ACCESS_KEY_ID", setting("EXPORT_EVENTS_TEST_S3_KEY"))
    .env(
        "AWS_SECRET_ACCESS_KEY",
        setting("EXPORT_EVENTS_TEST_S3_SECRET"),
    )
    .env("AWS_REGION", "garage")
    .env("XDG_STATE_HOME", dir.join(".state"));
}

/// One case's world: its database, folder and output location.
struct Case<'a> {
    kind: &'a Kind,
    db: &'a TestDb,
    dir: tempfile::TempDir,
    out: String,
    label: String,
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
        Self {
            kind,
            db,
            dir,
            out,
            label,
        }
    }

    fn cmd(&self) -> Command {
        let mut cmd = export_events(self.dir.path());
        cmd.args(["-q", "--database-url", &self.db.url()]);
        cmd.args(self.kind.args.iter().map(|a| a.replace("{out}", &self.out)));
        if self.kind.s3 {
            with_s3(&mut cmd, self.dir.path());
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

    /// Runs `verify` on every manifest there is; returns the rows they list.
    fn verify_all(&self, when: &str) -> Vec<u64> {
        let mut rows = Vec::new();
        for manifest in self.manifests() {
            let mut cmd = export_events(self.dir.path());
            cmd.args(["verify", &manifest]);
            if self.kind.s3 {
                with_s3(&mut cmd, self.dir.path());
            }
            let run = Run::of(&mut cmd);
            if self.kind.s3 && run.stderr.contains("not found") {
                continue; // removed before a commit that did not finish
            }
            assert_eq!(
                run.code,
                Some(0),
                "{}: verify {manifest} {when}\n{run}",
                self.label
            );
            let text = match self.kind.s3 {
                true => run.stdout.clone(),
                false => std::fs::read_to_string(&manifest).unwrap(),
            };
            rows.push(manifest_rows(&text, &run.stdout));
        }
        rows
    }

    /// Nothing hidden is left in a local output folder (temporaries, journals, locks).
    fn nothing_hidden(&self) {
        if self.kind.s3 {
            return;
        }
        let left: Vec<String> = tree(Path::new(&self.out))
            .into_iter()
            .filter(|f| {
                f.split('/')
                    .any(|part| part.starts_with('.') && part != ".export-events-dataset")
            })
            .filter(|f| !f.ends_with(".export-events-state.json"))
            .collect();
        assert!(left.is_empty(), "{}: left behind {left:?}", self.label);
    }
}

/// The rows a manifest lists: from its JSON, or from `verify`'s closing line.
fn manifest_rows(text: &str, verify_out: &str) -> u64 {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        return json["rows"].as_u64().unwrap();
    }
    let line = verify_out
        .lines()
        .find(|l| l.starts_with("Verified "))
        .unwrap();
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

/// Every case of `kind`.
fn matrix(kind_name: &str) {
    let kind = KINDS.iter().find(|k| k.name == kind_name).unwrap();
    let db = TestDb::generated(&format!("mx_{kind_name}"), 2_000);
    db.settle();
    // Incremental kinds have a state to keep in the folder: the state goes beside the output.
    let mut points: Vec<&str> = EXPORT_POINTS.to_vec();
    if kind.incremental {
        points.extend_from_slice(INCREMENTAL_POINTS);
    }
    for point in points {
        for sig in SIGNALS {
            let case = Case::new(kind, &db, point, sig);
            let incremental_state = |cmd: &mut Command| {
                if kind.incremental {
                    cmd.args([
                        "--state",
                        &format!("{}/.export-events-state.json", case.out),
                    ]);
                }
            };
            let mut first = case.cmd();
            incremental_state(&mut first);
            Run::of(&mut first).success();
            insert(&db, 25);
            let mut faulted = case.cmd();
            incremental_state(&mut faulted);
            let child = match run_to(&mut faulted, point) {
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
            let mut next = case.cmd();
            incremental_state(&mut next);
            let next = Run::of(&mut next);
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
            case.nothing_hidden();
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
    s3_dataset
);

/// Every `fault::point` in the code is in one of the lists above.
#[test]
fn every_fault_point_is_in_a_matrix() {
    let known: Vec<&str> = [EXPORT_POINTS, INCREMENTAL_POINTS, FEED_POINTS, TABLE_POINTS].concat();
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
