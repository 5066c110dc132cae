//! Reading the slot over the replication stream, batch after batch: whole transactions go into
//! a batch until it holds `--max-changes` or the stream is idle (with `--follow`, until
//! `--flush-interval` has passed); the batch is delivered, then its end is confirmed. When the
//! stream is idle with nothing pending, the server's position is confirmed as well: a quiet
//! `events` table never pins WAL while the rest of the server writes (everything the server sent
//! before an idle notice has been handled, so nothing before it is left to read).
//!
//! Without `--follow` the run stops once the stream has passed the server's WAL position at
//! its start; it waits until the server has the last confirmation before it ends.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::change::{Changes, Value};
use super::decode::Decoder;
use super::metrics;
use super::pgoutput::{Lsn, Message};
use super::plan::Reading;
use super::reconnect::Progress;
use super::sink::api::{ChangeBatch, ChangeSink};
use super::slot::Feed;
use super::stream::{Event, Stream};
use crate::cancel;
use crate::error::{class_of, Class};
use crate::fault;

/// Reads until caught up (or, with `--follow`, until a signal); counts what it delivers in
/// `progress` (also when the session fails later on).
pub fn run(
    feed: &Feed,
    dest: &dyn ChangeSink,
    reading: &Reading,
    quiet: bool,
    progress: &mut Progress,
) -> Result<()> {
    let confirmed = feed.confirmed()?;
    let target = feed.current_wal()?;
    dest.prepare(confirmed)?;
    let follow = reading.follow.is_some();
    if !follow && confirmed >= target {
        return Ok(());
    }
    let mut stream = Stream::open(feed.pg, feed.slot, confirmed)?;
    let decoder = Decoder::new(feed.engine)?;
    metrics::connected(true);
    metrics::confirmed_at(confirmed);
    let mut reader = Reader {
        feed,
        dest,
        reading,
        quiet,
        decoder,
        batch: None,
        from: confirmed,
        end: None,
        open: false,
        confirmed,
        started: Instant::now(),
        heartbeat: reading.heartbeat,
        beat: Instant::now(),
        transactions: 0,
        total: 0,
        heard: false,
    };
    let result = reader.read(&mut stream, (!follow).then_some(target));
    let confirmed = reader.confirmed;
    progress.delivered += reader.total;
    progress.heard = reader.heard;
    if result.is_err() {
        // Its PostgreSQL session may be gone with the stream's: left as it is (see Engine).
        reader.decoder.abandon();
    }
    drop(reader);
    let ended = result.and_then(|()| {
        // The last confirmation must reach the server before the session ends.
        feed.wait_confirmed(confirmed, Duration::from_secs(10))?;
        stream.close()
    });
    metrics::connected(false);
    ended
}

struct Reader<'a> {
    feed: &'a Feed<'a>,
    dest: &'a dyn ChangeSink,
    reading: &'a Reading,
    quiet: bool,
    decoder: Decoder,
    /// The batch being filled, from `from`; `end` is the end of its last whole transaction.
    batch: Option<Box<dyn ChangeBatch + 'a>>,
    from: Lsn,
    end: Option<Lsn>,
    /// Whether a transaction is open (between Begin and Commit).
    open: bool,
    confirmed: Lsn,
    /// When the batch started (for --flush-interval and the rate).
    started: Instant,
    /// How often a heartbeat is written (`--heartbeat`), and when the last one was.
    heartbeat: Option<Duration>,
    beat: Instant,
    /// Transactions in the batch.
    transactions: u64,
    total: u64,
    /// Whether the stream brought anything.
    heard: bool,
}

