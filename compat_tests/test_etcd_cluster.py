"""Brokers in separate processes, coordinated through etcd (issue 13, first slice): three ``python -m kafkapy --store
etcd`` processes on one throwaway etcd; kill -9 of a partition's leader loses nothing acknowledged, another broker
takes over once the killed one's lease expires, and the killed broker, restarted on its data dir and port, rejoins the
ISR.

Skips only where no etcd binary exists (Debian's etcd-server, or $KAFKAPY_ETCD).
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from harness import BrokerProcess  # compat_tests/ is on sys.path (conftest)

from kafkapy.cluster.etcd_server import INSTALL_HINT, EtcdServer, etcd_binary

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(etcd_binary() is None, reason=f"no etcd binary found ({INSTALL_HINT})")]

SETTINGS = {"broker.session.timeout.ms": 2000, "broker.heartbeat.interval.ms": 500,
            "replica.fetch.wait.max.ms": 200, "default.replication.factor": 3, "min.insync.replicas": 2,
            "offsets.topic.replication.factor": 3, "transaction.state.log.replication.factor": 3}


def wait_for(what: str, cond, timeout: float, interval: float = 0.2):
    """Poll ``cond()`` until it returns something truthy (returned), bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except KafkaException as e:          # metadata from a broker that just went: ask again
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def partition_meta(bootstrap: str, topic: str):
    """(leader, replicas, isr) of partition 0 as a broker's Metadata says, or None while unknown."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(topic, timeout=5)
    t = md.topics.get(topic)
    if t is None or t.error is not None or 0 not in t.partitions:
        return None
    p = t.partitions[0]
    if p.error is not None and p.leader < 0:
        return None
    return p.leader, list(p.replicas), sorted(p.isrs)


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "fetch.queue.backoff.ms": 10})
    c.assign([TopicPartition(topic, 0, 0)])
    out: list[tuple[int, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                out.append((m.offset(), m.value()))
        end = time.monotonic() + 1.0            # a duplicate beyond what was expected shows up too
        while time.monotonic() < end:
            m = c.poll(0.1)
            if m is not None and not m.error():
                out.append((m.offset(), m.value()))
    finally:
        c.close()
    offsets = [o for o, _ in out]
    assert offsets == sorted(set(offsets)), "offsets read out of order or twice"
    return [v for _, v in out]


@pytest.fixture
def etcd(tmp_path):
    server = EtcdServer(dir=str(tmp_path)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def brokers(etcd, tmp_path):
    """Three broker processes on ``etcd`` (disk storage, their own data dirs): {node_id: BrokerProcess}."""
    procs: dict[int, BrokerProcess] = {}
    overrides = [a for k, v in SETTINGS.items() for a in ("-o", f"{k}={v}")]
    try:
        for node in (1, 2, 3):
            procs[node] = BrokerProcess(storage="disk", extra_args=[
                "--store", "etcd", "--etcd", etcd.endpoint, "--cluster-prefix", "compat", "--node-id", str(node),
                *overrides])
            procs[node].start(tmp_path / f"broker{node}" / "data")
        yield procs
    finally:
        codes = {n: p.stop() for n, p in procs.items()}
        bad = {n: c for n, c in codes.items() if c not in (0, None, -9)}
        assert not bad, f"brokers exited with {bad} on SIGTERM\n" + "\n".join(
            procs[n].log_tail(2000) for n in bad)


def test_leader_kill9_loses_nothing_and_the_broker_rejoins(brokers):
    topic = f"etcd-kill-{time.monotonic_ns()}"
    bootstrap = ",".join(p.bootstrap for p in brokers.values())
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})],
                              operation_timeout=10)[topic]
    fut.result(timeout=20)
    leader, replicas, isr = wait_for("the topic with a leader and a full ISR", lambda: (
        (m := partition_meta(bootstrap, topic)) and m[0] > 0 and len(m[2]) == 3 and m), 20)
    assert sorted(replicas) == [1, 2, 3]

    acked: list[bytes] = []
    failed: list[str] = []

    def delivered(err, msg):
        if err is None:
            acked.append(msg.value())
        else:
            failed.append(str(err))

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, "message.timeout.ms": 60000, "retry.backoff.ms": 100,
                         "topic.metadata.refresh.interval.ms": 1000})
    sent = 0

    def produce(n: int, flush: float) -> None:
        nonlocal sent
        for _ in range(n):
            producer.produce(topic, value=f"v{sent:06d}".encode(), on_delivery=delivered)
            sent += 1
            producer.poll(0)
        assert producer.flush(flush) == 0, f"records not delivered within {flush:.0f}s"

    produce(300, 30)
    assert len(acked) == 300 and not failed

    victim = brokers[leader]
    victim.kill9()
    kill_time = time.monotonic()
    survivors = ",".join(p.bootstrap for n, p in brokers.items() if n != leader)
    for _ in range(10):                      # keep producing through the failover
        produce(50, 60)
    new_leader = wait_for("a new leader", lambda: (
        (m := partition_meta(survivors, topic)) and m[0] > 0 and m[0] != leader and m), 20)[0]
    failover = time.monotonic() - kill_time
    assert not failed, failed[:5]
    assert len(acked) == sent == 800

    got = read_all(survivors, topic, len(acked))
    assert len(got) == len(set(got)), "a record read twice"
    assert got == acked, "acknowledged records not read back once each, in order"

    # the killed broker comes back on its data dir and port and catches up into the ISR
    victim.restart()                         # already dead: starts it again on the same data dir and port
    wait_for("the restarted broker back in the ISR", lambda: (
        (m := partition_meta(bootstrap, topic)) and leader in m[2] and len(m[2]) == 3 and m), 30)
    produce(50, 30)
    assert len(acked) == 850 and not failed
    producer.flush(5)
    print(f"leader {leader} killed; new leader {new_leader} (failover and 500 records in {failover:.1f}s)")
