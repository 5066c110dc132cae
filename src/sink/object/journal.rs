//! The local journal of uploads a run started and has not yet completed or aborted, so that the
//! next run on the same output can abort what a killed run left on the server.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use object_store::multipart::MultipartStore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{explain, object_key, Bucket};
use crate::runtime::runtime;

/// An upload a run started and has not yet completed or aborted.
#[derive(Serialize, Deserialize)]
pub(super) struct Pending {
    pub(super) url: String,
    pub(super) id: String,
}

/// Where pending uploads are noted: `$XDG_STATE_HOME/export-events/uploads` (or under
/// `~/.local/state`), also holding the locks of object storage outputs.
fn pending_folder() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("export-events").join("uploads")
}

/// A name for `url` in the local state folder (`{hash}.{what}`).
pub fn local_name(url: &str, what: &str) -> PathBuf {
    let hash = crate::sink::file::hex(&Sha256::digest(url.as_bytes()));
    pending_folder().join(format!("{}.{what}", &hash[..32]))
}

impl Pending {
    /// Notes the upload in the journal; returns the note's path.
    pub(super) fn save(&self) -> Result<PathBuf> {
        let folder = pending_folder();
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        let path = local_name(&self.url, &format!("{}.upload", short(&self.id)));
        // Owner-only, never through a symlink at its name.
        let mut file = crate::sink::commit::create_new(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(serde_json::to_string(self)?.as_bytes())?;
        file.sync_all()?;
        Ok(path)
    }
}

fn short(id: &str) -> String {
    crate::sink::file::hex(&Sha256::digest(id.as_bytes()))[..16].to_owned()
}

/// Aborts the uploads that killed runs left under `url` (an object, or a dataset's prefix).
/// Called with the output's lock held, so no live run of this machine owns them.
pub fn recover(bucket: &Bucket, url: &str) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(pending_folder()) else {
        return Ok(0);
    };
    let mut aborted = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        // Only this user's notes are acted on: the folder is trusted no further than that.
        if path.extension().is_none_or(|e| e != "upload")
            || crate::confine::owned_by_us(&path).is_err()
        {
            continue;
        }
        let Ok(pending) = std::fs::read_to_string(&path)
            .map_err(anyhow::Error::from)
            .and_then(|t| Ok(serde_json::from_str::<Pending>(&t)?))
        else {
            continue;
        };
        let Some(rest) = pending.url.strip_prefix(url) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            continue;
        }
        let Some(key) = pending
            .url
            .strip_prefix(&format!("s3://{}/", bucket.name))
            .filter(|key| crate::confine::relative(key).is_ok())
        else {
            continue;
        };
        match runtime().block_on(bucket.store.abort_multipart(&object_key(key), &pending.id)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                let _ = std::fs::remove_file(&path);
                aborted += 1;
            }
            Err(e) => {
                return Err(explain(e, &pending.url)).with_context(|| {
                    format!("aborting an upload a killed run left at {}", pending.url)
                })
            }
        }
    }
    Ok(aborted)
}
