//! Delivery to NATS JetStream (`changes --to nats://host:4222 --subject iot.events.changes`),
//! through the official client `async-nats`: one message a change, JSON with the change file's
//! columns plus its position in its transaction, and a `Nats-Msg-Id` header unique to the change
//! and to the feed (`<server>-<database>-<slot>:<commit LSN>:<position>`: an LSN means something
//! only within one server and slot), so that JetStream drops a message published twice. A batch
//! counts as delivered when the stream has acknowledged every message of it; only then is the
//! slot confirmed.
//!
//! A run starts from the slot's confirmed position, which can be behind what the stream already
//! holds (a run killed after publishing, before confirming). JetStream's duplicate window covers
//! that only for a while, so a run also reads the id of the last message on the subject and
//! skips this feed's changes up to it. That is exact only if the subject holds a prefix of what
//! was published, so every message states the sequence of the subject's last message it
//! expects to follow (`Nats-Expected-Last-Subject-Sequence`): one lost inside a chunk published
//! back to back makes every later one of the run rejected, never stored past a gap. The subject
//! must therefore take this feed's messages only; a stream may hold many feeds, each on its own
//! subject (one stream `HUB` on `hub.>`, a database on each `hub.<name>`), and they publish at
//! the same moment without disturbing each other. A subject whose last message is another
//! feed's is refused, and one another publisher writes to during a run stops the run with an
//! error, never silently.

mod connect;

use std::cell::Cell;
use std::future::IntoFuture as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self};

use super::api::{ChangeBatch, ChangeSink, Registration, Request, SinkPlan};
use super::files::record_folder;
use super::ids::{self, Place};
use super::message::Encoder;
use crate::error::{Class, Failure, UsageError};
use crate::feed::change::{Changes, Value};
use crate::feed::pgoutput::Lsn;
use crate::model::Zone;
use crate::runtime::runtime;
use crate::store::scratch::state_file;
use crate::store::{RunLock, Target, Wait};

/// The registry's entry: `--to nats://host:4222` (or `tls://`).
pub const SINK: Registration = Registration {
    example: "--to nats://127.0.0.1:4222",
    takes: |request| {
        request
            .to
            .is_some_and(|to| matches!(to.split_once("://"), Some(("nats" | "tls", _))))
    },
    fallback: false,
    resolve,
};

/// A JetStream destination, resolved.
#[derive(Debug)]
struct Subject {
    server: connect::Server,
    subject: String,
    stream: Option<String>,
    create: bool,
    record: Target,
}

fn resolve(request: &Request) -> Result<Box<dyn SinkPlan>, UsageError> {
    let to = request.to.unwrap_or_default();
    Ok(Box::new(Subject {
        server: connect::Server::resolve(to, |name| std::env::var(name).ok())?,
        subject: request.subject.to_owned(),
        stream: request.stream.map(str::to_owned),
        create: request.create_stream,
        record: record_folder(request)?,
    }))
}

impl SinkPlan for Subject {
    fn record_folder(&self) -> Target {
        self.record.clone()
    }

    fn open(&self, scope: &str, zone: Zone, _quiet: bool) -> Result<Box<dyn ChangeSink + '_>> {
        let nats = Nats::connect(self, scope, zone)?;
        Ok(Box::new(nats))
    }
}

/// Messages published together: sent back to back, then their acknowledgements awaited, in
/// one wait on the runtime (a wait per message would cost more than the message).
const CHUNK: usize = 2_048;

/// A JetStream destination, connected.
pub struct Nats {
    /// The server as lines show it (credentials masked).
    shown: String,
    js: jetstream::Context,
    /// The stream taking the subject.
    stream: jetstream::stream::Stream,
    subject: String,
    /// The feed's scope, first part of every message id.
    scope: String,
    /// The id of this feed's last change the stream holds on the subject.
    last: Cell<Option<(Lsn, u64)>>,
    /// The stream sequence of the subject's last message: the next message must follow it.
    sequence: AtomicU64,
    /// Whether the stream takes this subject only (its sequences are then the subject's), and
    /// whether `sequence` was acknowledged in this session (the next message lands after it).
    exclusive: bool,
    chained: AtomicBool,
    /// How the table keeps its timestamp: a naive one is written without `Z`.
    zone: Zone,
}

