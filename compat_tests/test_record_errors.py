"""KIP-467 per-record produce errors seen by real clients: a compacted topic refuses keyless records, and the
broker names them (record_errors). librdkafka (rdkafka_request.c, rd_kafka_msgbatch_handle_Produce_result_record_
errors) fails the named records with INVALID_RECORD (or the partition error when only one record is named) and
the others of the batch with _INVALID_DIFFERENT_RECORD; the Java client (Sender.failBatch) with
InvalidRecordException carrying the broker's message, and KafkaException "Failed to append record because it was
part of a batch which had one more more invalid records" for the others. Nothing of such a batch is stored."""

from __future__ import annotations

import time

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")

from confluent_kafka import KafkaError, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from test_compacted_topics import _read_all  # noqa: E402 - compat_tests/ is on sys.path (conftest)

N = 100
KEYLESS = set(range(0, N, 10))
OTHER_RECORD = "Failed to append record because it was part of a batch which had one more more invalid records"
HOUR = 3_600_000


def key_msg(topic):
    return f"Compacted topic cannot accept message without key in topic partition {topic}-0."


def _create(bootstrap, topic, configs):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=configs)], operation_timeout=10)[topic].result(timeout=15)


def _produce(bootstrap, topic, records, *, one_per_batch, **conf):
    """records: [(key, value, timestamp or 0)]; returns [(index, error or None, offset)] in send order."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False, "acks": "all",
                  "linger.ms": 0 if one_per_batch else 500, "batch.num.messages": 10000, **conf})
    reports = {}
    for i, (key, value, ts) in enumerate(records):
        def done(err, msg, i=i):
            reports[i] = (err, None if err else msg.offset())
        p.produce(topic, key=key, value=value, timestamp=ts, on_delivery=done)
        if one_per_batch:
            assert p.flush(10) == 0
    assert p.flush(15) == 0
    assert sorted(reports) == list(range(len(records)))
    return [(i, *reports[i]) for i in range(len(records))]


def _every_tenth_keyless():
    return [(None if i in KEYLESS else b"k%d" % i, b"v%d" % i, 0) for i in range(N)]


def test_librdkafka_one_batch_with_keyless_records_fails_whole(broker, topic):
    _create(broker.bootstrap, topic, {"cleanup.policy": "compact"})
    reports = _produce(broker.bootstrap, topic, _every_tenth_keyless(), one_per_batch=False)
    codes = {i: err.code() if err else None for i, err, _ in reports}
    assert {i for i, c in codes.items() if c == KafkaError.INVALID_RECORD} == KEYLESS, codes
    assert {i for i, c in codes.items() if c == KafkaError._INVALID_DIFFERENT_RECORD} == set(range(N)) - KEYLESS
    assert _read_all(broker.bootstrap, topic) == []


def test_librdkafka_one_record_per_batch_only_keyless_fail(broker, topic):
    _create(broker.bootstrap, topic, {"cleanup.policy": "compact"})
    reports = _produce(broker.bootstrap, topic, _every_tenth_keyless(), one_per_batch=True)
    failed = {i: err.code() for i, err, _ in reports if err is not None}
    assert failed == {i: KafkaError.INVALID_RECORD for i in KEYLESS}
    delivered = [(off, b"k%d" % i, b"v%d" % i) for i, err, off in reports if err is None]
    assert len(delivered) == N - len(KEYLESS)
    assert [off for off, *_ in delivered] == list(range(len(delivered)))
    assert _read_all(broker.bootstrap, topic) == delivered


def test_librdkafka_invalid_timestamps(broker, topic):
    _create(broker.bootstrap, topic, {"message.timestamp.before.max.ms": str(HOUR)})
    now = int(time.time() * 1000)
    old = now - 2 * HOUR
    records = [(b"k%d" % i, b"v%d" % i, old if i % 3 == 0 else now) for i in range(9)]
    # one batch: the old records are named (INVALID_RECORD, there being several), the others fail with them
    reports = _produce(broker.bootstrap, topic, records, one_per_batch=False)
    codes = [err.code() if err else None for _, err, _ in reports]
    assert codes == [KafkaError.INVALID_RECORD if i % 3 == 0 else KafkaError._INVALID_DIFFERENT_RECORD
                     for i in range(9)]
    # one record per batch: the old ones fail with the partition's INVALID_TIMESTAMP, the rest are stored
    reports = _produce(broker.bootstrap, topic, records, one_per_batch=True)
    codes = [err.code() if err else None for _, err, _ in reports]
    assert codes == [KafkaError.INVALID_TIMESTAMP if i % 3 == 0 else None for i in range(9)]
    assert [k for _, k, _ in _read_all(broker.bootstrap, topic)] == [b"k%d" % i for i in range(9) if i % 3]


# ------------------------------------------------------------------------------------------ Java client


@pytest.fixture
def kc(java, broker):
    return java.bind(broker.bootstrap)


def _java_produce(kc, topic, *opts):
    lines = kc("produce", topic, N, "--acks", "all", "--idempotence", "false", "--key-prefix", "k",
               "--no-key-every", 10, "--report-errors", *opts)
    assert [line["i"] for line in lines] == list(range(N)), lines
    return lines


def test_java_one_batch_with_keyless_records_fails_whole(kc, topic):
    kc("create-topic", topic, 1, "cleanup.policy=compact")
    lines = _java_produce(kc, topic, "--linger-ms", 1000, "--batch-size", 1 << 20)
    for line in lines:
        if line["i"] in KEYLESS:
            assert (line.get("type"), line.get("error")) == ("InvalidRecordException", key_msg(topic)), line
        else:
            assert (line.get("type"), line.get("error")) == ("KafkaException", OTHER_RECORD), line
    assert kc("list-offsets", topic, 0, "latest")[0]["offset"] == 0


def test_java_one_record_per_batch_only_keyless_fail(kc, topic):
    kc("create-topic", topic, 1, "cleanup.policy=compact")
    lines = _java_produce(kc, topic, "--linger-ms", 0, "--flush-each")
    failed = {line["i"]: (line["type"], line["error"]) for line in lines if "error" in line}
    assert failed == {i: ("InvalidRecordException", key_msg(topic)) for i in KEYLESS}
    acked = [(line["i"], line["offset"]) for line in lines if "error" not in line]
    assert [off for _, off in acked] == list(range(N - len(KEYLESS)))
    got = [r for r in kc("consume-assign", topic, 0, 0, N - len(KEYLESS)) if "offset" in r]
    assert [(r["offset"], r["key"]) for r in got] == [(off, f"k-{i}") for i, off in acked]
