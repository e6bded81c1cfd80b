"""Log compaction seen through a real client (confluent-kafka / librdkafka): a cleanup.policy=compact topic keeps
only the latest value per key, at its original offset; keyless records are rejected."""

from __future__ import annotations

import time
import uuid

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

DEADLINE_S = 30


def _create(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, 1, 1, config=configs)], operation_timeout=10)[topic]
    fut.result(timeout=15)


def _produce(producer: Producer, topic: str, key, value, sink: list) -> None:
    def done(err, msg):
        sink.append((err, key, value, None if err else msg.offset()))

    producer.produce(topic=topic, key=key, value=value, on_delivery=done)


def _read_all(bootstrap: str, topic: str) -> list[tuple[int, bytes | None, bytes | None]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex}", "enable.auto.commit": False,
                  "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        out = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                raise AssertionError(f"consume error {m.error()}")
            out.append((m.offset(), m.key(), m.value()))
        raise AssertionError(f"no end of partition within 15 s; got {out}")
    finally:
        c.close()


def test_compacted_topic_keeps_latest_value_per_key(broker_factory, topic):
    b = broker_factory(extra_args=["-o", "log.cleaner.backoff.ms=100", "-o", "log.retention.check.interval.ms=200"])
    _create(b.bootstrap, topic, {"cleanup.policy": "compact", "segment.ms": "100", "segment.bytes": "1048576",
                                 "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "86400000"})
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "enable.idempotence": False})
    sent: list = []
    for round_ in range(4):
        for k in range(5):
            _produce(p, topic, b"key-%d" % k, b"value-%d-%d" % (k, round_), sent)
        p.flush(10)
    _produce(p, topic, b"key-1", None, sent)          # tombstone for key-1
    p.flush(10)
    assert all(err is None for err, *_ in sent), sent
    latest = {}
    for _err, key, value, offset in sent:
        latest[key] = (offset, key, value)
    # wait past segment.ms, then one more record: the log rolls and everything before becomes cleanable
    time.sleep(0.3)
    _produce(p, topic, b"roll", b"r", sent)
    p.flush(10)
    assert sent[-1][0] is None
    latest[b"roll"] = (sent[-1][3], b"roll", b"r")
    expected = sorted(latest.values())

    deadline = time.monotonic() + DEADLINE_S
    got = None
    while time.monotonic() < deadline:
        got = _read_all(b.bootstrap, topic)
        if got == expected:
            break
        time.sleep(0.3)
    assert got == expected, f"after {DEADLINE_S}s: {got}\nexpected {expected}\n{b.log_tail(3000)}"
    # offsets were kept: key-4's latest value is where it was produced, and the log end did not move
    assert got[-1][0] == len(sent) - 1
    # the tombstone is still there (delete.retention.ms has not passed)
    assert (latest[b"key-1"][0], b"key-1", None) in got

    # keyless records are refused by a compacted topic (Kafka: INVALID_RECORD)
    errs: list = []
    _produce(p, topic, None, b"no key", errs)
    p.flush(10)
    assert errs and errs[0][0] is not None and errs[0][0].code() == KafkaError.INVALID_RECORD, errs