impl Nats {
    /// Connects to the server and finds the stream taking the subject, creating it when asked
    /// to; reads the last change it holds.
    fn connect(to: &Subject, scope: &str, zone: Zone) -> Result<Self> {
        let (subject, stream, create) = (to.subject.as_str(), to.stream.as_deref(), to.create);
        runtime().block_on(async {
            let client = to.server.connect().await?;
            let js = jetstream::new(client);
            let name = match js.stream_by_subject(subject).await {
                Ok(name) => name,
                Err(_) if create => {
                    let name = stream.map_or_else(|| stream_name(subject), str::to_owned);
                    js.create_stream(jetstream::stream::Config {
                        name: name.clone(),
                        subjects: vec![subject.to_owned()],
                        duplicate_window: Duration::from_secs(120),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("creating JetStream stream {name} for {subject}"))?;
                    eprintln!("export-events: created JetStream stream {name} for {subject}");
                    name
                }
                Err(e) => bail!(UsageError(format!(
                    "no JetStream stream takes subject {subject} ({e}): create one, or pass \
                     --create-stream to have export-events create it"
                ))),
            };
            let mut found = js
                .get_stream(&name)
                .await
                .with_context(|| format!("opening JetStream stream {name}"))?;
            let exclusive = {
                let config = &found
                    .info()
                    .await
                    .with_context(|| format!("reading JetStream stream {name}"))?
                    .config;
                config.subjects == [subject] && config.sources.is_none()
            };
            let nats = Self {
                shown: to.server.shown.clone(),
                js,
                stream: found,
                subject: subject.to_owned(),
                scope: scope.to_owned(),
                last: Cell::new(None),
                sequence: AtomicU64::new(0),
                exclusive,
                chained: AtomicBool::new(false),
                zone,
            };
            nats.resume().await?;
            Ok::<_, anyhow::Error>(nats)
        })
    }

    /// Reads where this feed resumes on the subject: the id and the sequence of its last
    /// message. Only a subject with no message has no resume point: any other failure to read
    /// the last one stops the run (resuming from the slot alone would publish again what the
    /// duplicate window may no longer catch).
    async fn resume(&self) -> Result<()> {
        let subject = &self.subject;
        let (last, sequence) = match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => {
                let id = message
                    .headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.as_str().to_owned());
                let place = Place {
                    name: &format!("subject {subject}"),
                    flag: "--subject (and stream)",
                };
                let last = ids::resume_point(id.as_deref(), &self.scope, &place)?;
                (last, message.sequence)
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => (None, 0),
            Err(e) => {
                return Err(anyhow::Error::from(e)).with_context(|| {
                    format!("reading the last message on {subject} (where to resume)")
                })
            }
        };
        self.last.set(last);
        self.sequence.store(sequence, Ordering::SeqCst);
        self.chained.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// A batch of changes being published.
    fn publishing(&self) -> Publishing<'_> {
        Publishing {
            nats: self,
            pending: Vec::with_capacity(CHUNK),
            encoder: Encoder::new(self.zone),
            rows: 0,
            skipped: 0,
        }
    }
}

/// `iot.events.changes` → `IOT_EVENTS_CHANGES`.
fn stream_name(subject: &str) -> String {
    subject
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The changes of a batch on their way to the stream.
pub struct Publishing<'a> {
    nats: &'a Nats,
    /// Messages not yet sent: (Nats-Msg-Id, JSON).
    pending: Vec<(String, Vec<u8>)>,
    encoder: Encoder,
    rows: u64,
    skipped: u64,
}

impl ChangeSink for Nats {
    fn shown(&self) -> String {
        format!("{} ({})", self.subject, self.shown)
    }

    fn lock(&self, slot: &str, wait: Wait) -> Result<RunLock> {
        let path = state_file(&format!("nats {slot}"), "lock");
        RunLock::acquire(&path, &format!("slot {slot}"), wait)
    }

