//! Delivery to a Kafka topic (`changes --to kafka://broker:9092 --topic hub.events.changes`),
//! exactly once, through librdkafka (`rdkafka`, built from its bundled source): the maintained
//! client with Kafka's transactions. One Kafka transaction per batch; the slot is confirmed only
//! after it commits. The producer's `transactional.id` is the feed's scope
//! (`export-events-<system identifier>-<database OID>-<slot>`), so a new run fences an old one
//! that is still alive and ends the transaction a killed one left open.
//!
//! A message per change: keyed by the event's id (per-key order, and compaction keeps each
//! event's newest change), the same JSON as JetStream's, and the headers `lsn` (the commit LSN),
//! `position` (in the transaction) and `export-events.id` (`<scope>:<lsn>:<position>`). A run
//! starts from the slot's confirmed position, which can be behind what the topic holds (killed
//! after the commit, before the confirmation), so it reads where this feed's changes end on the
//! topic as a `read_committed` consumer sees it ([`tail`]) and skips up to there.

mod config;
mod tail;

use std::cell::Cell;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use super::api::{ChangeBatch, ChangeSink, Registration, Request, SinkPlan};
use super::files::record_folder;
use super::message::Encoder;
use crate::error::UsageError;
use crate::fault;
use crate::feed::change::{Changes, Value};
use crate::feed::pgoutput::Lsn;
use crate::model::Zone;
use crate::runtime::runtime;
use crate::store::scratch::state_file;
use crate::store::{RunLock, Target, Wait};

/// The header holding a change's id, which says whose change it is and where it stands.
const ID_HEADER: &str = "export-events.id";

/// How long a broker may take to answer a request of the run's setup.
const WAIT: Duration = Duration::from_secs(30);

/// How long sending a batch and committing it may take (librdkafka retries meanwhile, through
/// a broker's restart): past it, the run fails and the next one finds what was committed.
const COMMIT_WAIT: Duration = Duration::from_secs(60);

/// The registry's entry: `--to kafka://host:9092`.
pub const SINK: Registration = Registration {
    example: "--to kafka://127.0.0.1:9092",
    takes: |request| request.to.is_some_and(|to| to.starts_with("kafka://")),
    fallback: false,
    resolve,
};

/// A Kafka destination, resolved.
#[derive(Debug)]
struct Topic {
    server: config::Server,
    topic: String,
    create: bool,
    record: Target,
}

fn resolve(request: &Request) -> Result<Box<dyn SinkPlan>, UsageError> {
    let topic = request.subject;
    let legal = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !legal {
        return Err(UsageError(format!(
            "--topic {topic}: Kafka takes 1 to 249 letters, digits, '.', '_' and '-', such as \
             hub.events.changes"
        )));
    }
    Ok(Box::new(Topic {
        server: config::Server::resolve(request.to.unwrap_or_default(), std::env::vars())?,
        topic: topic.to_owned(),
        create: request.create_stream,
        record: record_folder(request)?,
    }))
}

impl SinkPlan for Topic {
    fn record_folder(&self) -> Target {
        self.record.clone()
    }

    fn open(&self, scope: &str, zone: Zone, _quiet: bool) -> Result<Box<dyn ChangeSink + '_>> {
        Ok(Box::new(Kafka::connect(self, scope, zone)?))
    }
}

/// A Kafka destination, connected, its transactions initialised.
struct Kafka<'a> {
    to: &'a Topic,
    config: ClientConfig,
    producer: ThreadedProducer<DefaultProducerContext>,
    scope: String,
    /// The id of this feed's last change the topic holds.
    last: Cell<Option<(Lsn, u64)>>,
    zone: Zone,
}

/// The error of a Kafka call, said as what was being done, with the server as lines show it.
fn failed(doing: &str, to: &Topic, e: KafkaError) -> anyhow::Error {
    let fenced = matches!(
        &e,
        KafkaError::Transaction(t) if matches!(
            t.code(),
            RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced
        )
    );
    if fenced {
        return anyhow!(
            "{doing} on {} ({}): another run of this feed has taken the topic over (its \
             transactional id was fenced); run one feed per slot",
            to.topic,
            to.server.shown
        );
    }
    anyhow!(e).context(format!("{doing} on {} ({})", to.topic, to.server.shown))
}

impl<'a> Kafka<'a> {
    fn connect(to: &'a Topic, scope: &str, zone: Zone) -> Result<Self> {
        let config = to.server.config();
        let producer: ThreadedProducer<DefaultProducerContext> = config
            .clone()
            .set("transactional.id", format!("export-events-{scope}"))
            .set("allow.auto.create.topics", "false")
            // A batch's transaction is open from its first change to its commit: a large
            // PostgreSQL transaction takes longer than librdkafka's 60 s (brokers allow up to
            // 15 minutes by default, transaction.max.timeout.ms).
            .set("transaction.timeout.ms", "900000")
            .create()
            .map_err(|e| failed("setting up a Kafka producer", to, e))?;
        let kafka = Self {
            to,
            config,
            producer,
            scope: scope.to_owned(),
            last: Cell::new(None),
            zone,
        };
        kafka.partitions()?;
        // Fences an older run of this feed and ends the transaction a killed one left open.
        kafka
            .producer
            .init_transactions(WAIT)
            .map_err(|e| failed("starting Kafka transactions", to, e))?;
        kafka.resume()?;
        Ok(kafka)
    }

