"""Idempotent and transactional producers with real clients: confluent-kafka (librdkafka), aiokafka,
kafka-python and the Java client.

What is checked: every record of an idempotent producer is stored once, also when the broker's answer to a
Produce is lost and the client retries (a proxy in front of the broker, or a control hook in it, cuts the
connection right after the broker appended a batch); commit makes records visible to read_committed consumers and abort hides them while
read_uncommitted sees both; a second producer with the same transactional.id fences the first; a transaction
left open across a broker restart stays invisible until it is aborted (by fencing) or times out.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from harness import free_port, unique_topic
from inprocess import recv_frame

PRODUCE_KEY = 0


# ---------------------------------------------------------------------------------------------- helpers

def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10)[topic]
    fut.result(timeout=20)


def consume_all(bootstrap: str, topic: str, partitions: int, isolation: str, expect: int | None = None,
                timeout: float = 20.0) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of everything a consumer with ``isolation`` reads from the beginning, until it
    has read ``expect`` records or is at the end of every partition (bounded by ``timeout``)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g"), "isolation.level": isolation,
                  "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: list[tuple[int, int, bytes]] = []
        at_eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_eof.add(m.partition())
                    if expect is None and len(at_eof) == partitions:
                        break
                    continue
                raise KafkaException(m.error())
            at_eof.discard(m.partition())
            out.append((m.partition(), m.offset(), m.value()))
            if expect is not None and len(out) >= expect:
                break
        return out
    finally:
        c.close()


def values(records) -> list[bytes]:
    return [v for _p, _o, v in records]


def committed_end(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    """(last stable offset, high watermark) as ListOffsets reports them to read_committed / read_uncommitted."""
    out = []
    for iso in ("read_committed", "read_uncommitted"):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("w"), "isolation.level": iso})
        try:
            out.append(c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)[1])
        finally:
            c.close()
    return out[0], out[1]


class ResponseDroppingProxy:
    """A TCP proxy in front of the broker that forwards everything, except that it swallows the first
    Produce response it sees and cuts that connection, after the broker has appended the batch."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.dropped = 0
        self.produce_requests = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> "ResponseDroppingProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            pending: list[int] = []          # api keys of requests in flight, in order
            threading.Thread(target=self._pump_requests, args=(client, upstream, pending), daemon=True).start()
            threading.Thread(target=self._pump_responses, args=(upstream, client, pending), daemon=True).start()

    @staticmethod
    def _read_frame(s: socket.socket) -> bytes | None:
        """One whole frame, size prefix included (the proxy forwards it as it came)."""
        frame = recv_frame(s)
        return None if frame is None else struct.pack(">i", len(frame)) + frame

    def _pump_requests(self, client, upstream, pending) -> None:
        try:
            client.settimeout(None)
            while True:
                frame = self._read_frame(client)
                if frame is None:
                    break
                key = struct.unpack_from(">h", frame, 4)[0]
                with self._lock:
                    pending.append(key)
                    if key == PRODUCE_KEY:
                        self.produce_requests += 1
                upstream.sendall(frame)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _pump_responses(self, upstream, client, pending) -> None:
        try:
            upstream.settimeout(None)
            while True:
                frame = self._read_frame(upstream)
                if frame is None:
                    break
                with self._lock:
                    key = pending.pop(0) if pending else -1
                    drop = key == PRODUCE_KEY and self.dropped == 0
                    if drop:
                        self.dropped += 1
                if drop:
                    break                    # the broker appended; the client never hears about it
                client.sendall(frame)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


# ---------------------------------------------------------------------------------------------- idempotence

def test_confluent_idempotent_producer_stores_each_record_once(broker, topic):
    create_topic(broker.bootstrap, topic, 3)
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 2, "batch.num.messages": 50, "max.in.flight.requests.per.connection": 5})
    errors = []
    n = 3000
    for i in range(n):
        p.produce(topic, value=b"v%d" % i, key=b"k%d" % (i % 17),
                  on_delivery=lambda err, _m: errors.append(err) if err else None)
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    assert errors == []
    got = values(consume_all(broker.bootstrap, topic, 3, "read_uncommitted", expect=n))
    assert sorted(got) == sorted(b"v%d" % i for i in range(n))


