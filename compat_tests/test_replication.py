"""Replication and failover through real clients against ``kafkapy.Cluster`` (three brokers in this process, the
metadata in the in-process store): an acknowledged record survives the loss of a broker.

Every scenario checks what the clients observed against what the brokers hold: each acknowledged record read back
exactly once, in offset order; nothing acknowledged while the ISR is below min.insync.replicas; a leader that was
paused, and replaced meanwhile, never acknowledges again and ends with the new leader's log.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from inprocess import connect, request  # compat_tests/ is on sys.path (conftest)

import kafkapy
from kafkapy.control import Delay
from kafkapy.internal_topics import OFFSETS_TOPIC, partition_for
from kafkapy.partition import AppendOrigin
from wire.messages import produce_request as PQ
from wire.messages.error_codes import ErrorCode
from wire.records import build_batch

FAST = {"broker.session.timeout.ms": 1500, "broker.heartbeat.interval.ms": 300, "replica.fetch.wait.max.ms": 200}


def consume_all(bootstrap: str, topic: str, partitions: int, expected: int, timeout: float = 30.0):
    """Every record of ``topic`` (read_committed, from the start): {partition: [(offset, value)]}."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}-{time.monotonic_ns()}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "fetch.queue.backoff.ms": 10})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: dict[int, list] = {p: [] for p in range(partitions)}
    n = 0
    deadline = time.monotonic() + timeout
    try:
        while n < expected and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            out[m.partition()].append((m.offset(), m.value()))
            n += 1
        end = time.monotonic() + 1.0        # anything beyond what was expected (a duplicate) shows up too
        while time.monotonic() < end:
            m = c.poll(0.1)
            if m is not None and not m.error():
                out[m.partition()].append((m.offset(), m.value()))
    finally:
        c.close()
    return out


def check_exactly_once(acked: dict[int, list[bytes]], stored: dict[int, list]) -> None:
    """Every acknowledged value once, in the order it was acknowledged, and nothing that was not produced."""
    for p, values in acked.items():
        got = [v for _o, v in stored[p]]
        offsets = [o for o, _v in stored[p]]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), f"partition {p}: offsets {offsets}"
        assert len(set(got)) == len(got), f"partition {p}: duplicated records"
        positions = {v: i for i, v in enumerate(got)}
        missing = [v for v in values if v not in positions]
        assert not missing, f"partition {p}: {len(missing)} acknowledged records lost, e.g. {missing[:3]}"
        order = [positions[v] for v in values]
        assert order == sorted(order), f"partition {p}: acknowledged records reordered"


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def full_isr(cluster, topic: str, partitions: int, size: int = 3) -> bool:
    return all(len(cluster.isr_for(topic, p)) == size and cluster.leader_for(topic, p) > 0
               for p in range(partitions))


