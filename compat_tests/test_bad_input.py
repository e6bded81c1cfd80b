"""Hostile and broken input against a live broker: the right error, or only that connection closed, and
everyone else keeps being served."""

from __future__ import annotations

import os
import struct
import threading
import time

import pytest
from confluent_kafka import Producer

from wire import protocol
from wire.messages import create_topics_request as CTQ
from wire.messages import produce_request as PQ
from wire.messages.error_codes import ErrorCode
from wire.records import build_batch

from inprocess import connect, recv_frame  # noqa: E402 - compat_tests/ is on sys.path (conftest)


def _closed(s) -> bool:
    """True when the broker closed the connection (EOF) within the socket timeout."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def call(bootstrap, key, version, body):
    s = connect(bootstrap)
    try:
        s.sendall(protocol.encode_request(key, version, 7, "bad-input-test", body))
        frame = recv_frame(s)
        return protocol.decode_response(key, version, frame)[1]
    finally:
        s.close()


@pytest.fixture
def busy_producer(broker, topic):
    """A well-behaved client producing during the test; the fixture asserts it never saw an error."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False, "linger.ms": 1})
    errors, acked = [], []
    stop = threading.Event()

    def run():
        i = 0
        while not stop.is_set():
            p.produce(topic, value=str(i).encode(), partition=0,
                      on_delivery=lambda e, m: (errors if e else acked).append(e or m.offset()))
            p.poll(0.01)
            i += 1
        p.flush(10)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    yield acked
    stop.set()
    t.join(20)
    assert not errors, errors[:3]
    assert acked == list(range(len(acked))) and len(acked) > 10


@pytest.mark.parametrize("payload", [
    struct.pack(">i", -1) + b"x" * 20,                       # negative size
    struct.pack(">i", 200 * 1024 * 1024) + b"x" * 20,        # beyond socket.request.max.bytes (100 MiB)
    struct.pack(">ihhi", 10, 999, 0, 1) + b"\x00\x00",       # unknown api key
    struct.pack(">ihhi", 10, 3, 77, 1) + b"\x00\x00",        # Metadata v77
    struct.pack(">ihhih", 14, 3, 9, 1, 2) + b"ab" + b"\xff\xff",   # Metadata v9 body cut short
    struct.pack(">i", 8) + os.urandom(8),                    # random bytes
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                    # not Kafka at all
], ids=["negative-size", "oversized", "unknown-key", "unknown-version", "truncated-body", "random", "http"])
def test_bad_frames_close_only_that_connection(broker, busy_producer, payload):
    time.sleep(0.2)
    s = connect(broker.bootstrap)
    try:
        s.sendall(payload)
        assert _closed(s), "the broker should close a connection that sent a bad frame"
    finally:
        s.close()
    # a fresh connection is served normally
    md = call(broker.bootstrap, 3, 12, protocol.API[3].request.MESSAGE(topics=None))
    assert md.brokers and md.cluster_id
    time.sleep(0.2)


def test_api_versions_unknown_version_gets_v0_answer_with_our_versions(broker):
    """KIP-511: an ApiVersions request at a version the broker does not know is answered at v0 with
    UNSUPPORTED_VERSION and the broker's api list, so the client can retry at a version both know."""
    s = connect(broker.bootstrap)
    try:
        s.sendall(struct.pack(">ihhih", 10, 18, 99, 42, -1))
        frame = recv_frame(s)
        corr, resp = protocol.decode_response(18, 0, frame)
        assert corr == 42
        assert resp.error_code == ErrorCode.UNSUPPORTED_VERSION
        versions = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
        assert versions[18] == (0, 4) and versions[0][1] == 11
        # the connection stays usable
        s.sendall(protocol.encode_request(18, 3, 43, "x", protocol.API[18].request.MESSAGE(
            client_software_name="t", client_software_version="1")))
        corr, resp = protocol.decode_response(18, 3, recv_frame(s))
        assert corr == 43 and resp.error_code == 0
    finally:
        s.close()


def _produce(bootstrap, topic, records: bytes, version=9):
    body = PQ.ProduceRequest(transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
        PQ.TopicProduceData(name=topic, partition_data=[PQ.PartitionProduceData(index=0, records=records)])])
    resp = call(bootstrap, 0, version, body)
    return resp.responses[0].partition_responses[0]


