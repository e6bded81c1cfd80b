"""Consumer groups with real clients: confluent-kafka (librdkafka), aiokafka, kafka-python.

Group membership (join/sync/heartbeat/leave), eager and cooperative assignors, static membership, session
timeouts, committed offsets across a broker restart, admin list/describe/delete of groups, and the
``__consumer_offsets`` topic as clients see it. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

pytestmark = pytest.mark.timeout(90)

FAST = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def _group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(15)


def _produce(bootstrap: str, topic: str, n: int, partitions: int) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False, "linger.ms": 5})
    for i in range(n):
        p.produce(topic, key=str(i).encode(), value=f"v{i}".encode(), partition=i % partitions)
    assert p.flush(15) == 0


def _consumer(bootstrap: str, group: str, **extra):
    from confluent_kafka import Consumer

    conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, **FAST}
    conf.update(extra)
    return Consumer(conf)


def _assigned(c) -> set[int]:
    return {tp.partition for tp in c.assignment()}


def _poll_until(consumers, cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in consumers:
            c.poll(0.05)
        if cond():
            return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: "
                         f"{[sorted(_assigned(c)) for c in consumers]}")


# ---------------------------------------------------------------- confluent-kafka


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_confluent_two_consumers_split_then_one_leaves(broker, topic, strategy):
    _create_topic(broker.bootstrap, topic, 6)
    group = _group()
    conf = {"partition.assignment.strategy": strategy}
    c1 = _consumer(broker.bootstrap, group, **conf)
    c2 = _consumer(broker.bootstrap, group, **conf)
    try:
        c1.subscribe([topic])
        c2.subscribe([topic])
        _poll_until([c1, c2], lambda: _assigned(c1) and _assigned(c2) and
                    len(_assigned(c1)) + len(_assigned(c2)) == 6, 20, "both consumers assigned")
        a1, a2 = _assigned(c1), _assigned(c2)
        assert not a1 & a2 and a1 | a2 == set(range(6)), (a1, a2)
        c2.close()
        _poll_until([c1], lambda: _assigned(c1) == set(range(6)), 20, "the remaining consumer to get everything")
    finally:
        c1.close()
        c2.close()


def test_confluent_consume_commit_resume_after_broker_restart(broker_factory, topic):
    from confluent_kafka import TopicPartition

    b = broker_factory(storage="disk")
    _create_topic(b.bootstrap, topic, 2)
    _produce(b.bootstrap, topic, 20, 2)
    group = _group()
    c = _consumer(b.bootstrap, group)
    c.subscribe([topic])
    seen = []
    deadline = time.monotonic() + 20
    while len(seen) < 12 and time.monotonic() < deadline:
        m = c.poll(0.1)
        if m is not None and not m.error():
            seen.append((m.partition(), m.offset()))
    assert len(seen) >= 12
    c.commit(asynchronous=False)
    committed = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)],
                                                                   timeout=10)}
    expect = {p: max(o for pp, o in seen if pp == p) + 1 for p in (0, 1) if any(pp == p for pp, _ in seen)}
    assert committed == {p: expect.get(p, -1001) for p in (0, 1)}
    c.close()

    b.restart()
    c = _consumer(b.bootstrap, group)
    try:
        again = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)],
                                                               timeout=10)}
        assert again == committed
        c.subscribe([topic])
        rest = []
        deadline = time.monotonic() + 20
        while len(rest) < 20 - len(seen) and time.monotonic() < deadline:
            m = c.poll(0.1)
            if m is not None and not m.error():
                rest.append((m.partition(), m.offset()))
        # resumes right after the last commit: nothing seen twice, nothing missing
        assert sorted(seen + rest) == sorted((i % 2, i // 2) for i in range(20))
    finally:
        c.close()


def test_confluent_static_member_restart_does_not_rebalance(broker, topic):
    _create_topic(broker.bootstrap, topic, 4)
    group = _group()
    events = {"a": [], "b": []}

    def cbs(name):
        return (lambda c, ps: events[name].append(("assign", sorted(p.partition for p in ps))),
                lambda c, ps: events[name].append(("revoke", sorted(p.partition for p in ps))))

    ca = _consumer(broker.bootstrap, group, **{"group.instance.id": "inst-a", "session.timeout.ms": 10000})
    cb = _consumer(broker.bootstrap, group, **{"group.instance.id": "inst-b", "session.timeout.ms": 10000})
    try:
        on_a, rev_a = cbs("a")
        on_b, rev_b = cbs("b")
        ca.subscribe([topic], on_assign=on_a, on_revoke=rev_a)
        cb.subscribe([topic], on_assign=on_b, on_revoke=rev_b)
        _poll_until([ca, cb], lambda: len(_assigned(ca)) + len(_assigned(cb)) == 4 and _assigned(ca)
                    and _assigned(cb), 20, "static members assigned")
        before_b = _assigned(cb)
        a_events = list(events["a"])
        cb.close()     # a static member does not send LeaveGroup on close
        cb = _consumer(broker.bootstrap, group, **{"group.instance.id": "inst-b", "session.timeout.ms": 10000})
        events["b"].clear()
        on_b, rev_b = cbs("b")
        cb.subscribe([topic], on_assign=on_b, on_revoke=rev_b)
        _poll_until([ca, cb], lambda: _assigned(cb) == before_b, 15, "the restarted static member's partitions")
        for _ in range(10):     # give a (wrong) rebalance a chance to show up
            ca.poll(0.1)
            cb.poll(0.1)
        assert events["a"] == a_events, "the other member saw a rebalance"
        assert _assigned(ca) | _assigned(cb) == set(range(4))
    finally:
        ca.close()
        cb.close()


_VICTIM = textwrap.dedent("""
    import sys, time
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "session.timeout.ms": 6000,
                  "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest"})
    c.subscribe([sys.argv[3]])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        c.poll(0.1)
        if c.assignment():
            print("assigned", flush=True)
            break
    while True:
        c.poll(0.1)