class ContinuousProducer:
    """An idempotent acks=all confluent-kafka producer writing numbered records to every partition in a thread."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        self.p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                           "linger.ms": 5, "message.timeout.ms": 60000, "retry.backoff.ms": 50})
        self.topic, self.partitions = topic, partitions
        self.acked: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        self.errors: list = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _cb(self, err, msg) -> None:
        if err is None:
            self.acked[msg.partition()].append(msg.value())
        else:
            self.errors.append(err)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            for p in range(self.partitions):
                try:
                    self.p.produce(self.topic, b"%d-%d" % (p, i), partition=p, on_delivery=self._cb)
                    self.sent += 1
                except BufferError:
                    pass
            i += 1
            self.p.poll(0.002)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        assert self.p.flush(60) == 0, "records still undelivered after 60 s"


@pytest.mark.parametrize("storage,kills", [("memory", 20), ("disk", 6)])
def test_acks_all_idempotent_producer_loses_nothing_while_leaders_are_killed_again_and_again(storage, kills, tmp_path):
    """Disk: a killed broker reopens its data dir unclean (recovery, producer snapshots, the high-watermark
    checkpoint) before it catches up."""
    rng = random.Random(20261201)
    data_dir = str(tmp_path) if storage == "disk" else None
    with kafkapy.Cluster(3, config=FAST, storage=storage, data_dir=data_dir) as c:
        c.create_topic("kills", 3, 3, {"min.insync.replicas": 2})
        with ContinuousProducer(c.bootstrap_servers, "kills", 3) as prod:
            wait_until(lambda: sum(map(len, prod.acked.values())) > 100, 30, "first acknowledgements")
            for k in range(kills):
                p = rng.randrange(3)
                victim = c.leader_for("kills", p)
                before = sum(map(len, prod.acked.values()))
                c.kill(victim)
                wait_until(lambda p=p, victim=victim: c.leader_for("kills", p) not in (victim, -1), 15,
                           f"kill {k}: a new leader")
                wait_until(lambda before=before: sum(map(len, prod.acked.values())) > before + 10, 30,
                           f"kill {k}: progress")
                c.restart(victim)
                wait_until(lambda: full_isr(c, "kills", 3), 30, f"kill {k}: the ISR whole again")
        assert not prod.errors, prod.errors[:5]
        total = sum(map(len, prod.acked.values()))
        assert total > kills * 10
        stored = consume_all(c.bootstrap_servers, "kills", 3, total)
        check_exactly_once(prod.acked, stored)


def test_two_of_three_down_nothing_is_acknowledged_and_the_committed_prefix_survives():
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("two-down", 1, 3, {"min.insync.replicas": 2})
        p = Producer({"bootstrap.servers": c.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
        for i in range(10):
            p.produce("two-down", b"%d" % i)
        assert p.flush(20) == 0
        leader = c.leader_for("two-down")
        for other in {1, 2, 3} - {leader}:
            c.kill(other)
        wait_until(lambda: c.isr_for("two-down") == [leader], 15, "the ISR to shrink to the leader")
        results = []
        p2 = Producer({"bootstrap.servers": c.bootstrap_servers, "acks": "all", "message.timeout.ms": 3000,
                       "retry.backoff.ms": 100})
        for i in range(5):
            p2.produce("two-down", b"late-%d" % i, on_delivery=lambda err, msg: results.append(err))
        p2.flush(15)
        assert len(results) == 5 and all(err is not None for err in results), results
        assert {e.code() for e in results} <= {KafkaError.NOT_ENOUGH_REPLICAS, KafkaError._MSG_TIMED_OUT}
        log = c.call(lambda cl: cl.core(leader).partition_log("two-down", 0))
        assert c.call(lambda cl: log.log_end_offset) == 10            # refused before the append: nothing stored
        stored = consume_all(c.bootstrap_servers, "two-down", 1, 10)
        assert [v for _o, v in stored[0]] == [b"%d" % i for i in range(10)]


def _raw_produce(host: str, port: int, topic: str, value: bytes, timeout: float = 20.0) -> int:
    """One Produce v9 (acks=-1) straight to one broker; its partition error code."""
    batch = build_batch([(None, value)])
    body = PQ.ProduceRequest(transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
        PQ.TopicProduceData(name=topic, partition_data=[PQ.PartitionProduceData(index=0, records=batch)])])
    with connect(f"{host}:{port}", timeout) as s:
        resp = request(s, 0, 9, body, correlation_id=7, client_id="raw")
    return resp.responses[0].partition_responses[0].error_code


def test_a_paused_leader_replaced_meanwhile_never_acknowledges_again_and_truncates_to_the_new_leader():
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("pause", 1, 3, {"min.insync.replicas": 2})
        p = Producer({"bootstrap.servers": c.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
        for i in range(10):
            p.produce("pause", b"a%d" % i)
        assert p.flush(20) == 0
        old = c.leader_for("pause")
        # the followers stop getting anything new from the old leader: what it appends next is its alone
        hold = c.call(lambda cl: cl.core(old).add_control(
            lambda req: Delay(60) if req.body.replica_id >= 0 else None, key="Fetch", keep=True))
        time.sleep(3 * FAST["replica.fetch.wait.max.ms"] / 1000)     # fetches already waiting there have returned
        log_old = c.call(lambda cl: cl.core(old).partition_log("pause", 0))
        c.call(lambda cl: cl.core(old).partition("pause", 0).append(
            bytearray(build_batch([(None, b"unreplicated")])), AppendOrigin.CLIENT))
        assert c.call(lambda cl: log_old.log_end_offset) == 11
        c.pause(old)
        wait_until(lambda: c.leader_for("pause") not in (old, -1), 15, "a new leader")
        new = c.leader_for("pause")
        # a producer that knows the new leader (an old one would wait out its request timeout on the hung broker)
        p = Producer({"bootstrap.servers": c.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
        for i in range(5):
            p.produce("pause", b"b%d" % i)
        assert p.flush(20) == 0                                  # acknowledged by the new leader and its follower
        # a request sent to the old leader while it hangs is answered only after it is back: not as leader
        answer = []
        t = threading.Thread(target=lambda: answer.append(_raw_produce("127.0.0.1", c.nodes[old].port, "pause",
                                                                       b"to-the-old-leader")))
        t.start()
        time.sleep(0.5)
        assert not answer                                         # hung
        c.call(lambda cl: hold.remove())
        c.resume(old)
        t.join(20)
        assert answer == [ErrorCode.NOT_LEADER_OR_FOLLOWER]
        new_log = c.call(lambda cl: cl.core(new).partition_log("pause", 0))

        def same_log() -> bool:
            return c.call(lambda cl: (log_old.log_end_offset, bytes(log_old.read(0, 1 << 20))) ==
                          (new_log.log_end_offset, bytes(new_log.read(0, 1 << 20))))
        wait_until(same_log, 20, "the old leader to truncate and catch up")
        stored = consume_all(c.bootstrap_servers, "pause", 1, 15)
        assert [v for _o, v in stored[0]] == [b"a%d" % i for i in range(10)] + [b"b%d" % i for i in range(5)]


@pytest.mark.parametrize("unclean", [False, True])
def test_unclean_leader_election(unclean):
    with kafkapy.Cluster(3, config=FAST) as c:
        topic = f"unclean-{unclean}".lower()
        c.create_topic(topic, 1, 3, {"min.insync.replicas": 1, "unclean.leader.election.enable": str(unclean).lower()})
        leader = c.leader_for(topic)
        followers = sorted({1, 2, 3} - {leader})
        for f in followers:
            c.kill(f)
        wait_until(lambda: c.isr_for(topic) == [leader], 15, "the ISR to shrink to the leader")
        p = Producer({"bootstrap.servers": c.bootstrap_servers, "acks": "all"})
        p.produce(topic, b"only-on-the-leader")
        assert p.flush(10) == 0
        c.kill(leader)
        c.restart(followers[0])
        if not unclean:
            time.sleep(3 * FAST["broker.session.timeout.ms"] / 1000)
            assert c.leader_for(topic) == -1                       # offline: the only in-sync replica is dead
            assert c.isr_for(topic) == [leader]
        else:
            wait_until(lambda: c.leader_for(topic) == followers[0], 15, "the unclean election")
            assert c.isr_for(topic) == [followers[0]]
            controller = c.controller()
            assert c.call(lambda cl: cl.core(controller).cluster.controller.unclean_elections) == 1


def test_a_consumer_group_keeps_its_committed_offsets_across_a_kill_of_its_coordinator():
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("grp", 3, 3, {"min.insync.replicas": 2})
        p = Producer({"bootstrap.servers": c.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
        for i in range(60):
            p.produce("grp", b"%d" % i, partition=i % 3)
        assert p.flush(20) == 0
        conf = {"bootstrap.servers": c.bootstrap_servers, "group.id": "survivors", "auto.offset.reset": "earliest",
                "enable.auto.commit": False}
        cons = Consumer(conf)
        cons.subscribe(["grp"])
        first = []
        deadline = time.monotonic() + 30
        while len(first) < 30 and time.monotonic() < deadline:
            m = cons.poll(0.2)
            if m is not None and not m.error():
                first.append(m.value())
        cons.commit(asynchronous=False)
        cons.close()
        coordinator = c.leader_for(OFFSETS_TOPIC, partition_for("survivors", 50))
        c.kill(coordinator)
        wait_until(lambda: c.leader_for(OFFSETS_TOPIC, partition_for("survivors", 50)) not in (coordinator, -1),
                   15, "a new coordinator")
        cons = Consumer(conf)
        cons.subscribe(["grp"])
        rest = []
        deadline = time.monotonic() + 30
        while len(first) + len(rest) < 60 and time.monotonic() < deadline:
            m = cons.poll(0.2)
            if m is not None and not m.error():
                rest.append(m.value())
        cons.close()
        assert not set(first) & set(rest), "records consumed again: the committed offsets were lost"
        assert sorted(first + rest, key=int) == [b"%d" % i for i in range(60)]


def test_java_idempotent_producer_loses_nothing_while_leaders_are_killed(java):
    """The Java client (its default producer is idempotent with acks=all) sends 3,000 records while the leader of
    their partition is killed three times (at least twice while it is producing: the timing is the machine's); every
    record is acknowledged, and each is stored once, in order."""
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("java-kills", 1, 3, {"min.insync.replicas": 2})
        result: list = []
        t = threading.Thread(target=lambda: result.append(java.run(
            c.bootstrap_servers, "produce", "java-kills", "10000", "--idempotence", "true", "--acks", "all",
            "--linger-ms", "0", "--flush-each", "--partition", "0", "--value-prefix", "j", timeout=180)))
        t.start()
        alive_at_kills = []
        for _ in range(3):
            time.sleep(0.7)
            victim = c.leader_for("java-kills")
            alive_at_kills.append(t.is_alive())
            c.kill(victim)
            wait_until(lambda victim=victim: c.leader_for("java-kills") not in (victim, -1), 15, "a new leader")
            c.restart(victim)
            wait_until(lambda: full_isr(c, "java-kills", 1), 30, "the ISR whole again")
        t.join(180)
        assert alive_at_kills[:2] == [True, True], alive_at_kills   # killed while it was producing
        lines = result[0]
        assert len(lines) == 10000 and all("offset" in o and "error" not in o for o in lines), lines[:3]
        stored = consume_all(c.bootstrap_servers, "java-kills", 1, 10000)
        check_exactly_once({0: [b"j-%d" % o["i"] for o in sorted(lines, key=lambda o: o["offset"])]}, stored)
        assert [v for _o, v in stored[0]] == [b"j-%d" % i for i in range(10000)]


def test_aiokafka_idempotent_producer_loses_nothing_while_leaders_are_killed():
    import asyncio

    from aiokafka import AIOKafkaProducer

    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("aio-kills", 1, 3, {"min.insync.replicas": 2})
        acked: list[bytes] = []

        async def produce():
            p = AIOKafkaProducer(bootstrap_servers=c.bootstrap_servers, enable_idempotence=True, acks="all",
                                 request_timeout_ms=10000, retry_backoff_ms=100)
            await p.start()
            try:
                for i in range(3000):
                    fut = await p.send("aio-kills", b"a-%d" % i, partition=0)
                    fut.add_done_callback(lambda f, i=i: f.exception() is None and acked.append(b"a-%d" % i))
                    await asyncio.sleep(0.005)
                await p.flush()
            finally:
                await p.stop()

        t = threading.Thread(target=lambda: asyncio.run(produce()))
        t.start()
        alive_at_kills = []
        for _ in range(3):
            time.sleep(0.5)
            victim = c.leader_for("aio-kills")
            alive_at_kills.append(t.is_alive())
            c.kill(victim)
            wait_until(lambda victim=victim: c.leader_for("aio-kills") not in (victim, -1), 15, "a new leader")
            c.restart(victim)
            wait_until(lambda: full_isr(c, "aio-kills", 1), 30, "the ISR whole again")
        t.join(120)
        assert alive_at_kills[:2] == [True, True], alive_at_kills   # killed while it was producing
        assert len(acked) == 3000
        stored = consume_all(c.bootstrap_servers, "aio-kills", 1, 3000)
        check_exactly_once({0: sorted(acked, key=lambda v: int(v[2:]))}, stored)


def test_controlled_shutdown_moves_leadership_before_the_broker_leaves():
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("graceful", 3, 3, {"min.insync.replicas": 2})
        with ContinuousProducer(c.bootstrap_servers, "graceful", 3) as prod:
            wait_until(lambda: sum(map(len, prod.acked.values())) > 100, 30, "first acknowledgements")
            leader = c.leader_for("graceful", 0)
            led = [p for p in range(3) if c.leader_for("graceful", p) == leader]
            started = time.monotonic()
            c.stop_broker(leader)
            took = time.monotonic() - started
            # moved by the controller while the broker was still up, not elected after its lease expired
            assert all(c.leader_for("graceful", p) not in (leader, -1) for p in led)
            assert all(leader not in c.isr_for("graceful", p) for p in range(3))
            assert took < FAST["broker.session.timeout.ms"] / 1000
            before = sum(map(len, prod.acked.values()))
            wait_until(lambda: sum(map(len, prod.acked.values())) > before + 100, 30, "progress without it")
            c.restart(leader)
            wait_until(lambda: full_isr(c, "graceful", 3), 30, "the ISR whole again")
        assert not prod.errors
        total = sum(map(len, prod.acked.values()))
        check_exactly_once(prod.acked, consume_all(c.bootstrap_servers, "graceful", 3, total))


def test_move_leader_to_an_in_sync_replica():
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("moved", 1, 3)
        p = Producer({"bootstrap.servers": c.bootstrap_servers, "acks": "all"})
        for i in range(5):
            p.produce("moved", b"%d" % i)
        assert p.flush(10) == 0
        old = c.leader_for("moved")
        target = max({1, 2, 3} - {old})
        c.move_leader("moved", 0, target)
        assert c.leader_for("moved") == target
        for i in range(5, 10):
            p.produce("moved", b"%d" % i)
        assert p.flush(20) == 0
        stored = consume_all(c.bootstrap_servers, "moved", 1, 10)
        assert [v for _o, v in stored[0]] == [b"%d" % i for i in range(10)]


def test_async_cluster_coordinator_for_and_a_hook_on_one_node():
    import asyncio

    async def main():
        async with kafkapy.Cluster(3, config=FAST) as c:
            await asyncio.to_thread(c.create_topic, "hooked", 1, 3)
            leader = await asyncio.to_thread(c.leader_for, "hooked")
            seen = []
            await asyncio.to_thread(c.control_key, leader, "Produce",
                                    lambda req: seen.append(req.api_name) or "NOT_LEADER_OR_FOLLOWER")
            p = Producer({"bootstrap.servers": c.bootstrap_servers, "acks": "all", "retry.backoff.ms": 50})
            p.produce("hooked", b"once")
            assert await asyncio.to_thread(p.flush, 20) == 0     # the hook answered once; the retry went through
            assert seen == ["Produce"]
            c2 = Consumer({"bootstrap.servers": c.bootstrap_servers, "group.id": "async-g",
                           "auto.offset.reset": "earliest"})
            c2.subscribe(["hooked"])
            m = None
            for _ in range(100):
                m = await asyncio.to_thread(c2.poll, 0.2)
                if m is not None and not m.error():
                    break
            assert m is not None and m.value() == b"once"
            c2.commit(asynchronous=False)
            c2.close()
            coordinator = await asyncio.to_thread(c.coordinator_for, "async-g")
            assert coordinator in (1, 2, 3)
    asyncio.run(main())


def test_only_the_leader_answers_offsets_and_delete_records_reach_the_followers():
    from confluent_kafka.admin import AdminClient

    from wire.messages import list_offsets_request as LOQ
    from wire.messages import offset_for_leader_epoch_request as OLQ

    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("lead-only", 1, 3)
        p = Producer({"bootstrap.servers": c.bootstrap_servers, "acks": "all"})
        for i in range(10):
            p.produce("lead-only", b"%d" % i)
        assert p.flush(10) == 0
        leader = c.leader_for("lead-only")
        follower = min({1, 2, 3} - {leader})
        lo = LOQ.ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[LOQ.ListOffsetsTopic(
            name="lead-only", partitions=[LOQ.ListOffsetsPartition(partition_index=0, timestamp=-1)])])
        ole = OLQ.OffsetForLeaderEpochRequest(replica_id=-1, topics=[OLQ.OffsetForLeaderTopic(
            topic="lead-only", partitions=[OLQ.OffsetForLeaderPartition(partition=0, leader_epoch=0)])])
        for node, code in ((follower, ErrorCode.NOT_LEADER_OR_FOLLOWER), (leader, ErrorCode.NONE)):
            with connect(f"127.0.0.1:{c.nodes[node].port}", 10) as s:
                assert request(s, 2, 7, lo).topics[0].partitions[0].error_code == code
                assert request(s, 23, 4, ole, correlation_id=2).topics[0].partitions[0].error_code == code
        admin = AdminClient({"bootstrap.servers": c.bootstrap_servers})
        [(_, f)] = admin.delete_records([TopicPartition("lead-only", 0, 4)]).items()
        assert f.result(20).low_watermark == 4
        wait_until(lambda: all(c.call(lambda cl, n=n: cl.core(n).partition_log("lead-only", 0).log_start_offset) == 4
                               for n in (1, 2, 3)), 15, "every replica's log start offset at 4")
