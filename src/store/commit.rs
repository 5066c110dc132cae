//! The one commit protocol: finished outputs (files and whole datasets) are put in place
//! together, all or none, in any store.
//!
//! Every output is made durable first (fsynced, or every part uploaded); the store then
//! prepares the commit (a local folder writes a journal of the renames and keeps the files it
//! replaces; an object store needs nothing, its uploads complete one by one); the outputs are
//! put in place in order (the manifest, given last, after the files it describes); a failure
//! puts back what was already replaced. A signal cannot stop a commit half-way
//! ([`crate::cancel`]); a SIGKILL can, and the store's recovery, run by the next holder of the
//! outputs' locks, finishes it.

use anyhow::{Context as _, Result};

use super::api::{Staged, Store};
use super::file::Written;
use crate::fault;

/// Puts `staged` (outputs of `store`) in place together; returns what each file holds (a
/// dataset's files one by one).
pub fn commit_all(store: &dyn Store, mut staged: Vec<Staged>) -> Result<Vec<Written>> {
    for output in &mut staged {
        output.sync()?;
    }
    if staged.len() > 1 {
        fault::point("commit.staged");
    }
    let prepared = store.prepare_commit(&staged)?;
    let targets: Vec<String> = staged.iter().map(|s| s.target().to_owned()).collect();
    let mut written = Vec::new();
    for (done, output) in staged.into_iter().enumerate() {
        if done == 1 {
            fault::point("commit.between-renames");
        }
        let records = output.records();
        if let Err(e) = output.put_in_place() {
            prepared.restore(done);
            return Err(e).with_context(|| {
                format!(
                    "moving the finished output to {}",
                    store.url(&targets[done])
                )
            });
        }
        written.extend(records);
    }
    prepared.finish();
    if targets.len() > 1 {
        fault::point("commit.done");
    }
    Ok(written)
}
