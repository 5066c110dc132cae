//! Object storage outputs against a real S3-compatible server (Garage, started by
//! `scripts/test` through `scripts/s3-server`), read back with an independent client (boto3,
//! `tests/s3_client.py`): every output kind round-trips byte for byte; an object appears only
//! whole; a server gone mid-upload, a signal or a kill leaves no object and, after the next run
//! on the output, no incomplete upload; wrong credentials fail before the source is read, without
//! echoing the secret.

mod common;

use std::path::Path;
use std::process::Command;

use common::own_s3::OwnS3;
use common::*;

/// The test server's settings, as `scripts/s3-server start` printed them.
struct Server {
    endpoint: String,
    bucket: String,
    key: String,
    secret: String,
}

impl Server {
    fn shared() -> Self {
        Self {
            endpoint: setting("EXPORT_EVENTS_TEST_S3_ENDPOINT"),
            bucket: setting("EXPORT_EVENTS_TEST_S3_BUCKET"),
            key: setting("EXPORT_EVENTS_TEST_S3_KEY"),
            secret: setting("EXPORT_EVENTS_TEST_S3_SECRET"),
        }
    }

    /// `export-events` in `dir`, with this server's AWS variables and its own local state
    /// folder (pending uploads, locks).
    fn export_events(&self, dir: &Path) -> Command {
        let mut cmd = export_events(dir);
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "garage")
            .env("XDG_STATE_HOME", dir.join(".state"));
        cmd
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn client(&self, args: &[&str]) -> std::process::Output {
        Command::new(setting("EXPORT_EVENTS_TEST_S3_PYTHON"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_client.py"))
            .args(args)
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "garage")
            .env("EXPORT_EVENTS_TEST_S3_BUCKET", &self.bucket)
            .output()
            .expect("python runs")
    }

    /// The object at `key`, read by boto3; `None` when there is none.
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let file = tempfile::NamedTempFile::new().unwrap();
        let out = self.client(&["get", key, file.path().to_str().unwrap()]);
        match out.status.code() {
            Some(0) => Some(std::fs::read(file.path()).unwrap()),
            Some(3) => None,
            _ => panic!("get {key}: {}", String::from_utf8_lossy(&out.stderr)),
        }
    }

