//! `--create-slot`: the publication, then the slot. With a replication connection the slot is
//! created with an exported snapshot and `--initial-export` is taken inside it (exact: no
//! change is both in the export and in the feed); where that connection is refused, the slot is
//! created through SQL and the export follows it (changes made meanwhile are in both, and replay
//! the same).
//!
//! The initial export is an ordinary run of the runner whose snapshot is the slot's: the slot is
//! created at the runner's snapshot step, after the export's locks, recovery and checks, so an
//! export that is refused leaves no slot and no publication on the server.

use anyhow::Result;

use super::pgoutput::Lsn;
use super::slot::Feed;
use super::stream::{self, Created};
use crate::error::{class_of, Class, Failure};
use crate::plan::Run;
use crate::runner::{self, SnapshotSource};
use crate::store::Target;

/// Creates the slot (and takes `initial`), records it in `record` and says so.
pub fn run(feed: &Feed, record: &Target, initial: Option<&Run>, quiet: bool) -> Result<()> {
    let Some(initial) = initial else {
        let slot = create(feed, quiet)?;
        return report(feed, record, slot, None);
    };
    let mut snapshot = SlotSnapshot {
        feed,
        quiet,
        slot: None,
    };
    let exported = runner::run(initial, &mut snapshot)?;
    let Some(slot) = snapshot.slot else {
        anyhow::bail!("the initial export took no snapshot of slot {}", feed.slot);
    };
    report(feed, record, slot, Some(exported.success_line()))
}

/// The slot, as it was created.
enum Slot {
    /// On a replication session that still holds the snapshot it exported.
    WithSnapshot(Created),
    /// Through SQL, at this LSN, without a snapshot.
    BySql(Lsn),
}

/// The publication, then the slot: with an exported snapshot, or through SQL where the server
/// refuses a replication connection.
fn create(feed: &Feed, quiet: bool) -> Result<Slot> {
    feed.ensure_publication()?;
    match stream::create_with_snapshot(feed.pg, feed.slot) {
        Ok(created) => Ok(Slot::WithSnapshot(created)),
        Err(e) if class_of(&e) == Some(Class::AlreadyExists) => {
            let slot = format!("slot {}", feed.slot);
            Err(Failure::new(Class::AlreadyExists, "", &slot).into())
        }
        Err(e) => {
            if !quiet {
                eprintln!(
                    "export-events: no replication connection ({}); creating the slot through \
                     SQL instead, without a snapshot",
                    crate::error::one_line(&e)
                );
            }
            Ok(Slot::BySql(feed.create_by_sql()?))
        }
    }
}

/// The initial export's snapshot: the slot's, created when the runner asks for it.
struct SlotSnapshot<'a> {
    feed: &'a Feed<'a>,
    quiet: bool,
    slot: Option<Slot>,
}

impl SnapshotSource for SlotSnapshot<'_> {
    fn take(&mut self) -> Result<Option<String>> {
        let slot = create(self.feed, self.quiet)?;
        let snapshot = match &slot {
            Slot::WithSnapshot(created) => Some(created.snapshot.clone()),
            Slot::BySql(_) => None,
        };
        self.slot = Some(slot);
        Ok(snapshot)
    }
}

/// Records the slot and says what was created, and how the initial export (its success
/// `line`) relates to it.
fn report(feed: &Feed, record: &Target, slot: Slot, line: Option<String>) -> Result<()> {
    match slot {
        Slot::WithSnapshot(created) => {
            let lsn = created.lsn;
            drop(created);
            feed.record(record, lsn, "taken in the slot's exported snapshot")?;
            println!(
                "Created slot {} at LSN {lsn} with an exported snapshot (replication protocol)",
                feed.slot
            );
            match line {
                Some(line) => println!(
                    "{line}, taken in the slot's snapshot: the feed holds exactly the changes \
                     after it"
                ),
                None => println!(
                    "No --initial-export: take one now; changes from the slot's start may be \
                     in both, and replay the same"
                ),
            }
        }
        Slot::BySql(lsn) => {
            feed.record(
                record,
                lsn,
                "taken after the slot; replay the change files on it",
            )?;
            println!(
                "Created slot {} at LSN {lsn} (SQL): take the initial export now; replaying the \
                 change files on it gives the table (changes from {lsn} on may be in both, and \
                 replay the same)",
                feed.slot
            );
            if let Some(line) = line {
                println!("{line}, taken after the slot (overlap replays the same)");
            }
        }
    }
    Ok(())
}