    /// The commit LSN of this feed's last change on the subject.
    fn end(&self) -> Result<Option<Lsn>> {
        Ok(self.last.get().map(|(lsn, _)| lsn))
    }

    /// Reads the resume point again (a session that ended mid-batch may have published part
    /// of it): the run skips what the subject already holds.
    fn prepare(&self, _from: Lsn) -> Result<()> {
        runtime().block_on(self.resume())
    }

    fn batch(&self, _from: Lsn) -> Result<Box<dyn ChangeBatch + '_>> {
        Ok(Box::new(self.publishing()))
    }
}

impl ChangeBatch for Publishing<'_> {
    fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Waits until the stream has acknowledged every message.
    fn finish(mut self: Box<Self>, _to: Lsn) -> Result<String> {
        self.send()?;
        let published = self.rows - self.skipped;
        Ok(match self.skipped {
            0 => format!("{published} messages"),
            s => format!("{published} messages ({s} already in the stream, skipped)"),
        })
    }
}

impl Publishing<'_> {
    /// Publishes the pending messages, each expecting as the subject's last message the one
    /// published before it, and waits for every acknowledgement. On a stream of the subject's
    /// own, the sequence a message gets is the one after its predecessor's, so a chunk goes
    /// back to back; on a stream shared with other subjects (other feeds) it is known only from
    /// the acknowledgement, so each message waits for the one before (a guessed sequence that
    /// missed could match a later message's and store it past a gap).
    fn send(&mut self) -> Result<()> {
        let nats = self.nats;
        let mut pending = std::mem::take(&mut self.pending).into_iter().peekable();
        runtime().block_on(async {
            while pending.peek().is_some() {
                // The first message after the resume point goes alone: the stream's sequence
                // may be past the subject's last (a purge, an expiry), and only its
                // acknowledgement says where the next one lands.
                let chained = nats.exclusive && nats.chained.load(Ordering::SeqCst);
                let depth = if chained { CHUNK } else { 1 };
                let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(depth);
                let first = nats.sequence.load(Ordering::SeqCst);
                for (expected, (id, payload)) in (first..).zip(pending.by_ref().take(depth)) {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", id.as_str());
                    headers.insert(
                        "Nats-Expected-Last-Subject-Sequence",
                        expected.to_string().as_str(),
                    );
                    let ack = nats
                        .js
                        .publish_with_headers(nats.subject.clone(), headers, payload.into())
                        .await
                        .context("publishing a change to JetStream")?;
                    acks.push(ack);
                }
                for ack in acks {
                    let ack = ack.into_future().await.map_err(|e| match e.kind() {
                        PublishErrorKind::WrongLastSequence => {
                            let detail = format!(
                                "subject {} took a message that is not this feed's, or lost \
                                 one, during the run ({e}): nothing after it was stored; give \
                                 each feed a subject of its own and run again",
                                nats.subject
                            );
                            Failure::new(Class::Conflict, &detail, &nats.subject).into()
                        }
                        _ => anyhow!(e).context("JetStream did not acknowledge a change"),
                    })?;
                    // A duplicate did not move the subject (and broke the chain after it).
                    if !ack.duplicate {
                        nats.sequence.store(ack.sequence, Ordering::SeqCst);
                        nats.chained.store(true, Ordering::SeqCst);
                    }
                }
            }
            Ok(())
        })
    }
}

impl Changes for Publishing<'_> {
    fn push(&mut self, row: &[Value]) -> Result<()> {
        self.rows += 1;
        let message = self.encoder.next(row)?;
        if message.held(self.nats.last.get()) {
            self.skipped += 1;
            return Ok(());
        }
        let id = format!("{}:{}:{}", self.nats.scope, message.lsn, message.position);
        let payload = message.json()?;
        self.pending.push((id, payload));
        if self.pending.len() >= CHUNK {
            self.send()?;
        }
        Ok(())
    }

    fn rows(&self) -> u64 {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        assert_eq!(stream_name("iot.events.changes"), "IOT_EVENTS_CHANGES");
    }
}
