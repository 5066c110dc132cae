//! Delivery to NATS JetStream (`changes --to nats://host:4222 --subject iot.events.changes`),
//! through the official client `async-nats`: one message a change, JSON with the change file's
//! columns plus its position in its transaction, and a `Nats-Msg-Id` header unique to the change
//! (`<commit LSN>:<position>`), so that JetStream drops a message published twice. A batch
//! counts as delivered when the stream has acknowledged every message of it; only then is the
//! slot confirmed.
//!
//! A run starts from the slot's confirmed position, which can be behind what the stream already
//! holds (a run killed after publishing, before confirming). JetStream's duplicate window covers
//! that only for a while, so a run also reads the id of the last message on the subject and
//! skips changes up to it: each change is in the stream once, however long the gap.

use std::future::IntoFuture as _;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream::{self, context::PublishAckFuture};
use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Value as Json};

use super::decode::Changes;
use super::files::Value;
use super::pgoutput::Lsn;
use crate::error::UsageError;
use crate::model;
use crate::runtime::runtime;

/// Messages published together: sent back to back, then their acknowledgements awaited, in
/// one wait on the runtime (a wait per message would cost more than the message).
const CHUNK: usize = 2_048;

/// A JetStream destination.
pub struct Nats {
    js: jetstream::Context,
    subject: String,
    /// The id of the last change the stream holds on the subject.
    last: Option<(Lsn, u64)>,
}

impl Nats {
    /// Connects to `url` and finds the stream taking `subject`, creating it (named `stream`)
    /// when `create`; reads the last change it holds.
    pub fn connect(url: &str, subject: &str, stream: Option<&str>, create: bool) -> Result<Self> {
        if !url.starts_with("nats://") && !url.starts_with("tls://") {
            bail!(UsageError(format!(
                "--to {url}: give a NATS server URL, such as nats://127.0.0.1:4222"
            )));
        }
        runtime().block_on(async {
            let client = tokio::time::timeout(
                Duration::from_secs(10),
                async_nats::ConnectOptions::new()
                    .max_reconnects(Some(5))
                    .connect(url),
            )
            .await
            .map_err(|_| anyhow!("no NATS server answered at {url} within 10 s"))?
            .with_context(|| format!("connecting to NATS at {url}"))?;
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
            let found = js
                .get_stream(&name)
                .await
                .with_context(|| format!("opening JetStream stream {name}"))?;
            let last = match found.get_last_raw_message_by_subject(subject).await {
                Ok(message) => message
                    .headers
                    .get("Nats-Msg-Id")
                    .and_then(|id| parse_id(id.as_str())),
                Err(_) => None,
            };
            Ok::<_, anyhow::Error>(Self {
                js,
                subject: subject.to_owned(),
                last,
            })
        })
    }

    /// A batch of changes being published.
    pub fn batch(&self) -> Publishing<'_> {
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

/// `16/B374D848:12` → (LSN, position).
fn parse_id(id: &str) -> Option<(Lsn, u64)> {
    let (lsn, position) = id.rsplit_once(':')?;
    Some((lsn.parse().ok()?, position.parse().ok()?))
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

impl Publishing<'_> {
    /// Waits until the stream has acknowledged every message; returns (published, skipped).
    pub fn finish(mut self) -> Result<(u64, u64)> {
        self.send()?;
        Ok((self.rows - self.skipped, self.skipped))
    }

    /// Publishes the pending messages and waits for every acknowledgement.
    fn send(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let (js, subject) = (&self.nats.js, &self.nats.subject);
        runtime().block_on(async {
            let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(pending.len());
            for (id, payload) in pending {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                let ack = js
                    .publish_with_headers(subject.clone(), headers, payload.into())
                    .await
                    .context("publishing a change to JetStream")?;
                acks.push(ack);
            }
            for ack in acks {
                ack.into_future()
                    .await
                    .context("JetStream did not acknowledge a change")?;
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
            object.insert((*name).to_owned(), json(value));
        }
        object.insert("position".into(), position.into());
        let payload = serde_json::to_vec(&object)?;
        self.pending.push((format!("{lsn}:{position}"), payload));
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
    fn ids_and_stream_names() {
        assert_eq!(parse_id("16/B374D848:12"), Some((Lsn(0x16_B374_D848), 12)));
        assert_eq!(parse_id("x"), None);
        assert_eq!(stream_name("iot.events.changes"), "IOT_EVENTS_CHANGES");
        assert_eq!(
            json(&Value::Timestamp(1_000_000)),
            Json::from("1970-01-01T00:00:01.000000Z")
        );
    }
}
