//! Named points where a test can stop the process, to inject a fault at an exact moment.
//!
//! The guarantees (a file whole or absent, a pair that changes together, each change once) are
//! about what happens when a run dies or is signalled at the worst moment. A random kill rarely
//! lands there, so the tests name the moment instead: with `EXPORT_EVENTS_STOP_AT=<point>` in its
//! environment, the process stops itself (SIGSTOP) the first time it reaches that point; the
//! test then kills it, signals it, terminates its database session or lets it continue
//! (SIGCONT). Without the variable a point costs one relaxed load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The variable that names the point to stop at.
pub const VARIABLE: &str = "EXPORT_EVENTS_STOP_AT";

/// Stops the process here if the environment asked for this point (the first time only).
pub fn point(name: &str) {
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    static STOPPED: AtomicBool = AtomicBool::new(false);
    let wanted = WANTED.get_or_init(|| std::env::var(VARIABLE).ok());
    if wanted.as_deref() != Some(name) || STOPPED.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: raise() has no preconditions; SIGSTOP stops this process until SIGCONT.
    unsafe {
        libc::raise(libc::SIGSTOP);
    }
    // A signal sent while stopped is delivered on SIGCONT and recorded on the handler's own
    // thread (`cancel`), while this one runs on: wait for it, so that a test's SIGINT lands at
    // this point rather than somewhere after it.
    let resumed = std::time::Instant::now();
    while !crate::cancel::requested() && resumed.elapsed() < std::time::Duration::from_millis(300) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
