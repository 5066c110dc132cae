//! The state file's format: the cursor of incremental runs into files, kept between runs in a
//! small human-readable JSON file (default `exports/.export-events-state.json`).
//!
//! It records where the last successful run stopped (PostgreSQL's snapshot horizon, see
//! `source::horizon`) and what it belongs to: the server (its system identifier), the database and
//! the `events` table (their OIDs, which change when they are recreated). A state that belongs
//! elsewhere, or that a newer version wrote, is refused rather than guessed at. It is replaced
//! atomically (fsync, rename, fsync of the folder). A run names its files in the state
//! (`pending`) before it writes them and moves the cursor only after they are durable, so the
//! next run knows which files an interrupted run may have left, and replaces them.

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::error::UsageError;
pub use crate::source::identity::Identity;
use crate::store::{Location, Target};

/// What the file says it is.
const KIND: &str = "export-events incremental state";
/// The format this version writes; newer ones are refused.
pub const VERSION: u32 = 1;

/// The state after a successful run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub kind: String,
    pub version: u32,
    pub source: Identity,
    /// Every transaction with a (64-bit) id below this had finished when the last successful
    /// run took its snapshot; the next run exports the rows of transactions from here on.
    /// `None` before the first successful run.
    pub horizon: Option<u64>,
    /// Successful runs so far.
    pub runs: u64,
    pub last_run: Option<LastRun>,
    /// Files of a run that has not finished: removed by the next run, which writes their rows
    /// again.
    pub pending: Vec<String>,
}

/// For people reading the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub finished_at: String,
    pub rows: u64,
    pub files: Vec<String>,
}

impl State {
    /// Before the first run.
    pub fn empty(source: Identity) -> Self {
        Self {
            kind: KIND.into(),
            version: VERSION,
            source,
            horizon: None,
            runs: 0,
            last_run: None,
            pending: Vec::new(),
        }
    }
}

/// The state at `at`, or `None` when there is none yet.
pub fn load(at: &Location) -> Result<Option<State>> {
    let text = at
        .store()
        .get(at.key())
        .with_context(|| format!("reading state file {}", at.shown()))?;
    let Some(text) = text else {
        return Ok(None);
    };
    parse(&String::from_utf8_lossy(&text), &at.shown())
        .map(Some)
        .map_err(Into::into)
}

fn parse(text: &str, path: &str) -> Result<State, UsageError> {
    let unreadable = |why: String| {
        UsageError(format!(
            "state file {path} is not an export-events state ({why}): point --state at the right \
             file, or pass --reset-state to start over"
        ))
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| unreadable(e.to_string()))?;
    if value.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
        return Err(unreadable(format!("no \"kind\": \"{KIND}\"")));
    }
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    if version.is_some_and(|v| v > u64::from(VERSION)) {
        return Err(UsageError(format!(
            "state file {path} was written by a newer export-events (state format {}, this one \
             reads {VERSION}): upgrade export-events, or pass --reset-state to start over",
            version.unwrap_or_default()
        )));
    }
    serde_json::from_value(value).map_err(|e| unreadable(e.to_string()))
}

/// Replaces the state at `target` atomically and durably.
pub fn save(target: &Target, state: &State) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(state)?;
    text.push(b'\n');
    target
        .replace(&text)
        .with_context(|| format!("writing state file {}", target.at.shown()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            horizon: Some(4_294_967_396),
            runs: 3,
            last_run: Some(LastRun {
                finished_at: "2026-11-25T02:00:00Z".into(),
                rows: 12,
                files: vec!["/x/events_20261125T020000.000Z.csv".into()],
            }),
            ..State::empty(Identity {
                system_identifier: "7712251575486687360".into(),
                database: "hub".into(),
                database_oid: 16384,
                events_oid: 16390,
            })
        }
    }

    #[test]
    fn saved_state_reads_back_and_is_readable_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let target = Target::owned(crate::store::url::local(&path), 0o600);
        assert_eq!(load(&target.at).unwrap(), None);
        save(&target, &sample()).unwrap();
        assert_eq!(load(&target.at).unwrap(), Some(sample()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"horizon\": 4294967396"), "{text}");
    }

    #[test]
    fn foreign_newer_and_broken_files_are_refused() {
        let path = "s.json";
        let mut newer = serde_json::to_value(sample()).unwrap();
        newer["version"] = 2.into();
        let err = parse(&newer.to_string(), path).unwrap_err().0;
        assert!(err.contains("newer export-events (state format 2"), "{err}");
        let err = parse("{\"horizon\": 3}", path).unwrap_err().0;
        assert!(err.contains("not an export-events state"), "{err}");
        let err = parse("not json", path).unwrap_err().0;
        assert!(err.contains("--reset-state"), "{err}");
    }
}
