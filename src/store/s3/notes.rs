//! The notes of multipart uploads a run started and has not completed or aborted, in this
//! machine's state folder, so that what a killed run left on the server is aborted: by the next
//! run on the same output ([`recover`], with its lock held), and by any run on the same bucket
//! once the process that started it is gone ([`sweep_dead`]). A note names its upload's URL
//! and id and the process that owns it.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::bucket::Bucket;
use crate::store::hash::hex;
use crate::store::scratch::{create_state_folder, gone, state_file, state_files};

/// An upload a run started and has not yet completed or aborted.
#[derive(Serialize, Deserialize)]
pub(super) struct Note {
    pub(super) url: String,
    pub(super) id: String,
    /// The process that started it (notes of earlier versions have none).
    #[serde(default)]
    pub(super) pid: Option<u32>,
}

impl Note {
    /// Notes the upload `id` at `url` for this process; returns the note's path.
    pub(super) fn save(url: &str, id: &str) -> Result<PathBuf> {
        let note = Self {
            url: url.to_owned(),
            id: id.to_owned(),
            pid: Some(std::process::id()),
        };
        create_state_folder().context("creating the state folder")?;
        let short = &hex(&Sha256::digest(id.as_bytes()))[..16];
        let path = state_file(url, &format!("{short}.upload"));
        // Owner-only, never through a symlink at its name.
        let mut file = crate::store::local::create_new(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(serde_json::to_string(&note)?.as_bytes())?;
        file.sync_all()?;
        Ok(path)
    }
}

/// The notes of `bucket`: each with its path, this user's only (the folder is trusted no
/// further than that), unreadable ones skipped.
fn notes(bucket: &Bucket) -> Vec<(PathBuf, Note, String)> {
    state_files("upload")
        .into_iter()
        .filter(|path| crate::confine::owned_by_us(path).is_ok())
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            let note = serde_json::from_str::<Note>(&text).ok()?;
            let key = note
                .url
                .strip_prefix(&format!("s3://{}/", bucket.name))
                .filter(|key| crate::confine::relative(key).is_ok())?
                .to_owned();
            Some((path, note, key))
        })
        .collect()
}

/// Aborts the uploads that killed runs left at or under `url` (an object, or a dataset's
/// prefix). Called with the output's lock held, so no live run of this machine owns them.
pub(super) fn recover(bucket: &Bucket, url: &str) -> Result<usize> {
    let mut aborted = 0;
    for (path, note, key) in notes(bucket) {
        let Some(rest) = note.url.strip_prefix(url) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            continue;
        }
        bucket
            .abort(&key, &note.id)
            .with_context(|| format!("aborting an upload a killed run left at {}", note.url))?;
        let _ = std::fs::remove_file(&path);
        aborted += 1;
    }
    Ok(aborted)
}

/// Aborts, best effort, the uploads in `bucket` of runs whose process is gone, whatever output
/// they were for (a run of another `{time}` file, or one never run again).
pub(super) fn sweep_dead(bucket: &Bucket) {
    for (path, note, key) in notes(bucket) {
        let dead = note
            .pid
            .and_then(|pid| libc::pid_t::try_from(pid).ok())
            .is_some_and(gone);
        if dead && bucket.abort(&key, &note.id).is_ok() {
            let _ = std::fs::remove_file(&path);
        }
    }
}