def test_lost_produce_response_is_retried_without_duplicate(broker_factory, tmp_path):
    """The broker appends, the answer is lost (connection cut): the idempotent producer retries the same batch
    and the broker answers with the original offset instead of appending it again."""
    port = free_port()
    proxy = ResponseDroppingProxy(port)
    b = broker_factory(extra_args=["--port", str(port), "--advertised-port", str(proxy.port)])
    proxy.start()
    try:
        bootstrap = f"127.0.0.1:{proxy.port}"
        topic = unique_topic("retry")
        create_topic(bootstrap, topic, 1)
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                      "retry.backoff.ms": 100, "linger.ms": 0})
        delivered = []
        for i in range(20):
            p.produce(topic, value=b"r%d" % i, on_delivery=lambda err, m: delivered.append((err, m.offset())))
            p.flush(30)
        assert [e for e, _ in delivered if e is not None] == []
        assert proxy.dropped == 1
        assert proxy.produce_requests >= 21          # the lost one was sent again
        assert [o for _, o in delivered] == list(range(20))
        got = values(consume_all(bootstrap, topic, 1, "read_uncommitted", expect=20))
        assert got == [b"r%d" % i for i in range(20)]
        assert committed_end(bootstrap, topic) == (20, 20)
    finally:
        proxy.stop()
        b.stop()


def test_lost_produce_response_through_a_control_hook_is_retried_without_duplicate():
    """The same loss as above, made by a request control hook instead of a proxy: an in-process broker appends
    the 6th batch and drops its answer (``DROP_RESPONSE`` cuts the connection); the idempotent producer sends
    the batch again and the broker answers with the original offset."""
    import kafkapy
    from kafkapy.control import DROP_RESPONSE

    with kafkapy.Broker() as b:
        topic = unique_topic("retry-hook")
        b.create_topic(topic, 1)
        produces = []
        seen = b.control_key("Produce", lambda r: produces.append(r.correlation_id))
        p = Producer({"bootstrap.servers": b.bootstrap_servers, "enable.idempotence": True, "acks": "all",
                      "retry.backoff.ms": 100, "linger.ms": 0})
        delivered = []
        for i in range(12):
            if i == 5:
                lost = b.control_key("Produce", lambda r: DROP_RESPONSE)
            p.produce(topic, value=b"h%d" % i, on_delivery=lambda err, m: delivered.append((err, m.offset())))
            assert p.flush(30) == 0
        del p
        assert lost.fired == 1 and not lost.active
        assert len(produces) >= 13                         # the lost one was sent again
        assert [e for e, _ in delivered if e is not None] == []
        assert [o for _, o in delivered] == list(range(12))
        got = values(consume_all(b.bootstrap_servers, topic, 1, "read_uncommitted", expect=12))
        assert got == [b"h%d" % i for i in range(12)]
        assert committed_end(b.bootstrap_servers, topic) == (12, 12)
        seen.remove()


# ---------------------------------------------------------------------------------------------- transactions

def test_confluent_transactions_commit_abort_and_isolation(broker, topic):
    create_topic(broker.bootstrap, topic, 2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": unique_topic("tx")})
    p.init_transactions(20)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, value=b"c%d" % i, partition=i % 2)
    p.commit_transaction(20)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, value=b"a%d" % i, partition=i % 2)
    p.flush(20)                                 # librdkafka drops unsent messages on abort: send them first
    p.abort_transaction(20)
    p.begin_transaction()
    p.produce(topic, value=b"c-last", partition=0)
    p.commit_transaction(20)

    committed = values(consume_all(broker.bootstrap, topic, 2, "read_committed"))
    assert sorted(committed) == sorted([b"c%d" % i for i in range(10)] + [b"c-last"])
    everything = values(consume_all(broker.bootstrap, topic, 2, "read_uncommitted"))
    assert sorted(everything) == sorted([b"c%d" % i for i in range(10)] + [b"a%d" % i for i in range(10)]
                                        + [b"c-last"])
    # 5 + 5 + 1 records and three markers on partition 0
    assert committed_end(broker.bootstrap, topic, 0) == (14, 14)


