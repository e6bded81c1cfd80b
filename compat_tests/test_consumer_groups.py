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


@pytest.mark.timeout(40)
@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_confluent_three_consumers_split_six_partitions(broker, topic, strategy):
    _create_topic(broker.bootstrap, topic, 6)
    group = _group()
    cs = [_consumer(broker.bootstrap, group, **{"partition.assignment.strategy": strategy}) for _ in range(3)]
    try:
        for c in cs:
            c.subscribe([topic])
        _poll_until(cs, lambda: all(_assigned(c) for c in cs) and sum(len(_assigned(c)) for c in cs) == 6,
                    25, "three consumers assigned")
        parts = [_assigned(c) for c in cs]
        assert set().union(*parts) == set(range(6)), parts                       # no gap
        assert sum(len(p) for p in parts) == 6, parts                            # no overlap
        assert sorted(len(p) for p in parts) == [2, 2, 2], parts                 # every assignor balances 6 / 3
    finally:
        for c in cs:
            c.close()


@pytest.mark.timeout(40)
def test_confluent_member_leaves_while_producing_no_message_lost(broker, topic):
    """Three members consume and commit record by record while a producer writes 600 keyed records; one member
    leaves midway. What the group consumed covers every record, and the committed offsets reach the end."""
    import threading

    from confluent_kafka import KafkaException, Producer, TopicPartition

    _create_topic(broker.bootstrap, topic, 6)
    group = _group()
    n = 600
    cs = [_consumer(broker.bootstrap, group, **{"heartbeat.interval.ms": 300}) for _ in range(3)]
    seen: set[bytes] = set()
    produced = threading.Event()
    errors: list = []

    def produce():
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 2})
        for i in range(n):
            p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                      on_delivery=lambda e, m: e and errors.append(e))
            p.poll(0)
            if i % 20 == 0:
                time.sleep(0.02)
        unflushed = p.flush(15)
        if unflushed:
            errors.append(f"{unflushed} record(s) not delivered")
        produced.set()

    def drain(c):
        m = c.poll(0.02)
        if m is None or m.error():
            return
        seen.add(m.key())
        try:
            c.commit(message=m, asynchronous=False)
        except KafkaException:      # a commit racing a rebalance is refused; the record comes again
            pass

    try:
        for c in cs:
            c.subscribe([topic])
        _poll_until(cs, lambda: sum(len(_assigned(c)) for c in cs) == 6 and all(_assigned(c) for c in cs), 20,
                    "three members assigned")
        t = threading.Thread(target=produce, daemon=True)
        t.start()
        left = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for c in cs:
                drain(c)
            if not left and len(seen) >= n // 4:
                cs[2].close()        # LeaveGroup while records keep coming
                cs = cs[:2]
                left = True
            if produced.is_set() and len(seen) == n:
                break
        t.join(5)
        assert not errors, errors
        assert left
        assert seen == {f"k{i}".encode() for i in range(n)}, f"missing {n - len(seen)} record(s)"
        # the survivors own everything, and what the group committed reaches every partition's end
        assert _assigned(cs[0]) | _assigned(cs[1]) == set(range(6))
        tps = [TopicPartition(topic, p) for p in range(6)]
        ends = {p: cs[0].get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(6)}
        assert sum(ends.values()) == n
        committed = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for c in cs:
                drain(c)
            committed = {tp.partition: tp.offset for tp in cs[0].committed(tps, timeout=10)}
            if committed == ends:
                break
        assert committed == ends
    finally:
        for c in cs:
            c.close()


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


# ---------------------------------------------------------------- Java client


@pytest.mark.timeout(40)
@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_java_two_consumers_split_partitions(broker, java, topic, strategy):
    """Two Java consumers (KClient group-assign) in one group: both report their assignment at the same
    wall-clock moment, while both are still members; the partitions are split with no overlap and no gap."""
    import json as _json
    import threading

    _create_topic(broker.bootstrap, topic, 6)
    group = _group()
    report_at = int(time.time() * 1000) + 12000
    out: dict[int, list] = {}

    def member(i):
        out[i] = java.run(broker.bootstrap, "group-assign", topic, group, "--strategy", strategy,
                          "--report-at", report_at, "--linger-ms", 1500, timeout=35)

    threads = [threading.Thread(target=member, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(38)
    assert set(out) == {0, 1}, out
    reports = [next(line for line in out[i] if "report" in line) for i in range(2)]
    a, b = set(reports[0]["report"]), set(reports[1]["report"])
    assert a and b and not a & b and a | b == set(range(6)), (_json.dumps(out[0]), _json.dumps(out[1]))
    assert len(a) == len(b) == 3
    assert reports[0]["generation"] == reports[1]["generation"] >= 1
    # each member's ConsumerRebalanceListener, replayed up to the report, gives the reported partitions
    # (eager: revoke all, assign all; cooperative: incremental assign and revoke)
    for i, parts in enumerate((a, b)):
        owned: set[int] = set()
        for ev in out[i]:
            if "report" in ev:
                break
            if ev.get("event") == "assigned":
                owned |= set(ev["partitions"])
            elif ev.get("event") == "revoked":
                owned -= set(ev["partitions"])
        assert owned == parts, (i, out[i])


# ---------------------------------------------------------------- kcat -G


def _kcat(*args, timeout=30) -> list[str]:
    proc = subprocess.run(["kcat", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [ln for ln in proc.stdout.splitlines() if ln]


@pytest.mark.timeout(40)
def test_kcat_group_consume_commit_resume(broker, topic):
    import shutil

    from confluent_kafka import TopicPartition

    if shutil.which("kcat") is None:
        pytest.skip("kcat not installed")
    _create_topic(broker.bootstrap, topic, 2)
    _produce(broker.bootstrap, topic, 20, 2)
    group = _group()
    fmt = "%p:%o:%s\\n"
    # kcat -G with -o would seek every assigned partition to that offset; auto.offset.reset only applies
    # where the group has no committed offset, which is what a resume needs
    common = ["-b", broker.bootstrap, "-q", "-f", fmt, "-X", "session.timeout.ms=6000",
              "-X", "heartbeat.interval.ms=500", "-X", "auto.offset.reset=earliest"]
    # first run: balanced consumer, reads from the beginning, stops after 12 records, commits on close
    first = _kcat(*common, "-c", 12, "-G", group, topic)
    assert len(first) == 12
    rows = [tuple(x.split(":", 2)) for x in first]
    last = {}
    for p, o, _v in rows:
        last[int(p)] = max(last.get(int(p), -1), int(o))
    c = _consumer(broker.bootstrap, group)
    try:
        committed = {tp.partition: tp.offset for tp in
                     c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)}
    finally:
        c.close()
    assert committed == {p: last[p] + 1 if p in last else -1001 for p in (0, 1)}, (committed, first)
    # second run: resumes after the commit and exits at the end of both partitions (-e)
    second = _kcat(*common, "-e", "-G", group, topic)
    got = sorted((int(p), int(o)) for p, o, _v in (x.split(":", 2) for x in first + second))
    assert got == sorted((i % 2, i // 2) for i in range(20)), (first, second)