def test_produce_errors_per_partition(broker, topic):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "2000"})])[topic].result(10)
    good = build_batch([(b"k", b"v")])
    assert _produce(broker.bootstrap, topic, good).error_code == 0

    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    assert _produce(broker.bootstrap, topic, bytes(bad_crc)).error_code == ErrorCode.CORRUPT_MESSAGE

    wrong_length = bytearray(good)
    struct.pack_into(">i", wrong_length, 8, len(good) + 100)
    # the length runs past the bytes sent: no complete batch (Kafka's ProduceRequest.validateRecords)
    assert _produce(broker.bootstrap, topic, bytes(wrong_length)).error_code == ErrorCode.INVALID_RECORD

    old_magic = bytearray(good)
    old_magic[16] = 1
    assert _produce(broker.bootstrap, topic, bytes(old_magic)).error_code == ErrorCode.INVALID_RECORD
    assert _produce(broker.bootstrap, topic, bytes(old_magic), version=7).error_code == ErrorCode.CORRUPT_MESSAGE

    big = build_batch([(None, os.urandom(5000))])
    r = _produce(broker.bootstrap, topic, big)
    assert r.error_code == ErrorCode.MESSAGE_TOO_LARGE

    r = _produce(broker.bootstrap, "no-such-topic-" + topic, good)
    assert r.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    # nothing bad was stored: the log holds exactly the one good record
    assert _produce(broker.bootstrap, topic, good).base_offset == 1


@pytest.mark.parametrize(("name", "code"), [
    ("", ErrorCode.INVALID_TOPIC_EXCEPTION),
    ("..", ErrorCode.INVALID_TOPIC_EXCEPTION),
    ("has space", ErrorCode.INVALID_TOPIC_EXCEPTION),
    ("x" * 250, ErrorCode.INVALID_TOPIC_EXCEPTION),
])
def test_bad_topic_names(broker, name, code):
    body = CTQ.CreateTopicsRequest(topics=[CTQ.CreatableTopic(name=name, num_partitions=1, replication_factor=1)],
                                   timeout_ms=5000, validate_only=False)
    resp = call(broker.bootstrap, 19, 7, body)
    assert resp.topics[0].error_code == code
    assert resp.topics[0].error_message


def test_topic_collision_and_replication_factor(broker, topic):
    base = topic.replace("-", ".")
    mk = lambda n, rf=1: CTQ.CreatableTopic(name=n, num_partitions=1, replication_factor=rf)  # noqa: E731
    r = call(broker.bootstrap, 19, 7, CTQ.CreateTopicsRequest(topics=[mk(base)], timeout_ms=5000))
    assert r.topics[0].error_code == 0
    r = call(broker.bootstrap, 19, 7, CTQ.CreateTopicsRequest(topics=[mk(base)], timeout_ms=5000))
    assert r.topics[0].error_code == ErrorCode.TOPIC_ALREADY_EXISTS
    r = call(broker.bootstrap, 19, 7, CTQ.CreateTopicsRequest(topics=[mk(base.replace(".", "_"))], timeout_ms=5000))
    assert r.topics[0].error_code == ErrorCode.INVALID_TOPIC_EXCEPTION
    r = call(broker.bootstrap, 19, 7, CTQ.CreateTopicsRequest(topics=[mk(topic + "-rf", 3)], timeout_ms=5000))
    assert r.topics[0].error_code == ErrorCode.INVALID_REPLICATION_FACTOR


def test_api_versions_with_invalid_client_software_name(broker):
    """KIP-511: from v3 the client's software name and version must match [a-zA-Z0-9](?:[a-zA-Z0-9-.]*[a-zA-Z0-9])?;
    Kafka answers INVALID_REQUEST otherwise (ApiVersionsRequest.isValid)."""
    av = protocol.API[18].request.MESSAGE
    bad = call(broker.bootstrap, 18, 3, av(client_software_name="bad name!", client_software_version="1.0"))
    assert bad.error_code == ErrorCode.INVALID_REQUEST and bad.api_keys == []
    good = call(broker.bootstrap, 18, 3, av(client_software_name="my-client", client_software_version="1.0.0"))
    assert good.error_code == 0 and any(k.api_key == 0 for k in good.api_keys)