def test_open_transaction_is_invisible_then_fenced_and_aborted(broker, topic):
    create_topic(broker.bootstrap, topic, 1)
    tid = unique_topic("tx")
    p1 = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": tid})
    p1.init_transactions(20)
    p1.begin_transaction()
    p1.produce(topic, value=b"open")
    p1.flush(20)
    lso, hw = committed_end(broker.bootstrap, topic)
    assert (lso, hw) == (0, 1)                        # the open transaction holds back the last stable offset
    assert consume_all(broker.bootstrap, topic, 1, "read_committed", timeout=5) == []

    p2 = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": tid})
    p2.init_transactions(30)                          # fences p1 and aborts its transaction
    assert committed_end(broker.bootstrap, topic) == (2, 2)
    p2.begin_transaction()
    p2.produce(topic, value=b"from-p2")
    p2.commit_transaction(20)

    with pytest.raises(KafkaException) as exc:        # the old producer is fenced
        p1.produce(topic, value=b"zombie")
        p1.commit_transaction(10)
    assert exc.value.args[0].code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                        KafkaError.INVALID_PRODUCER_EPOCH)
    assert values(consume_all(broker.bootstrap, topic, 1, "read_committed")) == [b"from-p2"]
    assert values(consume_all(broker.bootstrap, topic, 1, "read_uncommitted")) == [b"open", b"from-p2"]


def test_transaction_timeout_aborts_a_hanging_transaction(broker, topic):
    create_topic(broker.bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": unique_topic("tx"),
                  "transaction.timeout.ms": 1500})
    p.init_transactions(20)
    p.begin_transaction()
    p.produce(topic, value=b"hanging")
    p.flush(20)
    deadline = time.monotonic() + 15
    while committed_end(broker.bootstrap, topic)[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert committed_end(broker.bootstrap, topic) == (2, 2)   # the broker wrote the abort marker
    assert consume_all(broker.bootstrap, topic, 1, "read_committed") == []
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


def test_open_transaction_across_broker_restart_is_never_half_visible(broker_factory):
    b = broker_factory()
    topic = unique_topic("restart")
    create_topic(b.bootstrap, topic, 2)
    tid = unique_topic("tx")
    p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": tid})
    p.init_transactions(20)
    p.begin_transaction()
    p.produce(topic, value=b"committed", partition=1)
    p.commit_transaction(20)
    p.begin_transaction()
    for part in (0, 1):
        p.produce(topic, value=b"open-%d" % part, partition=part)
    p.flush(20)
    del p
    b.restart(kill=True)
    assert committed_end(b.bootstrap, topic, 0) == (0, 1)
    assert values(consume_all(b.bootstrap, topic, 2, "read_committed", timeout=5)) == [b"committed"]
    p2 = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": tid})
    p2.init_transactions(30)
    assert committed_end(b.bootstrap, topic, 0) == (2, 2)
    assert values(consume_all(b.bootstrap, topic, 2, "read_committed")) == [b"committed"]
    assert sorted(values(consume_all(b.bootstrap, topic, 2, "read_uncommitted"))) == [b"committed", b"open-0",
                                                                                       b"open-1"]


# ---------------------------------------------------------------------------------------------- aiokafka

def test_aiokafka_idempotent_and_transactional(broker, topic):
    from aiokafka import AIOKafkaProducer

    create_topic(broker.bootstrap, topic, 1)

    async def go():
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True)
        await p.start()
        try:
            for i in range(50):
                await p.send(topic, b"i%d" % i)
            await p.flush()
        finally:
            await p.stop()
        t = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=unique_topic("tx"))
        await t.start()
        try:
            async with t.transaction():
                for i in range(5):
                    await t.send(topic, b"tc%d" % i)
            with pytest.raises(RuntimeError):
                async with t.transaction():
                    for i in range(5):
                        await (await t.send(topic, b"ta%d" % i))
                    raise RuntimeError("abort this one")
        finally:
            await t.stop()

    asyncio.run(asyncio.wait_for(go(), 60))
    expected_committed = [b"i%d" % i for i in range(50)] + [b"tc%d" % i for i in range(5)]
    assert values(consume_all(broker.bootstrap, topic, 1, "read_committed")) == expected_committed
    assert values(consume_all(broker.bootstrap, topic, 1, "read_uncommitted")) == \
        expected_committed + [b"ta%d" % i for i in range(5)]


