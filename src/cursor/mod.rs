//! What remembers where the last run stopped, behind one trait the runner calls: nothing (a
//! whole export), a state file beside the outputs ([`state_file`]), or the output itself (an
//! Iceberg table keeps it in its snapshots' summaries, committed with the rows). The cursor is
//! PostgreSQL's snapshot horizon (`source::horizon`) and the identity of what it was read from.
//!
//! A new cursor is a module here implementing [`Cursor`] and one arm in [`open`].

pub mod state;
mod state_file;

use std::collections::HashMap;

use anyhow::Result;

use crate::output::table::summary::HORIZON;
use crate::output::Output;
use crate::plan::{self, Run};
use crate::source::horizon::Horizon;
use crate::source::identity::Identity;
use crate::source::read::Snapshot;
use crate::store::{RunLock, Wait};

/// A run's cursor.
pub trait Cursor {
    /// How messages name it (`state file x`).
    fn describe(&self) -> String;
    /// How messages name it as the owner of a cursor of another database.
    fn whose(&self) -> String {
        self.describe()
    }
    /// How to start over from `--since` (said when it is given with a cursor).
    fn restart(&self) -> &'static str {
        ""
    }
    /// How to fix a cursor of another database.
    fn elsewhere(&self) -> &'static str;
    /// Its locks, taken before the output's.
    fn lock(&self, _wait: Wait) -> Result<Vec<RunLock>> {
        Ok(Vec::new())
    }
    /// Makes it whole after a killed run, and reads it.
    fn recover(&mut self) -> Result<()> {
        Ok(())
    }
    /// Where the previous run stopped, and what it read; `None` before the first run.
    fn previous(&mut self, output: &dyn Output) -> Result<Option<(u64, Identity)>>;
    /// Before the rows are written: removes what an interrupted run left, and names what this
    /// one will write.
    fn begin(&mut self, _output: &dyn Output, _snapshot: &Snapshot) -> Result<()> {
        Ok(())
    }
    /// What the output commits with the rows (a cursor kept in the output).
    fn summary(&self, _horizon: &Horizon) -> HashMap<String, String> {
        HashMap::new()
    }
    /// After the commit: moves to `horizon`.
    fn save(&mut self, _horizon: &Horizon, _rows: u64, _written: &[String]) -> Result<()> {
        Ok(())
    }
}

/// The cursor `run` moves.
pub fn open<'a>(run: &'a Run, stamp: &str) -> Box<dyn Cursor + 'a> {
    match &run.cursor {
        plan::Cursor::None => Box::new(NoCursor),
        plan::Cursor::StateFile { state, reset } => {
            Box::new(state_file::StateFile::new(state, *reset, stamp, run.quiet))
        }
        plan::Cursor::InTable => Box::new(InOutput {
            table: match &run.output {
                plan::Output::Table(table) => format!("table {}", table.table.shown()),
                plan::Output::Files(_) => "the output".into(),
            },
        }),
    }
}

/// A whole export moves no cursor.
struct NoCursor;

impl Cursor for NoCursor {
    fn describe(&self) -> String {
        "the export".into()
    }
    fn elsewhere(&self) -> &'static str {
        ""
    }
    fn previous(&mut self, _output: &dyn Output) -> Result<Option<(u64, Identity)>> {
        Ok(None)
    }
}

/// The cursor an output keeps itself: read from it, committed with the rows.
struct InOutput {
    /// `table iceberg:x`.
    table: String,
}

impl Cursor for InOutput {
    fn describe(&self) -> String {
        self.table.clone()
    }
    fn whose(&self) -> String {
        format!("{}'s cursor", self.table)
    }
    fn elsewhere(&self) -> &'static str {
        "give this database's runs a table of their own"
    }
    fn previous(&mut self, output: &dyn Output) -> Result<Option<(u64, Identity)>> {
        output.stored_cursor()
    }
    fn summary(&self, horizon: &Horizon) -> HashMap<String, String> {
        HashMap::from([(HORIZON.to_owned(), horizon.horizon.to_string())])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cursor_in_the_output_is_committed_with_its_horizon() {
        use super::Cursor as _;
        let horizon = crate::source::horizon::Horizon {
            horizon: 42,
            horizon_age: 1,
        };
        let summary = super::InOutput {
            table: "table t".into(),
        }
        .summary(&horizon);
        assert_eq!(summary.get(super::HORIZON).map(String::as_str), Some("42"));
    }
}
