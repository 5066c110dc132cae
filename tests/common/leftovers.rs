//! What a killed run may leave, looked for where it could be: hidden files beside a local
//! output, incomplete multipart uploads and stray objects in the test S3 server (read with
//! boto3, `tests/s3_client.py`), notes, locks and table records in the run's state folder,
//! spools and spills in its `$TMPDIR`, and a table's data files that no snapshot references.

use std::path::Path;
use std::process::Command;

use super::*;

/// `cmd` with the test S3 server's variables.
pub fn with_s3(cmd: &mut Command) -> &mut Command {
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
}

/// The test S3 server's client, on the shared bucket: `args` as `tests/s3_client.py` takes them;
/// its output lines, sorted.
pub fn s3_lines(args: &[&str]) -> Vec<String> {
    let mut cmd = Command::new(setting("EXPORT_EVENTS_TEST_S3_PYTHON"));
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_client.py"))
        .args(args)
        .env(
            "EXPORT_EVENTS_TEST_S3_BUCKET",
            setting("EXPORT_EVENTS_TEST_S3_BUCKET"),
        );
    let out = with_s3(&mut cmd).output().expect("python runs");
    assert!(
        out.status.success(),
        "s3_client {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// The key of `s3://bucket/key`.
pub fn key_of(url: &str) -> String {
    url.splitn(4, '/').nth(3).unwrap_or_default().to_owned()
}

/// Incomplete multipart uploads under the URL `prefix`.
pub fn s3_uploads(prefix: &str) -> Vec<String> {
    s3_lines(&["uploads", &key_of(prefix)])
}

/// The objects under the URL `prefix`, as URLs.
pub fn s3_objects(prefix: &str) -> Vec<String> {
    let bucket = setting("EXPORT_EVENTS_TEST_S3_BUCKET");
    s3_lines(&["list", &key_of(prefix)])
        .into_iter()
        .map(|key| format!("s3://{bucket}/{key}"))
        .collect()
}

/// Everything under `root`, recursively, relative, sorted: files, and folders with a `/` after
/// their name (a killed run's spill can be an empty folder).
fn everything(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() {
                out.push(format!("{relative}/"));
                walk(&path, root, out);
            } else {
                out.push(relative);
            }
        }
    }
    let mut out = Vec::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

/// Whether `path` (from [`everything`]) is a folder whose own name is hidden and not one a
/// finished run keeps (a warehouse's private `.export-events` folder, a dataset's marker).
fn hidden_folder(path: &str) -> bool {
    let Some(folder) = path.strip_suffix('/') else {
        return false;
    };
    let name = folder.rsplit('/').next().unwrap_or(folder);
    name.starts_with('.') && name != ".export-events"
}

/// Hidden files and folders under `folder` that no finished run keeps (temporaries, spills,
/// journals, locks, pending records); a dataset's marker and an incremental state are kept.
pub fn hidden(folder: &Path) -> Vec<String> {
    everything(folder)
        .into_iter()
        .filter(|f| {
            hidden_folder(f)
                || (!f.ends_with('/')
                    && f.split('/')
                        .any(|part| part.starts_with('.') && part != ".export-events-dataset"))
        })
        .filter(|f| !f.ends_with(".export-events-state.json"))
        .collect()
}

/// What the state folder `state` (a run's `$XDG_STATE_HOME`) holds that only a live run needs:
/// upload notes, locks, a table's records and spools. A feed's last confirmation stays.
pub fn in_state(state: &Path) -> Vec<String> {
    everything(state)
        .into_iter()
        .filter(|f| hidden_folder(f) || !f.ends_with('/'))
        .filter(|f| !f.ends_with(".confirmed"))
        .collect()
}

/// What is in the temporary folder `tmp` (a run's `$TMPDIR`), folders included.
pub fn in_tmp(tmp: &Path) -> Vec<String> {
    everything(tmp)
}

/// The data files of a table that its current snapshot does not reference: `files` are all of
/// them (paths, or URLs), `verify_out` what `verify iceberg:…` printed (a line per referenced
/// file, its path first).
pub fn unreferenced(files: &[String], verify_out: &str) -> Vec<String> {
    let referenced: Vec<&str> = verify_out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    files
        .iter()
        .filter(|f| !referenced.contains(&f.as_str()))
        .cloned()
        .collect()
}