def test_aiokafka_consumer_read_committed(broker, topic):
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as ATP

    create_topic(broker.bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": unique_topic("tx")})
    p.init_transactions(20)
    for commit in (True, False, True):
        p.begin_transaction()
        for i in range(3):
            p.produce(topic, value=b"%s%d" % (b"c" if commit else b"a", i))
        p.flush(20)
        if commit:
            p.commit_transaction(20)
        else:
            p.abort_transaction(20)

    async def read(isolation):
        c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level=isolation,
                             enable_auto_commit=False, auto_offset_reset="earliest")
        await c.start()
        try:
            tp = ATP(topic, 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            out = []
            end = (await c.end_offsets([tp]))[tp]
            deadline = time.monotonic() + 15
            while await c.position(tp) < end and time.monotonic() < deadline:
                batch = await c.getmany(tp, timeout_ms=500)
                out += [m.value for m in batch.get(tp, [])]
            return out, end
        finally:
            await c.stop()

    committed, lso = asyncio.run(read("read_committed"))
    assert committed == [b"c0", b"c1", b"c2", b"c0", b"c1", b"c2"]
    assert lso == 12
    everything, _ = asyncio.run(read("read_uncommitted"))
    assert everything == [b"c0", b"c1", b"c2", b"a0", b"a1", b"a2", b"c0", b"c1", b"c2"]


# ---------------------------------------------------------------------------------------------- kafka-python

def test_kafka_python_idempotent_and_transactional(broker, topic):
    from kafka import KafkaProducer

    create_topic(broker.bootstrap, topic, 1)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all")
    futures = [p.send(topic, b"k%d" % i) for i in range(30)]
    offsets = [f.get(timeout=20).offset for f in futures]
    p.close(10)
    assert offsets == list(range(30))

    t = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=unique_topic("tx"))
    t.init_transactions()
    t.begin_transaction()
    for i in range(4):
        t.send(topic, b"kc%d" % i)
    t.commit_transaction()
    t.begin_transaction()
    for i in range(4):
        t.send(topic, b"ka%d" % i).get(timeout=20)
    t.abort_transaction()
    t.close(10)
    base = [b"k%d" % i for i in range(30)]
    assert values(consume_all(broker.bootstrap, topic, 1, "read_committed")) == base + [b"kc%d" % i for i in range(4)]
    assert values(consume_all(broker.bootstrap, topic, 1, "read_uncommitted")) == \
        base + [b"kc%d" % i for i in range(4)] + [b"ka%d" % i for i in range(4)]


# ---------------------------------------------------------------------------------------------- Java client

def _java_txn(java, *args, timeout: float = 90, rc: int = 0) -> list[str]:
    cmd = [java.client.java, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", java.client.classpath,
           "TxnClient", java.bootstrap, *[str(a) for a in args]]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    out = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == rc, f"TxnClient {args} failed ({proc.returncode}):\n{out[-3000:]}\n" \
                                 f"{proc.stderr.decode('utf-8', 'replace')[-4000:]}"
    return out.splitlines()


@pytest.fixture
def jrun(java, broker):
    class Runner:
        client = java
        bootstrap = broker.bootstrap

    return Runner()


def test_java_default_producer_is_idempotent_and_produces_each_record_once(broker, topic, jrun):
    create_topic(broker.bootstrap, topic, 3)
    lines = _java_txn(jrun, "produce-default", topic, 2000)
    assert lines[-1] == "acked 2000"
    got = values(consume_all(broker.bootstrap, topic, 3, "read_uncommitted", expect=2000))
    assert sorted(got) == sorted(b"j%d" % i for i in range(2000))


def test_java_transactional_producer(broker, topic, jrun):
    create_topic(broker.bootstrap, topic, 2)
    tid = unique_topic("jtx")
    # 5 transactions of 100 records; every second one aborted
    lines = _java_txn(jrun, "transactional", topic, tid, 5, 100)
    assert lines[-1] == "done 5"
    committed = values(consume_all(broker.bootstrap, topic, 2, "read_committed"))
    assert sorted(committed) == sorted(b"t%d-%d" % (t, i) for t in (0, 2, 4) for i in range(100))
    everything = values(consume_all(broker.bootstrap, topic, 2, "read_uncommitted"))
    assert len(everything) == 500
    # a second Java producer with the same transactional.id fences the first one
    lines = _java_txn(jrun, "fence", topic, tid)
    assert lines[-1] == "fenced"


# ---------------------------------------------------------------------------------------------- offsets in transactions

