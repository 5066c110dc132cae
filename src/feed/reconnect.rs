//! `--follow` as a service: when the server ends the session (a walsender terminated, a restart,
//! a failover, a network cut), the feed connects again and resumes from the slot's confirmed
//! position, after a jittered exponential backoff, for ever. The batch in hand was not
//! confirmed, so it is read again; every destination skips or replaces what it already holds
//! of it (`ChangeSink::prepare`), so nothing is lost or doubled. What no retry can mend (the
//! slot dropped or invalidated, a permission, the credentials, another writer) ends the run
//! with its one line and exit status, as without `--follow`.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::metrics;
use super::slot::Feed;
use crate::cancel;
use crate::error::{class_of, Class};
use crate::source::engine::{Access, Engine};

/// The first wait, and the longest.
const FIRST: Duration = Duration::from_millis(250);
const LONGEST: Duration = Duration::from_secs(30);

/// What the sessions of a run have done so far.
#[derive(Debug, Default)]
pub struct Progress {
    /// Changes delivered.
    pub delivered: u64,
    /// Whether the current session brought anything (a change, a keepalive): the server took
    /// it, so the backoff starts again from its first wait. A server that takes sessions and
    /// ends them at once gets the growing waits.
    pub heard: bool,
}

/// Whether a new session can mend `err`: the server or the network ended this one, or the
/// server had no room for it yet, or the previous walsender still holds the slot.
fn worth_retrying(err: &anyhow::Error) -> bool {
    matches!(
        class_of(err),
        Some(Class::SessionLost | Class::Unreachable | Class::TooManyConnections | Class::InUse)
    )
}

/// Exponential backoff with full jitter (a wait drawn from `[0, bound)`), so that a fleet of
/// feeds cut off by one restart does not reconnect in step.
struct Backoff {
    bound: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { bound: FIRST }
    }

    fn next(&mut self) -> Duration {
        let wait = self.bound.mul_f64(jitter());
        self.bound = (self.bound * 2).min(LONGEST);
        wait.max(Duration::from_millis(50))
    }
}

/// A number in `[0, 1)`, different in every process and call (no generator crate needed for
/// spreading waits: the clock's nanoseconds and the process id, mixed).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs `session` until it ends without a failure a new session can mend; after each such
/// failure waits, connects to the server again (the old connection may be gone with the
/// session) and runs `session` again. A signal ends the run normally, also between sessions.
/// Returns the changes the sessions delivered.
pub fn follow(
    first: &Feed,
    mut session: impl FnMut(&Feed, &mut Progress) -> Result<()>,
) -> Result<u64> {
    let mut progress = Progress::default();
    let mut backoff = Backoff::new();
    let mut engine: Option<Engine> = None;
    let mut attempt = 0u64;
    loop {
        progress.heard = false;
        let current = engine.as_ref().unwrap_or(first.engine);
        let feed = Feed {
            engine: current,
            pg: first.pg,
            slot: first.slot,
        };
        let err = match session(&feed, &mut progress) {
            Ok(()) => return Ok(progress.delivered),
            // Stopped while the server was away: what was delivered stands.
            Err(err) if worth_retrying(&err) && cancel::requested() => {
                return Ok(progress.delivered)
            }
            Err(err) if worth_retrying(&err) => err,
            Err(err) => return Err(err),
        };
        // Its PostgreSQL session is gone: closing it could abort the process
        // (duckdb-postgres#543), so it is left as it is.
        current.abandon();
        if progress.heard {
            backoff = Backoff::new();
            attempt = 0;
        }
        let mut reason = err;
        engine = loop {
            attempt += 1;
            metrics::failed(class_of(&reason));
            metrics::reconnecting();
            let wait = backoff.next();
            let line = format!("{reason:#}");
            eprintln!(
                "export-events: {}; connecting again in {:.1} s (attempt {attempt})",
                line.lines().next().unwrap_or_default(),
                wait.as_secs_f64()
            );
            if !pause(wait) {
                return Ok(progress.delivered);
            }
            match Engine::postgres(first.pg, Access::ReadWrite).and_then(Engine::single_threaded) {
                Ok(engine) => break Some(engine),
                Err(err) if worth_retrying(&err) => reason = err,
                Err(err) => return Err(err),
            }
        };
    }
}

/// Sleeps `wait` unless a signal asks the run to stop (then `false`).
fn pause(wait: Duration) -> bool {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if cancel::requested() {
            return false;
        }
        std::thread::sleep(
            Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())),
        );
    }
    !cancel::requested()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_a_bound_and_are_spread() {
        let mut backoff = Backoff::new();
        let waits: Vec<Duration> = (0..20).map(|_| backoff.next()).collect();
        assert!(waits.iter().all(|w| *w <= LONGEST), "{waits:?}");
        assert!(waits[..2].iter().all(|w| *w < Duration::from_secs(1)));
        assert_eq!(backoff.bound, LONGEST);
        let spread: std::collections::BTreeSet<Duration> = waits[10..].iter().copied().collect();
        assert!(spread.len() > 5, "jittered: {waits:?}");
        assert!((0..1000).map(|_| jitter()).all(|j| (0.0..1.0).contains(&j)));
    }

    #[test]
    fn only_what_a_new_session_mends_is_retried() {
        use crate::error::Failure;
        let failure = |class| anyhow::Error::new(Failure::new(class, "x", "y")).context("z");
        assert!(worth_retrying(&failure(Class::SessionLost)));
        assert!(worth_retrying(&failure(Class::Unreachable)));
        assert!(!worth_retrying(&failure(Class::MissingSlot)));
        assert!(!worth_retrying(&failure(Class::SlotLost)));
        assert!(!worth_retrying(&failure(Class::NotAllowed)));
        assert!(!worth_retrying(&anyhow::anyhow!("a bug")));
    }
}