impl Reader<'_> {
    /// Reads until the stream has passed `target` (without --follow: the server's position at
    /// the start; with it, the position when a signal asked to stop, so that everything
    /// committed before the signal is delivered).
    fn read(&mut self, stream: &mut Stream, mut target: Option<Lsn>) -> Result<()> {
        loop {
            cancel::check()?;
            if cancel::requested() && target.is_none() {
                target = Some(self.feed.current_wal()?);
            }
            self.heartbeat()?;
            let event = stream.next(Duration::from_millis(200))?;
            if event.is_some() {
                self.heard = true;
                metrics::alive();
            }
            let due = self
                .reading
                .follow
                .is_some_and(|every| self.started.elapsed() >= every);
            match event {
                Some(Event::Message(message)) => {
                    self.message(stream, message)?;
                    let passed = self.end.zip(target).is_some_and(|(end, t)| end >= t);
                    if passed && !self.open {
                        return self.deliver(stream);
                    }
                }
                Some(Event::Idle(position)) if !self.open => {
                    if self.end.is_some() {
                        self.deliver(stream)?;
                    } else if position > self.confirmed {
                        self.confirm(stream, position);
                    }
                    metrics::position(position, self.confirmed, self.end.is_none());
                    if target.is_some_and(|t| position >= t) {
                        return Ok(());
                    }
                }
                _ if due && !self.open && self.end.is_some() => self.deliver(stream)?,
                _ => {}
            }
        }
    }

    /// With `--follow --heartbeat`: writes a heartbeat when one is due. A role that may not
    /// (`pg_logical_emit_message` not granted to it) is told once, and the feed goes on.
    fn heartbeat(&mut self) -> Result<()> {
        let Some(every) = self.heartbeat else {
            return Ok(());
        };
        if self.beat.elapsed() < every {
            return Ok(());
        }
        self.beat = Instant::now();
        match self.feed.heartbeat() {
            Ok(()) => Ok(()),
            // The session's own failures end it (and --follow connects again).
            Err(e) if class_of(&e).is_some_and(|c| c != Class::NotAllowed) => Err(e),
            Err(e) => {
                eprintln!(
                    "warning: no heartbeat for slot {} ({e:#}): an idle events table may keep \
                     WAL on the server; grant the feed's role EXECUTE on \
                     pg_logical_emit_message, or pass --heartbeat 0",
                    self.feed.slot
                );
                self.heartbeat = None;
                Ok(())
            }
        }
    }

    fn message(&mut self, stream: &Stream, message: Message) -> Result<()> {
        match &message {
            Message::Begin { final_lsn, .. } => {
                self.open = true;
                metrics::position(*final_lsn, self.confirmed, false);
            }
            Message::Commit { .. } => {
                self.open = false;
                self.transactions += 1;
            }
            _ => {}
        }
        let mut lazy = Lazy {
            dest: self.dest,
            from: self.from,
            batch: &mut self.batch,
            started: &mut self.started,
        };
        let end = self.decoder.message(message, &mut lazy)?;
        if lazy.rows() > 0 {
            fault::point("stream.batch");
        }
        if let Some(end) = end {
            self.end = Some(end);
            if lazy.rows() >= self.reading.max_changes {
                self.deliver(stream)?;
            }
        }
        Ok(())
    }

    /// Delivers the batch up to the end of its last transaction, then confirms that end.
    fn deliver(&mut self, stream: &Stream) -> Result<()> {
        let Some(end) = self.end.take() else {
            return Ok(());
        };
        // What the destination held already is not counted as written.
        let (rows, place) = match self.batch.take() {
            Some(batch) => (batch.rows() - batch.skipped(), batch.finish(end)?),
            None => (0, String::new()),
        };
        fault::point("changes.written");
        self.confirm(stream, end);
        fault::point("changes.confirmed");
        self.total += rows;
        metrics::delivered(
            rows,
            std::mem::take(&mut self.transactions),
            end,
            Some(self.decoder.commit_time()),
        );
        if rows > 0 && (!self.quiet || self.reading.follow.is_some()) {
            let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
            eprintln!(
                "export-events: {rows} changes ({} to {end}) in {place}, {:.0} changes/s",
                self.from,
                rows as f64 / seconds
            );
        }
        self.from = end;
        Ok(())
    }

    fn confirm(&mut self, stream: &Stream, lsn: Lsn) {
        stream.confirm(lsn);
        metrics::confirmed_at(lsn);
        self.confirmed = lsn;
        self.from = self.from.max(lsn);
        self.feed.record_confirmed(lsn);
    }
}

/// The batch, started at its first change: transactions with no change of events (other
/// tables' are filtered out by the publication, but rules' come) start nothing.
struct Lazy<'b, 'a> {
    dest: &'a dyn ChangeSink,
    from: Lsn,
    batch: &'b mut Option<Box<dyn ChangeBatch + 'a>>,
    started: &'b mut Instant,
}

impl Changes for Lazy<'_, '_> {
    fn push(&mut self, row: &[Value]) -> Result<()> {
        if self.batch.is_none() {
            *self.batch = Some(self.dest.batch(self.from)?);
            *self.started = Instant::now();
        }
        self.batch.as_mut().expect("just started").push(row)
    }

    fn rows(&self) -> u64 {
        self.batch.as_ref().map_or(0, |batch| batch.rows())
    }
}
