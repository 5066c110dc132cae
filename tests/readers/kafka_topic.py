"""Reads a Kafka topic with confluent-kafka (librdkafka's Python client), a reader independent of
export-events, for the tests.

    kafka_topic.py BOOTSTRAP TOPIC

Reads every partition from its start to its end with isolation.level=read_committed (messages
of aborted or open transactions are not read), and prints one JSON list: per message
[partition, offset, key, {header: value}, value as JSON], partition by partition in offset
order.
"""
import json
import sys

from confluent_kafka import Consumer, KafkaError, TopicPartition

bootstrap, topic = sys.argv[1:3]
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": "export-events-test-reader",
    "enable.auto.commit": False,
    "enable.partition.eof": True,
    "isolation.level": "read_committed",
})
metadata = consumer.list_topics(topic, timeout=30)
partitions = sorted(metadata.topics[topic].partitions)
out = []
for partition in partitions:
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
    if high <= low:
        continue
    consumer.assign([TopicPartition(topic, partition, low)])
    while True:
        message = consumer.poll(30)
        if message is None:
            sys.exit(f"no answer reading {topic} partition {partition}")
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                break
            sys.exit(str(message.error()))
        headers = {k: (v.decode() if v is not None else None) for k, v in (message.headers() or [])}
        key = message.key().decode() if message.key() is not None else None
        out.append([partition, message.offset(), key, headers, json.loads(message.value())])
        if message.offset() + 1 >= high:
            break
consumer.close()
print(json.dumps(out))