""")


def test_confluent_killed_member_expires_after_session_timeout(broker, topic):
    _create_topic(broker.bootstrap, topic, 4)
    group = _group()
    victim = subprocess.Popen([sys.executable, "-c", _VICTIM, broker.bootstrap, group, topic],
                              stdout=subprocess.PIPE, text=True)
    c = _consumer(broker.bootstrap, group)
    try:
        line = victim.stdout.readline()
        assert line.strip() == "assigned"
        c.subscribe([topic])
        _poll_until([c], lambda: 0 < len(_assigned(c)) < 4, 20, "the partitions to be split")
        os.kill(victim.pid, signal.SIGKILL)   # no LeaveGroup
        victim.wait(10)
        t0 = time.monotonic()
        _poll_until([c], lambda: _assigned(c) == set(range(4)), 20, "the session timeout to hand over partitions")
        took = time.monotonic() - t0
        assert 4 <= took <= 15, took    # session.timeout.ms=6000, not immediately and not much later
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
        c.close()


def test_confluent_time_to_first_message(broker, topic):
    """Not a benchmark, a sanity bound: with group.initial.rebalance.delay.ms=0 a fresh group is fast."""
    _create_topic(broker.bootstrap, topic, 1)
    _produce(broker.bootstrap, topic, 1, 1)
    c = _consumer(broker.bootstrap, _group())
    try:
        t0 = time.monotonic()
        c.subscribe([topic])
        m = None
        while time.monotonic() - t0 < 10:
            m = c.poll(0.05)
            if m is not None and not m.error():
                break
        took = time.monotonic() - t0
        assert m is not None and m.value() == b"v0"
        print(f"confluent consumer: subscribe -> first message in {took * 1000:.0f} ms")
        assert took < 2.0
    finally:
        c.close()


def test_consumer_offsets_topic_is_internal_and_readable(broker, topic):
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    from kafkapy.groups import records as grec
    from kafkapy.internal_topics import partition_for

    _create_topic(broker.bootstrap, topic, 1)
    group = _group()
    c = _consumer(broker.bootstrap, group)
    c.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
    c.close()
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert "__consumer_offsets" in md.topics
    assert len(md.topics["__consumer_offsets"].partitions) == 50
    r = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "reader-" + group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    try:
        r.assign([TopicPartition("__consumer_offsets", partition_for(group, 50), 0)])
        found = None
        deadline = time.monotonic() + 10
        while found is None and time.monotonic() < deadline:
            m = r.poll(0.2)
            if m is None or m.error():
                continue
            kind, key = grec.decode_key(m.key())
            if kind == "offset" and key == (group, topic, 0):
                found = grec.decode_offset_value(m.value())
        assert found is not None and found.offset == 7
    finally:
        r.close()


# ---------------------------------------------------------------- aiokafka


def test_aiokafka_group_subscribe_commit_rejoin(broker, topic):
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    _create_topic(broker.bootstrap, topic, 4)
    _produce(broker.bootstrap, topic, 40, 4)
    group = _group()

    def consumer():
        return AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000,
                                heartbeat_interval_ms=500)

    async def main():
        c1 = consumer()
        await c1.start()
        try:
            got = []
            while len(got) < 40:
                batch = await asyncio.wait_for(c1.getmany(timeout_ms=500), 10)
                for _tp, msgs in batch.items():
                    got.extend(msgs)
            assert len(got) == 40
            await c1.commit()
            assert c1.assignment() == {TopicPartition(topic, p) for p in range(4)}
            # a second member joins: the partitions are split between the two
            c2 = consumer()
            await c2.start()
            try:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    await c1.getmany(timeout_ms=100)
                    await c2.getmany(timeout_ms=100)
                    a1, a2 = c1.assignment(), c2.assignment()
                    if a1 and a2 and len(a1) + len(a2) == 4:
                        break
                assert a1 and a2 and not a1 & a2 and len(a1 | a2) == 4, (a1, a2)
                for tp in a2:
                    assert await c2.committed(tp) == 10
            finally:
                await c2.stop()
        finally:
            await c1.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


# ---------------------------------------------------------------- kafka-python (consumer + admin)


def test_kafka_python_group_and_admin(broker, topic):
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.structs import TopicPartition

    _create_topic(broker.bootstrap, topic, 3)
    _produce(broker.bootstrap, topic, 30, 3)
    group = _group()
    c = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group, auto_offset_reset="earliest",
                      enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500,
                      consumer_timeout_ms=3000)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        n = 0
        deadline = time.monotonic() + 20
        while n < 30 and time.monotonic() < deadline:
            for _tp, msgs in c.poll(timeout_ms=500).items():
                n += len(msgs)
        assert n == 30
        c.commit()
        listed = admin.list_groups()
        assert {"group_id": group, "protocol_type": "consumer", "group_state": "Stable",
                "group_type": "classic"} in listed
        desc = admin.describe_groups([group])[group]
        assert desc["group_state"] == "Stable" and desc["protocol_type"] == "consumer"
        assert desc["protocol_data"] == "range" and desc["error"] is None
        [member] = desc["members"]
        assert member["client_host"] == "/127.0.0.1"
        assert member["member_metadata"]["topics"] == [topic]
        assert sorted(member["member_assignment"]["assigned_partitions"][0]["partitions"]) == [0, 1, 2]
        offsets = admin.list_group_offsets({group: None})[group]
        assert {tp: om.offset for tp, om in offsets.items()} == {TopicPartition(topic, p): 10 for p in range(3)}
        assert admin.delete_groups([group]) == {group: "NonEmptyGroupError"}
    finally:
        c.close()
    try:
        deadline = time.monotonic() + 10
        while admin.describe_groups([group])[group]["group_state"] != "Empty" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert admin.describe_groups([group])[group]["group_state"] == "Empty"
        deleted = admin.delete_group_offsets(group, [TopicPartition(topic, 0)])
        assert deleted[TopicPartition(topic, 0)].__name__ == "NoError"
        assert set(admin.list_group_offsets({group: None})[group]) == {TopicPartition(topic, p) for p in (1, 2)}
        assert admin.delete_groups([group]) == {group: "OK"}
        assert group not in [g["group_id"] for g in admin.list_groups()]
        assert admin.list_group_offsets({group: None})[group] == {}
        assert admin.describe_groups([group])[group]["group_state"] == "Dead"
    finally:
        admin.close()
