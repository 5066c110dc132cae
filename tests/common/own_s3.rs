//! A Garage S3 server of one test's own (`scripts/s3-server start`: its own ports, data, bucket
//! and keys), which the test can kill and start again without touching the server the other
//! tests share.

use std::cell::RefCell;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::signal;

pub struct OwnS3 {
    dir: PathBuf,
    vars: Vec<(String, String)>,
    /// The server started again by [`Self::restart`], reaped at the end.
    restarted: RefCell<Option<Child>>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3-server")
}

impl OwnS3 {
    pub fn start() -> Self {
        let out = Command::new(script()).arg("start").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vars: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
            .collect();
        let mut own = Self {
            dir: PathBuf::new(),
            vars,
            restarted: RefCell::new(None),
        };
        own.dir = PathBuf::from(own.get("EXPORT_EVENTS_TEST_S3_DIR"));
        own
    }

    /// One of its settings, by the name `scripts/s3-server` gives it
    /// (`EXPORT_EVENTS_TEST_S3_ENDPOINT`, ...).
    pub fn get(&self, name: &str) -> String {
        let found = self.vars.iter().find(|(k, _)| k == name);
        found.unwrap_or_else(|| panic!("no {name}")).1.clone()
    }

    /// The server gone: killed, as a crash or a lost host would end it.
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.join("pid")).unwrap();
        signal(pid.trim().parse().unwrap(), "KILL");
        std::thread::sleep(Duration::from_millis(300));
    }

    /// The killed server again, on the same ports and data; returns once it answers S3
    /// requests (anything but a 5xx).
    pub fn restart(&self) {
        let child = Command::new(self.get("EXPORT_EVENTS_TEST_S3_GARAGE"))
            .arg("-c")
            .arg(self.dir.join("garage.toml"))
            .arg("server")
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(self.dir.join("pid"), child.id().to_string()).unwrap();
        *self.restarted.borrow_mut() = Some(child);
        let endpoint = self.get("EXPORT_EVENTS_TEST_S3_ENDPOINT");
        let address = endpoint.trim_start_matches("http://");
        for _ in 0..150 {
            if answers(address) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("Garage did not come back at {endpoint}");
    }
}

/// Whether the server at `address` answers an HTTP request with anything but a 5xx.
fn answers(address: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    match stream.read(&mut head) {
        Ok(n) if n >= 10 => head.starts_with(b"HTTP/") && head[9] != b'5',
        _ => false,
    }
}

impl Drop for OwnS3 {
    fn drop(&mut self) {
        if let Some(mut child) = self.restarted.borrow_mut().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
    }
}