    fn lines(&self, args: &[&str]) -> Vec<String> {
        let out = self.client(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    /// Keys under `prefix`.
    fn list(&self, prefix: &str) -> Vec<String> {
        self.lines(&["list", prefix])
    }

    /// Keys of incomplete multipart uploads under `prefix`.
    fn uploads(&self, prefix: &str) -> Vec<String> {
        self.lines(&["uploads", prefix])
    }
}

/// A key prefix of one test.
fn prefix(label: &str) -> String {
    format!("{label}-{}", std::process::id())
}

/// `export-events -q --database-url <db> ...args` against `server`, not yet run.
fn export_cmd(server: &Server, dir: &Path, db: &TestDb, args: &[&str]) -> Command {
    let mut cmd = server.export_events(dir);
    cmd.args(["-q", "--database-url", &db.url()]).args(args);
    cmd
}

fn export(server: &Server, dir: &Path, db: &TestDb, args: &[&str]) -> Run {
    Run::of(&mut export_cmd(server, dir, db, args))
}

#[test]
fn a_csv_export_to_s3_is_the_compatible_csv_and_says_where_it_went() {
    let server = Server::shared();
    let db = TestDb::sample("s3_csv");
    let dir = scratch();
    let key = format!("{}/events.csv", prefix("csv"));
    let run = Run::of(server.export_events(dir.path()).args([
        "--database-url",
        &db.url(),
        "-o",
        &server.url(&key),
    ]))
    .success();
    let rows = db.value("SELECT count(*) FROM events");
    assert_eq!(
        run.stdout,
        format!("Exported {rows} events to {}\n", server.url(&key))
    );
    assert_eq!(server.get(&key).unwrap(), compat_bytes("expected_all.csv"));
    let manifest = format!("{key}.manifest.json");
    assert!(server.get(&manifest).is_some());
    Run::of(
        server
            .export_events(dir.path())
            .args(["verify", &server.url(&manifest)]),
    )
    .success();
    assert!(server.uploads(&prefix("csv")).is_empty());
    assert_eq!(
        tree(dir.path())
            .iter()
            .filter(|f| !f.starts_with(".state"))
            .count(),
        0
    );
}

#[test]
fn every_output_kind_in_s3_is_byte_identical_to_the_same_export_on_disk() {
    let server = Server::shared();
    let db = TestDb::generated("s3_kinds", 10_000);
    let dir = scratch();
    let p = prefix("kinds");
    for (name, args) in [
        ("pair.csv", vec!["--format", "csv,parquet"]),
        ("zst.csv.zst", vec![]),
        ("gz.csv.gz", vec![]),
    ] {
        export(
            &server,
            dir.path(),
            &db,
            &[&["-o", name], &args[..]].concat(),
        )
        .success();
        let remote = server.url(&format!("{p}/{name}"));
        export(
            &server,
            dir.path(),
            &db,
            &[&["-o", &remote], &args[..]].concat(),
        )
        .success();
        let local = std::fs::read(dir.path().join(name)).unwrap();
        assert_eq!(server.get(&format!("{p}/{name}")).unwrap(), local, "{name}");
    }
    let parquet = std::fs::read(dir.path().join("pair.parquet")).unwrap();
    assert_eq!(server.get(&format!("{p}/pair.parquet")).unwrap(), parquet);

    // A partitioned dataset: the same objects as the folder, byte for byte.
    let args = ["--format", "parquet", "--partition-by", "month"];
    export(
        &server,
        dir.path(),
        &db,
        &[&["-o", "ds"], &args[..]].concat(),
    )
    .success();
    let remote = server.url(&format!("{p}/ds"));
    export(
        &server,
        dir.path(),
        &db,
        &[&["-o", &remote], &args[..]].concat(),
    )
    .success();
    // The data files; each side's dataset marker holds its own staging token.
    let ours = |f: &String| f != ".export-events-dataset";
    let local: Vec<String> = tree(&dir.path().join("ds"))
        .into_iter()
        .filter(ours)
        .collect();
    let keys: Vec<String> = server
        .list(&format!("{p}/ds/"))
        .into_iter()
        .map(|k| k.strip_prefix(&format!("{p}/ds/")).unwrap().to_owned())
        .filter(ours)
        .collect();
    assert_eq!(keys, local);
    for file in &local {
        assert_eq!(
            server.get(&format!("{p}/ds/{file}")).unwrap(),
            std::fs::read(dir.path().join("ds").join(file)).unwrap(),
            "{file}"
        );
    }
    Run::of(
        server
            .export_events(dir.path())
            .args(["verify", &server.url(&format!("{p}/ds.manifest.json"))]),
    )
    .success();

    // Written again with fewer partitions: the new dataset only, the old parts removed.
    db.sql("DELETE FROM events WHERE timestamp < (SELECT max(timestamp) - interval '60 days' FROM events)");
    export(
        &server,
        dir.path(),
        &db,
        &[&["-o", &remote], &args[..]].concat(),
    )
    .success();
    export(
        &server,
        dir.path(),
        &db,
        &[&["-o", "ds2"], &args[..]].concat(),
    )
    .success();
    let again: Vec<String> = server
        .list(&format!("{p}/ds/"))
        .into_iter()
        .map(|k| k.strip_prefix(&format!("{p}/ds/")).unwrap().to_owned())
        .collect();
    assert_eq!(again, tree(&dir.path().join("ds2")));
    assert!(server.uploads(&p).is_empty());
}

#[test]
fn incremental_runs_to_s3_hold_each_event_once() {
    let server = Server::shared();
    let db = TestDb::generated("s3_incr", 5_000);
    db.settle();
    let dir = scratch();
    let p = prefix("incr");
    let template = server.url(&format!("{p}/events_{{time}}.csv"));
    let incremental = |extra: &[&str]| {
        export(
            &server,
            dir.path(),
            &db,
            &[&["--incremental", "-o", &template], extra].concat(),
        )
    };
    incremental(&[]).success();
    db.sql("UPDATE events SET acknowledged = NOT acknowledged WHERE id % 100 = 0");
    db.settle();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    incremental(&[]).success();
    let files: Vec<String> = server
        .list(&format!("{p}/"))
        .into_iter()
        .filter(|k| k.ends_with(".csv"))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let rows = |key: &str| {
        let bytes = server.get(key).unwrap();
        csv::Reader::from_reader(&bytes[..]).records().count()
    };
    assert_eq!(rows(&files[0]), 5_000);
    assert_eq!(rows(&files[1]), 50);
}

#[test]
fn change_files_go_to_s3_under_their_lsn_names() {
    let server = Server::shared();
    let db = TestDb::sample("s3_changes");
    let dir = scratch();
    let p = prefix("changes");
    let folder = server.url(&p);
    let slot = Slot::create(&db, dir.path());
    db.sql("UPDATE events SET acknowledged = true");
    let mut cmd = slot.changes(dir.path(), &["-o", &folder]);
    for (k, v) in server.export_events(dir.path()).get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let run = Run::of(&mut cmd).success();
    assert!(run.stdout.contains(&folder), "{run}");
    let files: Vec<String> = server
        .list(&format!("{p}/"))
        .into_iter()
        .filter(|k| !k.ends_with("/.export-events-changes.json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].rsplit('/').next().unwrap();
    assert!(
        name.starts_with("changes_") && name.ends_with(".csv"),
        "{name}"
    );
    let bytes = server.get(&files[0]).unwrap();
    let changed = csv::Reader::from_reader(&bytes[..]).records().count();
    assert_eq!(changed.to_string(), db.value("SELECT count(*) FROM events"));
    assert!(server.uploads(&p).is_empty());
}

#[test]
fn wrong_credentials_fail_before_the_source_is_read_and_never_show_the_secret() {
    let server = Server::shared();
    let dir = scratch();
    let url = server.url(&format!("{}/x.csv", prefix("creds")));
    // The source does not exist: had it been opened first, the error would be about it.
    let source = "postgres://nobody@127.0.0.1:1/none";
    let wrong = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let run = Run::of(
        server
            .export_events(dir.path())
            .env("AWS_SECRET_ACCESS_KEY", wrong)
            .args(["--database-url", source, "-o", &url]),
    )
    .failure(1, "AWS_SECRET_ACCESS_KEY");
    assert!(!run.stderr.contains(wrong), "{run}");

    let read_only = Run::of(
        server
            .export_events(dir.path())
            .env(
                "AWS_ACCESS_KEY_ID",
                setting("EXPORT_EVENTS_TEST_S3_READ_ONLY_KEY"),
            )
            .env(
                "AWS_SECRET_ACCESS_KEY",
                setting("EXPORT_EVENTS_TEST_S3_READ_ONLY_SECRET"),
            )
            .args(["--database-url", source, "-o", &url]),
    )
    .failure(1, "access denied");
    assert!(!read_only
        .stderr
        .contains(&setting("EXPORT_EVENTS_TEST_S3_READ_ONLY_SECRET")));

    Run::of(server.export_events(dir.path()).args([
        "--database-url",
        source,
        "-o",
        "s3://no-such-bucket-ee/x.csv",
    ]))
    .failure(1, "bucket");
    assert!(server.get(&format!("{}/x.csv", prefix("creds"))).is_none());
}

#[test]
fn a_signal_mid_upload_aborts_it_and_nothing_appears() {
    let server = Server::shared();
    let db = TestDb::generated("s3_signal", 200_000);
    let dir = scratch();
    let p = prefix("signal");
    let key = format!("{p}/big.csv");
    let mut cmd = export_cmd(&server, dir.path(), &db, &["-o", &server.url(&key)]);
    let child = spawn_stopped_at(&mut cmd, "stream.batch");
    assert_eq!(
        server.uploads(&p),
        vec![key.clone()],
        "the upload has started"
    );
    signal(child.id(), "INT");
    signal(child.id(), "CONT");
    let run = finish(child);
    assert_eq!(run.code, Some(130), "{run}");
    assert!(server.get(&key).is_none());
    assert!(server.uploads(&p).is_empty(), "aborted at once");
}

#[test]
fn a_kill_mid_upload_leaves_nothing_visible_and_the_next_run_aborts_the_upload() {
    let server = Server::shared();
    let db = TestDb::generated("s3_kill", 100_000);
    let dir = scratch();
    let p = prefix("kill");
    let key = format!("{p}/big.parquet");
    let mut cmd = export_cmd(&server, dir.path(), &db, &["-o", &server.url(&key)]);
    let child = spawn_stopped_at(&mut cmd, "stream.batch");
    signal(child.id(), "KILL");
    finish(child);
    assert!(server.get(&key).is_none());
    assert_eq!(server.uploads(&p), vec![key.clone()]);
    export(&server, dir.path(), &db, &["-o", &server.url(&key)]).success();
    assert!(
        server.uploads(&p).is_empty(),
        "the killed run's upload is aborted"
    );
    assert!(server.get(&key).is_some());
}

#[test]
fn a_pair_killed_between_its_completions_has_no_manifest() {
    let server = Server::shared();
    let db = TestDb::sample("s3_pair_kill");
    let dir = scratch();
    let p = prefix("pairkill");
    let csv = format!("{p}/e.csv");
    let url = server.url(&csv);
    export(
        &server,
        dir.path(),
        &db,
        &["-o", &url, "--format", "csv,parquet"],
    )
    .success();
    assert!(server.get(&format!("{csv}.manifest.json")).is_some());
    let mut cmd = export_cmd(
        &server,
        dir.path(),
        &db,
        &["-o", &url, "--format", "csv,parquet"],
    );
    let child = spawn_stopped_at(&mut cmd, "commit.between-renames");
    signal(child.id(), "KILL");
    finish(child);
    // Readers keyed on the manifest see no export rather than a mixed one.
    assert!(server.get(&format!("{csv}.manifest.json")).is_none());
    export(
        &server,
        dir.path(),
        &db,
        &["-o", &url, "--format", "csv,parquet"],
    )
    .success();
    assert!(server.get(&format!("{csv}.manifest.json")).is_some());
    assert!(server.uploads(&p).is_empty());
}

/// The settings of a test's own Garage, as the shared server's are given.
fn server_of(own: &OwnS3) -> Server {
    Server {
        endpoint: own.get("EXPORT_EVENTS_TEST_S3_ENDPOINT"),
        bucket: own.get("EXPORT_EVENTS_TEST_S3_BUCKET"),
        key: own.get("EXPORT_EVENTS_TEST_S3_KEY"),
        secret: own.get("EXPORT_EVENTS_TEST_S3_SECRET"),
    }
}

#[test]
fn a_server_gone_mid_upload_fails_clearly_and_leaves_no_object_nor_upload() {
    let own = OwnS3::start();
    let server = server_of(&own);
    let db = TestDb::generated("s3_gone", 100_000);
    let dir = scratch();
    let key = "gone/big.csv".to_owned();
    let mut cmd = export_cmd(&server, dir.path(), &db, &["-o", &server.url(&key)]);
    let child = spawn_stopped_at(cmd.env("AWS_MAX_ATTEMPTS", "2"), "stream.batch");
    own.kill();
    signal(child.id(), "CONT");
    let run = finish(child);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.starts_with("error: "), "{run}");
    assert!(!run.stderr.contains(&server.secret), "{run}");
    own.restart();
    assert!(server.get(&key).is_none(), "no object appeared");
    // The upload could not be aborted while the server was gone; the next run on the output
    // aborts it before writing.
    assert_eq!(server.uploads("gone/"), vec![key.clone()]);
    export(&server, dir.path(), &db, &["-o", &server.url(&key)]).success();
    assert!(server.uploads("gone/").is_empty());
    let bytes = server.get(&key).unwrap();
    assert_eq!(
        csv::Reader::from_reader(&bytes[..]).records().count(),
        100_000
    );
}

#[test]
fn a_large_export_read_in_windows_goes_to_s3_byte_identical() {
    let server = Server::shared();
    let db = TestDb::empty("s3_windows");
    let dir = scratch();
    // Enough rows for the windowed plan (it starts at 500,000), whose read-ahead spools to
    // $TMPDIR when the output is remote.
    Run::of(export_events(dir.path()).args([
        "generate",
        "-q",
        "--rows",
        "600000",
        "--database-url",
        &db.url(),
    ]))
    .success();
    let key = format!("{}/big.csv", prefix("windows"));
    export(&server, dir.path(), &db, &["-o", "big.csv", "--jobs", "2"]).success();
    export(
        &server,
        dir.path(),
        &db,
        &["-o", &server.url(&key), "--jobs", "2"],
    )
    .success();
    let local = std::fs::read(dir.path().join("big.csv")).unwrap();
    assert!(server.get(&key).unwrap() == local, "same bytes as on disk");
}
