"""Request control hooks (kafkapy.control) against a real client (confluent-kafka / librdkafka): the failures
a test injects through ``kafkapy.Broker.control`` / ``control_key`` are the ones the client must survive.

What is checked: a Produce answered with NOT_LEADER_OR_FOLLOWER (retriable) is retried and the record stored
once; a Fetch delayed by 1 s is observed and the consumer still gets its record; a connection closed on the
first Metadata makes the client reconnect; an observing hook sees the client's api keys in order. (A Produce
whose answer is lost after the append is in test_idempotent_transactional.py.) Every wait is bounded.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer

import kafkapy
from harness import unique_topic
from kafkapy.control import CLOSE, Delay
from wire.messages.error_codes import ErrorCode

API_VERSIONS, METADATA, PRODUCE, FETCH, INIT_PRODUCER_ID = 18, 3, 0, 1, 22


@pytest.fixture(scope="module")
def broker():
    with kafkapy.Broker() as b:
        yield b


@pytest.fixture
def topic(broker):
    yield broker.create_topic(unique_topic("control"), 1)
    broker.clear_controls()


def end_offset(broker, topic) -> int:
    return broker.call(lambda core: core.partition_log(topic, 0).log_end_offset)


def read_all(bootstrap: str, topic: str, expect: int, timeout: float = 20.0) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g"), "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    out = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                out.append(m.value())
    finally:
        c.close()
    return out


def test_a_retriable_produce_error_is_retried_and_stored_once(broker, topic):
    answered = []

    def not_leader(r):
        answered.append(r.correlation_id)
        return ErrorCode.NOT_LEADER_OR_FOLLOWER

    produces = broker.control_key("Produce", lambda r: None)      # asked first: sees every Produce
    hook = broker.control_key("Produce", not_leader)
    p = Producer({"bootstrap.servers": broker.bootstrap_servers, "retry.backoff.ms": 50, "linger.ms": 0})
    delivered = []
    p.produce(topic, b"once", on_delivery=lambda err, m: delivered.append((err, m.offset())))
    assert p.flush(30) == 0
    del p
    assert hook.fired == 1 and not hook.active and len(answered) == 1
    assert produces.seen >= 2                                     # the client sent it again
    assert delivered == [(None, 0)]
    assert end_offset(broker, topic) == 1
    assert read_all(broker.bootstrap_servers, topic, 1) == [b"once"]


def test_a_delayed_fetch_is_observed_and_the_consumer_still_reads(broker, topic):
    p = Producer({"bootstrap.servers": broker.bootstrap_servers})
    p.produce(topic, b"late")
    assert p.flush(10) == 0
    del p
    delayed = []
    hook = broker.control_key("Fetch", lambda r: (delayed.append(time.monotonic()), Delay(1.0))[1])
    t0 = time.monotonic()
    got = read_all(broker.bootstrap_servers, topic, 1)
    took = time.monotonic() - t0
    assert got == [b"late"]
    assert hook.wait(0) and hook.fired == 1 and len(delayed) == 1
    assert took >= 1.0 + (delayed[0] - t0) - 0.05                 # the record came after the delayed Fetch


def test_a_connection_closed_on_the_first_metadata_is_reopened(broker, topic):
    """librdkafka's own metadata requests are retried on a new connection (an explicit ``list_topics`` whose
    request is the one cut fails instead: that is the client's choice, not the broker's)."""
    metadata_conns = []
    observer = broker.control_key("Metadata", lambda r: metadata_conns.append(r.peer))
    cut = broker.control_key("Metadata", lambda r: CLOSE)
    p = Producer({"bootstrap.servers": broker.bootstrap_servers, "reconnect.backoff.ms": 50, "linger.ms": 0})
    delivered = []
    p.produce(topic, b"after reconnect", on_delivery=lambda err, m: delivered.append((err, m.offset())))
    assert p.flush(30) == 0
    del p
    assert delivered == [(None, 0)]
    assert cut.fired == 1 and not cut.active
    assert observer.seen >= 2 and len(set(metadata_conns)) >= 2  # asked again on a new connection


def test_an_observer_sees_the_clients_api_keys_in_order(broker, topic):
    keys = []
    broker.control(lambda r: keys.append(r.api_key))
    p = Producer({"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True, "linger.ms": 0})
    p.produce(topic, b"watched")
    assert p.flush(20) == 0
    del p
    assert keys[0] == API_VERSIONS                               # librdkafka asks for versions first ...
    assert METADATA in keys and INIT_PRODUCER_ID in keys and PRODUCE in keys
    assert keys.index(METADATA) < keys.index(INIT_PRODUCER_ID) < keys.index(PRODUCE)   # ... then in this order


def test_the_readme_example_runs():
    """README.md's "Testing failure handling" example, as written there."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index("### Testing failure handling"):]
    code = section[section.index("```python\n") + len("```python\n"):]
    code = code[:code.index("```")]
    exec(compile(code, "README.md example", "exec"), {})
