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
//! skips this feed's changes up to it. That is exact only if the stream holds a prefix of what
//! was published, so every message states the stream's sequence it expects to follow
//! (`Nats-Expected-Last-Sequence`): one lost inside a chunk published back to back makes every
//! later one of the run rejected, never stored past a gap. The stream must therefore take this
//! feed's messages only (`--create-stream` makes such a stream); a subject whose last message is
//! another feed's is refused, and a stream another publisher writes to during a run stops the
//! run with an error, never silently.

mod connect;
mod ids;

use std::future::IntoFuture as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self};
use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Value as Json};

use super::api::{ChangeBatch, ChangeSink, Registration, Request, SinkPlan};
use super::files::record_folder;
use crate::error::{Class, Failure, UsageError};
use crate::feed::change::{Changes, Value};
use crate::feed::pgoutput::Lsn;
use crate::model::{self, Zone};
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
    subject: String,
    /// The feed's scope, first part of every message id.
    scope: String,
    /// The id of this feed's last change the stream holds on the subject.
    last: Option<(Lsn, u64)>,
    /// The stream's last sequence: the next message must follow it.
    sequence: AtomicU64,
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
            let sequence = found
                .info()
                .await
                .with_context(|| format!("reading JetStream stream {name}"))?
                .state
                .last_sequence;
            // Only a subject with no message has no resume point: any other failure to read
            // the last one stops the run (resuming from the slot alone would publish again
            // what the duplicate window may no longer catch).
            let last = match found.get_last_raw_message_by_subject(subject).await {
                Ok(message) => {
                    let id = message
                        .headers
                        .get("Nats-Msg-Id")
                        .map(|v| v.as_str().to_owned());
                    ids::resume_point(id.as_deref(), scope, subject)?
                }
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => None,
                Err(e) => {
                    return Err(anyhow::Error::from(e)).with_context(|| {
                        format!("reading the last message on {subject} (where to resume)")
                    })
                }
            };
            Ok::<_, anyhow::Error>(Self {
                shown: to.server.shown.clone(),
                js,
                subject: subject.to_owned(),
                scope: scope.to_owned(),
                last,
                sequence: AtomicU64::new(sequence),
                zone,
            })
        })
    }

    /// A batch of changes being published.
    fn publishing(&self) -> Publishing<'_> {
        Publishing {
            nats: self,
            pending: Vec::with_capacity(CHUNK),
            lsn: String::new(),
            position: 0,
            rows: 0,
            skipped: 0,
            names: model::change_columns().iter().map(|c| c.name).collect(),
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
    /// The commit LSN of the transaction being published, and the next position in it.
    lsn: String,
    position: u64,
    rows: u64,
    skipped: u64,
    names: Vec<&'static str>,
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
        Ok(self.last.map(|(lsn, _)| lsn))
    }

    /// JetStream drops, and the run skips, what the stream already holds.
    fn prepare(&self, _from: Lsn) -> Result<()> {
        Ok(())
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
    /// Publishes the pending messages back to back, each expecting the stream's sequence the
    /// one before it got, and waits for every acknowledgement.
    fn send(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let nats = self.nats;
        runtime().block_on(async {
            let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(pending.len());
            let first = nats.sequence.load(Ordering::SeqCst);
            for (expected, (id, payload)) in (first..).zip(pending) {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                headers.insert("Nats-Expected-Last-Sequence", expected.to_string().as_str());
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
                            "the stream of subject {} took a message that is not this feed's, \
                             or lost one, during the run ({e}): nothing after it was stored; \
                             give the feed a stream of its own and run again",
                            nats.subject
                        );
                        Failure::new(Class::Conflict, &detail, &nats.subject).into()
                    }
                    _ => anyhow!(e).context("JetStream did not acknowledge a change"),
                })?;
                // A duplicate did not move the stream (and broke the chain after it).
                if !ack.duplicate {
                    nats.sequence.store(ack.sequence, Ordering::SeqCst);
                }
            }
            Ok(())
        })
    }
}

impl Changes for Publishing<'_> {
    fn push(&mut self, row: &[Value]) -> Result<()> {
        let Some(Value::Text(lsn)) = row.first() else {
            bail!("a change without its LSN");
        };
        if *lsn != self.lsn {
            self.lsn.clone_from(lsn);
            self.position = 0;
        }
        let position = self.position;
        self.position += 1;
        self.rows += 1;
        let commit: Lsn = lsn.parse()?;
        if self
            .nats
            .last
            .is_some_and(|last| (commit, position) <= last)
        {
            self.skipped += 1;
            return Ok(());
        }
        let mut object = Map::with_capacity(row.len() + 1);
        for (name, value) in self.names.iter().zip(row) {
            let mut value = json(value);
            // USE_TZ = False: the event's wall-clock time, without an offset.
            if (self.nats.zone, *name) == (Zone::Naive, "timestamp") {
                if let Json::String(text) = &mut value {
                    text.truncate(text.trim_end_matches('Z').len());
                }
            }
            object.insert((*name).to_owned(), value);
        }
        object.insert("position".into(), position.into());
        let payload = serde_json::to_vec(&object)?;
        let id = format!("{}:{lsn}:{position}", self.nats.scope);
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

/// A change value as JSON: numbers, booleans, strings, RFC 3339 UTC instants, null.
fn json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Int64(v) => (*v).into(),
        Value::Bool(v) => (*v).into(),
        Value::Text(v) => v.clone().into(),
        Value::Timestamp(micros) => match *micros {
            i64::MAX => "infinity".into(),
            i64::MIN => "-infinity".into(),
            m => DateTime::from_timestamp_micros(m)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
                .into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_and_values() {
        assert_eq!(stream_name("iot.events.changes"), "IOT_EVENTS_CHANGES");
        assert_eq!(
            json(&Value::Timestamp(1_000_000)),
            Json::from("1970-01-01T00:00:01.000000Z")
        );
    }
}
