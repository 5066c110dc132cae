//! A PostgreSQL cluster of one test's own (`scripts/test-cluster`, as `scripts/test` starts the
//! shared one), for what must not touch the others' servers: restarting it, or settings such as
//! `max_slot_wal_keep_size` that would invalidate other tests' slots. Stopped and removed when
//! dropped.

use std::path::PathBuf;
use std::process::Command;

use super::*;

pub struct Cluster {
    dir: PathBuf,
    /// `postgres://postgres@127.0.0.1:<port>`.
    pub server: String,
}

impl Cluster {
    /// Starts a new cluster with `settings` (lines of postgresql.conf) added.
    pub fn start(settings: &[&str]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-cluster");
        let out = Command::new(script).arg("start").output().unwrap();
        assert!(
            out.status.success(),
            "scripts/test-cluster start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        let value = |name: &str| {
            printed
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches('\'').to_owned())
                .unwrap_or_else(|| panic!("{name} in {printed}"))
        };
        let cluster = Self {
            dir: PathBuf::from(value("EXPORT_EVENTS_TEST_CLUSTER")),
            server: value("EXPORT_EVENTS_TEST_PG"),
        };
        if !settings.is_empty() {
            let conf = cluster.dir.join("data/postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).unwrap();
            for line in settings {
                text.push_str(line);
                text.push('\n');
            }
            std::fs::write(&conf, text).unwrap();
            cluster.restart();
        }
        cluster
    }

    /// `pg_ctl restart` (fast: every session is ended), waiting until it accepts connections.
    pub fn restart(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "restart"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path().join("bin/pg_ctl")))
            .filter(|p| p.exists())
            .max()
            .expect("pg_ctl");
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        let out = cmd
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-cluster");
        let _ = Command::new(script).arg("stop").arg(&self.dir).output();
    }
}
