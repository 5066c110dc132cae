//! Where this feed resumes on a Kafka topic: the id of the last change each partition holds as
//! a `read_committed` consumer sees it (what consumers see is what counts as delivered), the
//! newest of them. Read after the producer's `init_transactions`, which ends a transaction a
//! killed run left open, so the partitions' stable offsets are not held back by it.
//!
//! The last offsets of a partition are transaction markers, and records of aborted
//! transactions are filtered out, so the last change is found by reading the partition's tail,
//! widening the window until one is found or the partition's start is reached.

use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::super::ids::{self, Place};
use super::ID_HEADER;
use crate::feed::pgoutput::Lsn;

/// How long a broker may take to answer.
const WAIT: Duration = Duration::from_secs(30);

/// The newest (commit LSN, position) of this feed's changes on `topic`, whose `partitions`
/// are given; `None` when it holds none. A partition whose last message is not this feed's
/// change is refused.
pub fn resume_point(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    scope: &str,
) -> Result<Option<(Lsn, u64)>> {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", "export-events-resume")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .context("creating a Kafka consumer to find where the topic ends")?;
    let place = Place {
        name: &format!("topic {topic}"),
        flag: "--topic",
    };
    let mut newest = None;
    for partition in 0..partitions {
        let Some(id) = last_id(&consumer, topic, partition)? else {
            continue;
        };
        let point = ids::resume_point(id.as_deref(), scope, &place)?;
        newest = newest.max(point);
    }
    Ok(newest)
}

/// The `export-events.id` of the last committed message of `partition` (`Some(None)` when it
/// has none), or `None` when the partition holds no committed message.
fn last_id(consumer: &BaseConsumer, topic: &str, partition: i32) -> Result<Option<Option<String>>> {
    let (low, stable) = consumer
        .fetch_watermarks(topic, partition, WAIT)
        .with_context(|| format!("reading the offsets of {topic} partition {partition}"))?;
    let mut window = 64;
    loop {
        let start = (stable - window).max(low);
        if start >= stable {
            return Ok(None);
        }
        let mut from = TopicPartitionList::new();
        from.add_partition_offset(topic, partition, Offset::Offset(start))?;
        consumer.assign(&from)?;
        let mut last = None;
        loop {
            match consumer.poll(WAIT) {
                Some(Ok(message)) => {
                    let id = message.headers().and_then(|headers| {
                        headers
                            .iter()
                            .find(|h| h.key == ID_HEADER)
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    });
                    last = Some(id);
                    if message.offset() + 1 >= stable {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    return Err(e).with_context(|| {
                        format!("reading the last messages of {topic} partition {partition}")
                    })
                }
                None => {
                    return Err(anyhow!(
                        "reading the last messages of {topic} partition {partition}: no answer \
                         within {} s",
                        WAIT.as_secs()
                    ))
                }
            }
        }
        if last.is_some() || start == low {
            return Ok(last);
        }
        window *= 8;
    }
}
