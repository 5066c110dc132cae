//! Iceberg tables in the tests: a catalog (SQLite file, or the test database) and a warehouse
//! in a scratch folder, export-events writing into them, and pyiceberg
//! (`tests/readers/iceberg_table.py`) reading them back as an independent reader.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// A catalog and a warehouse in a scratch folder.
pub struct Lake {
    pub dir: tempfile::TempDir,
    /// `--catalog` as export-events takes it.
    pub catalog: String,
    /// The same catalog as SQLAlchemy names it, for pyiceberg.
    pub reader_uri: String,
    pub warehouse: PathBuf,
    /// A warehouse in the test S3 server instead: its URL, and the AWS variables that reach it.
    pub s3: Option<(String, Vec<(&'static str, String)>)>,
    /// Variables every command gets (a REST catalog's token).
    pub env: Vec<(&'static str, String)>,
}

impl Lake {
    /// A SQLite catalog file (not yet created) and a warehouse folder.
    pub fn sqlite() -> Self {
        let dir = scratch();
        let file = dir.path().join("catalog/lake.db");
        Self {
            catalog: "sqlite:catalog/lake.db".to_owned(),
            reader_uri: format!("sqlite:///{}", file.display()),
            warehouse: dir.path().join("lake"),
            dir,
            s3: None,
            env: Vec::new(),
        }
    }

    /// The test REST catalog (`scripts/rest-catalog`: Rustberg) and its warehouse folder, with
    /// its token; tables of a namespace of the test's own.
    pub fn rest() -> Self {
        let dir = scratch();
        let url = setting("EXPORT_EVENTS_TEST_REST_URL");
        Self {
            catalog: url.clone(),
            reader_uri: url,
            // The server's one warehouse, named as it names it (a REST catalog's `--warehouse`
            // is passed to it as written).
            warehouse: PathBuf::from(format!(
                "file://{}",
                setting("EXPORT_EVENTS_TEST_REST_WAREHOUSE")
            )),
            dir,
            s3: None,
            env: vec![(
                "ICEBERG_REST_TOKEN",
                setting("EXPORT_EVENTS_TEST_REST_TOKEN"),
            )],
        }
    }

    /// A SQLite catalog file and a warehouse in the test S3 server (`scripts/s3-server`), under
    /// a prefix of its own.
    pub fn s3() -> Self {
        Self::s3_on(&setting)
    }

    /// As [`Self::s3`], on the S3 server whose `EXPORT_EVENTS_TEST_S3_*` settings `get` gives.
    pub fn s3_on(get: &dyn Fn(&str) -> String) -> Self {
        let mut lake = Self::sqlite();
        let url = format!(
            "s3://{}/lake-{}-{}",
            get("EXPORT_EVENTS_TEST_S3_BUCKET"),
            std::process::id(),
            lake.dir.path().file_name().unwrap().to_string_lossy()
        );
        let env = vec![
            ("AWS_ENDPOINT_URL", get("EXPORT_EVENTS_TEST_S3_ENDPOINT")),
            ("AWS_ACCESS_KEY_ID", get("EXPORT_EVENTS_TEST_S3_KEY")),
            ("AWS_SECRET_ACCESS_KEY", get("EXPORT_EVENTS_TEST_S3_SECRET")),
            ("AWS_REGION", "garage".to_owned()),
            (
                "XDG_STATE_HOME",
                lake.dir.path().join(".state").display().to_string(),
            ),
        ];
        lake.s3 = Some((url, env));
        lake
    }

    /// `--warehouse` as the commands give it.
    fn warehouse_arg(&self) -> String {
        match &self.s3 {
            Some((url, _)) => url.clone(),
            None => self.warehouse.display().to_string(),
        }
    }

    /// `cmd` with the S3 server's variables, for a warehouse there, and the lake's own.
    fn with_s3<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        if let Some((_, env)) = &self.s3 {
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
    }

    /// The keys under `prefix` of an S3 warehouse (`tests/s3_client.py`, boto3).
    pub fn objects(&self, prefix: &str) -> Vec<String> {
        let (url, _) = self.s3.as_ref().expect("an S3 warehouse");
        let key = url.splitn(4, '/').nth(3).unwrap();
        let mut cmd = Command::new(setting("EXPORT_EVENTS_TEST_S3_PYTHON"));
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_client.py"))
            .args(["list", &format!("{key}/{prefix}")])
            .env(
                "EXPORT_EVENTS_TEST_S3_BUCKET",
                setting("EXPORT_EVENTS_TEST_S3_BUCKET"),
            );
        let out = self.with_s3(&mut cmd).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The catalog's tables in `db`, beside the Hub's.
    pub fn postgres(db: &TestDb) -> Self {
        let dir = scratch();
        let url = db.url();
        Self {
            reader_uri: url.replacen("postgres://", "postgresql+psycopg2://", 1),
            catalog: url,
            warehouse: dir.path().join("lake"),
            dir,
            s3: None,
            env: Vec::new(),
        }
    }

    pub fn export_cmd(&self, db: &TestDb, table: &str, args: &[&str]) -> Command {
        let mut cmd = export_events(self.dir.path());
        cmd.args(["-q", "--database-url", &db.url(), "--output"])
            .arg(format!("iceberg:{table}"))
            .args([
                "--catalog",
                &self.catalog,
                "--warehouse",
                &self.warehouse_arg(),
            ])
            .args(args);
        self.with_s3(&mut cmd);
        cmd
    }

    /// `export-events changes` of `slot` into `table` of this lake, not yet run.
    pub fn changes_cmd(&self, slot: &Slot, table: &str, args: &[&str]) -> Command {
        let table = format!("iceberg:{table}");
        let mut cmd = slot.changes(
            self.dir.path(),
            &["--output", &table, "--catalog", &self.catalog],
        );
        cmd.args(["--warehouse", &self.warehouse_arg()]).args(args);
        self.with_s3(&mut cmd);
        cmd
    }

    /// `export-events verify iceberg:TABLE` on this lake.
    pub fn verify(&self, table: &str) -> Run {
        let mut cmd = export_events(self.dir.path());
        cmd.args([
            "verify",
            &format!("iceberg:{table}"),
            "--catalog",
            &self.catalog,
        ])
        .args(["--warehouse", &self.warehouse_arg()]);
        Run::of(self.with_s3(&mut cmd))
    }

    pub fn export(&self, db: &TestDb, table: &str, args: &[&str]) -> Run {
        Run::of(&mut self.export_cmd(db, table, args))
    }

    /// The table as pyiceberg reads it (`tests/readers/iceberg_table.py`).
    pub fn read(&self, table: &str, since: Option<&str>) -> serde_json::Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/iceberg_table.py");
        let warehouse = match &self.s3 {
            Some((url, _)) => url.clone(),
            None => self.warehouse.display().to_string(),
        };
        let mut cmd = Command::new(setting("EXPORT_EVENTS_TEST_ICEBERG_PYTHON"));
        let out = self
            .with_s3(&mut cmd)
            .arg(script)
            .args([&self.reader_uri, &warehouse, table])
            .args(since)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pyiceberg: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Another writer's commit: pyiceberg appends one event (id -1) to `table`.
    pub fn append_one(&self, table: &str) {
        self.pyiceberg(
            table,
            "import datetime, pyarrow as pa\n\
             row = dict(id=-1, timestamp=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc), \
             rule='other writer', acknowledged=False, trigger_telemetry_id=None, trigger_device_id=None)\n\
             t.append(pa.Table.from_pylist([row], schema=t.schema().as_arrow()))",
        );
    }

    /// Another engine at work on `table`: pyiceberg runs `code` with the table loaded as `t`
    /// (and pyiceberg's types imported); returns what it printed.
    pub fn pyiceberg(&self, table: &str, code: &str) -> String {
        let script = format!(
            "import sys\n\
             from pyiceberg.catalog.sql import SqlCatalog\n\
             from pyiceberg.types import *\n\
             t = SqlCatalog('default', uri=sys.argv[1], warehouse=sys.argv[2]).load_table(sys.argv[3])\n\
             {code}\n"
        );
        let warehouse = self.warehouse.display().to_string();
        let out = Command::new(setting("EXPORT_EVENTS_TEST_ICEBERG_PYTHON"))
            .args(["-c", &script, &self.reader_uri, &warehouse, table])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pyiceberg: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Another engine's maintenance of `table`: a compaction (its rows rewritten in one
    /// overwrite), then the expiry of every older snapshot.
    pub fn compact_and_expire(&self, table: &str) {
        self.pyiceberg(
            table,
            "t.overwrite(t.scan().to_arrow())\n\
             t = t.refresh()\n\
             current = t.current_snapshot().snapshot_id\n\
             old = [s.snapshot_id for s in t.metadata.snapshots if s.snapshot_id != current]\n\
             t.maintenance.expire_snapshots().by_ids(old).commit()",
        );
    }

    /// The run folders under the table's data folder, and the pending records.
    pub fn run_folders(&self, table: &str) -> (Vec<String>, Vec<String>) {
        let data = self.warehouse.join(table.replace('.', "/")).join("data");
        let own = self
            .warehouse
            .join(".export-events")
            .join(table)
            .join("pending");
        let list = |dir: &Path| match dir.exists() {
            true => files_in(dir),
            false => Vec::new(),
        };
        (list(&data), list(&own))
    }
}