def test_confluent_consume_transform_produce_with_send_offsets(broker, topic):
    """sendOffsetsToTransaction: the group's offsets become visible with the commit, never with an abort."""
    src, dst = topic + "-in", topic + "-out"
    create_topic(broker.bootstrap, src, 2)
    create_topic(broker.bootstrap, dst, 1)
    n = 400
    feeder = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(n):
        feeder.produce(src, value=b"%d" % i, partition=i % 2)
    assert feeder.flush(20) == 0
    group = unique_topic("ctp")
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": unique_topic("ctp-tx")})
    p.init_transactions(20)
    c.subscribe([src])
    done = 0
    aborted_once = False
    deadline = time.monotonic() + 60
    try:
        while done < n and time.monotonic() < deadline:
            msgs = c.consume(50, timeout=0.5)
            msgs = [m for m in msgs if not m.error()]
            if not msgs:
                continue
            p.begin_transaction()
            for m in msgs:
                p.produce(dst, value=b"out-" + m.value())
            p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 20)
            if not aborted_once:
                # abort the first batch: its outputs are hidden and its offsets not committed; rewind and redo
                aborted_once = True
                p.flush(20)
                p.abort_transaction(20)
                committed = c.committed([TopicPartition(src, 0), TopicPartition(src, 1)], timeout=10)
                assert all(tp.offset < 0 for tp in committed), committed
                for tp in committed:
                    c.seek(TopicPartition(src, tp.partition, 0))
                continue
            p.commit_transaction(20)
            done += len(msgs)
        assert done == n
        committed = c.committed([TopicPartition(src, 0), TopicPartition(src, 1)], timeout=10)
        assert sorted(tp.offset for tp in committed) == [n // 2, n // 2]
    finally:
        c.close()
    out = values(consume_all(broker.bootstrap, dst, 1, "read_committed"))
    assert sorted(out) == sorted(b"out-%d" % i for i in range(n))


def test_java_consume_transform_produce_10000_killed_midway(broker, topic, jrun):
    """sendOffsetsToTransaction over 10,000 records, the loop's process halted inside a transaction and started
    again: exactly 10,000 outputs and the committed offsets at the end of the input."""
    src, dst = topic + "-in", topic + "-out"
    create_topic(broker.bootstrap, src, 3)
    create_topic(broker.bootstrap, dst, 2)
    n = 10_000
    feeder = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(n):
        feeder.produce(src, key=b"%d" % i, value=b"%d" % i)
        if i % 1000 == 0:
            feeder.poll(0)
    assert feeder.flush(30) == 0
    group, tid = unique_topic("jctp"), unique_topic("jctp-tx")
    lines = _java_txn(jrun, "ctp", src, dst, group, tid, n, 3, rc=7)
    assert lines[-1] == "halting inside transaction 4"
    lines = _java_txn(jrun, "ctp", src, dst, group, tid, n, timeout=120)
    assert lines[-1].startswith("done ")
    out = values(consume_all(broker.bootstrap, dst, 2, "read_committed", timeout=60))
    assert len(out) == n
    assert sorted(out) == sorted(b"out-%d" % i for i in range(n))
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        committed = c.committed([TopicPartition(src, p) for p in range(3)], timeout=10)
    finally:
        c.close()
    assert sum(tp.offset for tp in committed) == n
    # the halted transaction's outputs are in the log, aborted
    assert len(values(consume_all(broker.bootstrap, dst, 2, "read_uncommitted", timeout=60))) > n


def test_java_admin_lists_and_describes_transactions_and_producers(broker, topic, jrun):
    create_topic(broker.bootstrap, topic, 1)
    tid = unique_topic("jdesc")
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": tid})
    p.init_transactions(20)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, value=b"d%d" % i)
    p.flush(20)
    lines = _java_txn(jrun, "describe", topic, tid)
    listed = [ln for ln in lines if ln.startswith("listed ")]
    assert len(listed) == 1 and listed[0].split()[3].lower() == "ongoing"
    pid = int(listed[0].split()[2])
    described = [ln.split() for ln in lines if ln.startswith("described ")][0]
    assert described[1].lower() == "ongoing" and int(described[2]) == pid and described[4] == "1"
    producers = [ln.split() for ln in lines if ln.startswith("producer ")]
    assert [(int(a[1]), int(a[2]), int(a[3]), int(a[4])) for a in producers] == [(pid, 0, 2, 0)]
    p.abort_transaction(20)
