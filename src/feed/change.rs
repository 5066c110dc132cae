//! A change, as the decoder makes it and every change sink takes it: the model's change columns
//! (`lsn`, `commit_time`, `xid`, `op`, then the event's) as typed values, pushed one at a time
//! into whatever is being delivered ([`Changes`]).

use anyhow::Result;

/// What happened to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// One value of a change row, typed by its column's kind (`model::Kind`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int64(i64),
    /// Microseconds since the Unix epoch.
    Timestamp(i64),
    Text(String),
    Bool(bool),
}

/// Where decoded changes go: a batch of a change sink being filled.
pub trait Changes {
    /// Adds one change: a value for each change column, in order.
    fn push(&mut self, row: &[Value]) -> Result<()>;
    /// Changes pushed so far.
    fn rows(&self) -> u64;
}
