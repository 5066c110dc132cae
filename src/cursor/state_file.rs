//! The cursor of incremental runs into files: a state file beside them ([`super::state`]). It
//! moves forward only after the files are durable; before writing, a run names its files in it
//! (`pending`), so that the next run removes what an interrupted one left, finished or not (its
//! rows are exported again). A lock beside the state keeps two runs from sharing it.

use std::path::Path;

use anyhow::Result;
use chrono::{SecondsFormat, Utc};

use super::state::{self, LastRun, State};
use super::Cursor;
use crate::error::UsageError;
use crate::output::Output;
use crate::source::horizon::Horizon;
use crate::source::identity::Identity;
use crate::source::read::Snapshot;
use crate::store::{url, RunLock, Target, Wait};
use crate::template::{self, TIME};
use crate::{confine, fault};

/// A state file, and what it holds once read.
pub struct StateFile<'a> {
    target: &'a Target,
    reset: bool,
    /// This run's stamp, which its files' names hold.
    stamp: String,
    quiet: bool,
    state: Option<State>,
}

impl<'a> StateFile<'a> {
    pub fn new(target: &'a Target, reset: bool, stamp: &str, quiet: bool) -> Self {
        Self {
            target,
            reset,
            stamp: stamp.to_owned(),
            quiet,
            state: None,
        }
    }

    /// The files of an interrupted run that the state names, checked: the state file is read
    /// back from a folder others may write, so it must be this user's, and each entry a run
    /// file: in this run's folder, one of this output's template (its prefix, then a stamp);
    /// elsewhere (the run before wrote to another folder, say a disk that was full) a name with
    /// a stamp; never through a symlink. Anything else is refused before anything is deleted.
    fn leftovers(&self, pending: &[String], first: &str) -> Result<Vec<String>, UsageError> {
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let refuse = |why: String| {
            UsageError(format!(
                "state file {} {why}: it was not written by export-events for this output; fix \
                 --output or --state, or pass --reset-state to start over",
                self.target.at.shown()
            ))
        };
        confine::owned_by_us(Path::new(self.target.at.key())).map_err(|e| refuse(e.0))?;
        let (folder, name) = first.rsplit_once('/').unwrap_or(("", first));
        let prefix = &name[..name.find(&self.stamp).unwrap_or(0)];
        pending
            .iter()
            .map(|entry| {
                let (entry_folder, entry_name) = entry.rsplit_once('/').unwrap_or(("", entry));
                let normal = !entry.split('/').any(|part| part == "." || part == "..");
                let run_file = normal
                    && match entry_folder == folder {
                        true => template::is_run_file(entry_name, prefix),
                        false => template::has_stamp(entry_name),
                    };
                if !run_file {
                    return Err(refuse(format!(
                        "names {entry:?}, which is not a file of the runs of {}",
                        first.replace(&self.stamp, TIME)
                    )));
                }
                // As written: an absolute path, or a URL; inside its folder, through no symlink.
                let at = url::locate(entry, Path::new("/"))?;
                if at.shown() != *entry {
                    return Err(refuse(format!(
                        "names {entry:?}, which is not a whole path"
                    )));
                }
                at.store()
                    .confine(at.folder_key(), at.name())
                    .map_err(|e| refuse(e.0))?;
                Ok(entry.clone())
            })
            .collect()
    }

    /// Removes what an interrupted run may have written, finished or not: its rows are exported
    /// again. The lock is held, so no other run is writing these files.
    fn remove(&self, leftovers: &[String]) -> Result<()> {
        for entry in leftovers {
            let at = url::locate(entry, Path::new("/"))?;
            if at.store().remove_all(at.key())? && !self.quiet {
                eprintln!(
                    "export-events: removing {entry}, written by an interrupted run (this run \
                     exports its events again)"
                );
            }
        }
        Ok(())
    }
}

impl Cursor for StateFile<'_> {
    fn describe(&self) -> String {
        format!("state file {}", self.target.at.shown())
    }

    fn restart(&self) -> &'static str {
        ", or pass --reset-state to start over from --since"
    }

    fn elsewhere(&self) -> &'static str {
        "pass --state with this database's state file, or --reset-state to export everything \
         again"
    }

    fn lock(&self, wait: Wait) -> Result<Vec<RunLock>> {
        let at = &self.target.at;
        Ok(vec![at.store().lock(at.key(), &self.describe(), wait)?])
    }

    fn recover(&mut self) -> Result<()> {
        let at = &self.target.at;
        at.store().recover(&[at.key()])?;
        if !self.reset {
            self.state = state::load(at)?;
        }
        Ok(())
    }

    fn previous(&mut self, _output: &dyn Output) -> Result<Option<(u64, Identity)>> {
        Ok(self
            .state
            .as_ref()
            .and_then(|s| Some((s.horizon?, s.source.clone()))))
    }

    fn begin(&mut self, output: &dyn Output, snapshot: &Snapshot) -> Result<()> {
        let names = output.names();
        let mut state = match self.state.take() {
            Some(previous) => {
                let first = names.first().map(String::as_str).unwrap_or_default();
                let leftovers = self.leftovers(&previous.pending, first)?;
                self.remove(&leftovers)?;
                previous
            }
            None => State::empty(snapshot.identity.clone()),
        };
        // Named before they exist, so that a run interrupted from here on is undone by the next.
        state.pending = names;
        state::save(self.target, &state)?;
        self.state = Some(state);
        fault::point("incremental.pending-saved");
        Ok(())
    }

    fn save(&mut self, horizon: &Horizon, rows: u64, written: &[String]) -> Result<()> {
        if !written.is_empty() {
            fault::point("incremental.committed");
        }
        let Some(state) = self.state.as_mut() else {
            anyhow::bail!("an incremental run saves the state it began");
        };
        state.horizon = Some(horizon.horizon);
        state.runs += 1;
        state.last_run = Some(LastRun {
            finished_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            rows,
            files: written.to_vec(),
        });
        state.pending.clear();
        state::save(self.target, state)
    }
}