    /// The topic's partitions; a topic that does not exist is created with `--create-stream`
    /// (the brokers' default partitions and replication), refused otherwise.
    fn partitions(&self) -> Result<i32> {
        let to = self.to;
        let count = || -> Result<Option<i32>> {
            let metadata = self
                .producer
                .client()
                .fetch_metadata(Some(&to.topic), WAIT)
                .map_err(|e| failed("reading the topic's metadata", to, e))?;
            Ok(metadata
                .topics()
                .iter()
                .find(|t| t.name() == to.topic && t.error().is_none())
                .map(|t| t.partitions().len() as i32)
                .filter(|n| *n > 0))
        };
        if let Some(n) = count()? {
            return Ok(n);
        }
        if !to.create {
            anyhow::bail!(UsageError(format!(
                "no Kafka topic {} at {}: create it, or pass --create-stream to have \
                 export-events create it",
                to.topic, to.server.shown
            )));
        }
        let admin: AdminClient<DefaultClientContext> = self
            .config
            .create()
            .map_err(|e| failed("setting up a Kafka admin client", to, e))?;
        let topic = NewTopic::new(&to.topic, -1, TopicReplication::Fixed(-1));
        let options = AdminOptions::new().operation_timeout(Some(WAIT));
        let created = runtime()
            .block_on(admin.create_topics([&topic], &options))
            .map_err(|e| failed("creating the topic", to, e))?;
        for result in created {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => anyhow::bail!(
                    "creating Kafka topic {} at {}: {code}",
                    to.topic,
                    to.server.shown
                ),
            }
        }
        eprintln!("export-events: created Kafka topic {}", to.topic);
        count()?.context("the topic just created has no partition")
    }

    /// Reads where this feed's changes end on the topic.
    fn resume(&self) -> Result<()> {
        let partitions = self.partitions()?;
        let last = tail::resume_point(&self.config, &self.to.topic, partitions, &self.scope)?;
        self.last.set(last);
        Ok(())
    }
}

impl ChangeSink for Kafka<'_> {
    fn shown(&self) -> String {
        format!("{} ({})", self.to.topic, self.to.server.shown)
    }

    fn lock(&self, slot: &str, wait: Wait) -> Result<RunLock> {
        let path = state_file(&format!("kafka {slot}"), "lock");
        RunLock::acquire(&path, &format!("slot {slot}"), wait)
    }

    fn end(&self) -> Result<Option<Lsn>> {
        Ok(self.last.get().map(|(lsn, _)| lsn))
    }

    /// Reads the resume point again (a session that ended mid-batch aborted its transaction).
    fn prepare(&self, _from: Lsn) -> Result<()> {
        self.resume()
    }

    fn batch(&self, _from: Lsn) -> Result<Box<dyn ChangeBatch + '_>> {
        self.producer
            .begin_transaction()
            .map_err(|e| failed("beginning a Kafka transaction", self.to, e))?;
        Ok(Box::new(Transaction {
            kafka: self,
            encoder: Encoder::new(self.zone),
            open: true,
            rows: 0,
            skipped: 0,
        }))
    }
}

/// A batch: one Kafka transaction, aborted unless it commits.
struct Transaction<'a> {
    kafka: &'a Kafka<'a>,
    encoder: Encoder,
    open: bool,
    rows: u64,
    skipped: u64,
}

impl Changes for Transaction<'_> {
    fn push(&mut self, row: &[Value]) -> Result<()> {
        self.rows += 1;
        let kafka = self.kafka;
        let message = self.encoder.next(row)?;
        if message.held(kafka.last.get()) {
            self.skipped += 1;
            return Ok(());
        }
        let key = message.id.map(|id| id.to_string()).unwrap_or_default();
        let payload = message.json()?;
        let (lsn, position) = (message.lsn.to_owned(), message.position.to_string());
        let id = format!("{}:{lsn}:{position}", kafka.scope);
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: "lsn",
                value: Some(lsn.as_str()),
            })
            .insert(Header {
                key: "position",
                value: Some(position.as_str()),
            })
            .insert(Header {
                key: ID_HEADER,
                value: Some(id.as_str()),
            });
        let mut record = BaseRecord::to(&kafka.to.topic)
            .key(key.as_str())
            .payload(payload.as_slice())
            .headers(headers);
        loop {
            match kafka.producer.send(record) {
                Ok(()) => return Ok(()),
                // The producer's queue is full: its own thread is sending; wait a little.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(failed("sending a change", kafka.to, e)),
            }
        }
    }

    fn rows(&self) -> u64 {
        self.rows
    }
}

impl ChangeBatch for Transaction<'_> {
    fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Sends what is queued, then commits the transaction: the batch is delivered when the
    /// commit returns.
    fn finish(mut self: Box<Self>, _to: Lsn) -> Result<String> {
        let kafka = self.kafka;
        let producer = &kafka.producer;
        producer
            .flush(COMMIT_WAIT)
            .map_err(|e| failed("sending the batch", kafka.to, e))?;
        fault::point("kafka.sent");
        producer
            .commit_transaction(COMMIT_WAIT)
            .map_err(|e| failed("committing the batch's transaction", kafka.to, e))?;
        self.open = false;
        let sent = self.rows - self.skipped;
        Ok(match self.skipped {
            0 => format!("{sent} messages"),
            s => format!("{sent} messages ({s} already in the topic, skipped)"),
        })
    }
}

impl Drop for Transaction<'_> {
    /// A batch not committed is aborted: its messages are never seen by `read_committed`
    /// consumers, and the next batch can begin.
    fn drop(&mut self) {
        if self.open {
            let _ = self.kafka.producer.abort_transaction(WAIT);
        }
    }
}
