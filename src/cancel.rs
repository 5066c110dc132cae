//! SIGINT and SIGTERM, handled so that nothing is left half-done.
//!
//! The handler does no work of its own: it records the request and interrupts the DuckDB query
//! that is running. The run notices ([`check`], between batches) and unwinds through ordinary
//! error returns, so temporary files are removed by their owners' `Drop`, writer threads are
//! joined, and a commit already under way (a few renames) always completes: a pair of files is
//! never left with one new file and one old. With [`Mode::Finish`] (`changes --follow`) a signal
//! only asks the loop to stop after the batch it is on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use anyhow::{Context as _, Result};
use duckdb::{Connection, InterruptHandle};

/// What a signal does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stop as soon as possible, undoing the unfinished output (exports, one-shot feeds).
    Cancel,
    /// Finish the current step, then stop cleanly (`changes --follow`).
    Finish,
}

/// A run stopped by SIGINT/SIGTERM (exit status 130, as shells report Ctrl-C). What it says
/// depends on whether the run's outputs were already put in place ([`committed`]).
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if COMMITTED.load(Ordering::SeqCst) {
            f.write_str("interrupted after the output was put in place (it is whole)")
        } else {
            f.write_str("interrupted; no output file was changed")
        }
    }
}

impl std::error::Error for Interrupted {}

static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Set once the run's outputs are in place: an interruption after that changed them.
static COMMITTED: AtomicBool = AtomicBool::new(false);

/// Notes that the run's outputs are in place.
pub fn committed() {
    COMMITTED.store(true, Ordering::SeqCst);
}

/// Whether the run's outputs were put in place.
pub fn was_committed() -> bool {
    COMMITTED.load(Ordering::SeqCst)
}
static MODE: OnceLock<Mode> = OnceLock::new();
/// The connections whose queries a signal interrupts, in [`Mode::Cancel`].
static RUNNING: Mutex<Vec<Arc<InterruptHandle>>> = Mutex::new(Vec::new());

/// Installs the SIGINT/SIGTERM handler (once per process; the first mode stays).
pub fn install(mode: Mode) -> Result<()> {
    if MODE.set(mode).is_err() {
        return Ok(());
    }
    ctrlc::set_handler(|| {
        REQUESTED.store(true, Ordering::SeqCst);
        if MODE.get() == Some(&Mode::Cancel) {
            for query in running().iter() {
                query.interrupt();
            }
        }
    })
    .context("installing the SIGINT/SIGTERM handler")
}

/// Whether a signal asked the run to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// An [`Interrupted`] error once a signal asked the run to stop ([`Mode::Cancel`]).
pub fn check() -> Result<(), Interrupted> {
    if requested() && MODE.get() == Some(&Mode::Cancel) {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// While alive, a signal interrupts the queries of `conn` (several can be watched at once, one
/// per reading thread).
pub struct Watch {
    handle: Arc<InterruptHandle>,
}

impl Watch {
    pub fn new(conn: &Connection) -> Self {
        let handle = conn.interrupt_handle();
        running().push(handle.clone());
        Self { handle }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        running().retain(|h| !Arc::ptr_eq(h, &self.handle));
    }
}

fn running() -> MutexGuard<'static, Vec<Arc<InterruptHandle>>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}
