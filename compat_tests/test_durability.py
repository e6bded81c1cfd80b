"""Persistence across restarts, kill -9 while producing with acks=all, and recovery of a torn log tail."""

from __future__ import annotations

import os
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from wire.records import decode_batches

from inprocess import connect, request  # noqa: E402 - compat_tests/ is on sys.path (conftest)


def _create(bootstrap, topic, partitions=1, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})])[topic].result(15)


def _consume_all(bootstrap, topic, partitions, expected, timeout=30):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = {p: [] for p in range(partitions)}
    deadline = time.time() + timeout
    while sum(map(len, got.values())) < expected and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got[m.partition()].append((m.offset(), m.key(), m.value()))
    # and nothing more arrives
    extra = c.poll(1.0)
    assert extra is None or extra.error() is not None, f"unexpected extra record {extra.offset()}"
    c.close()
    return got


def _topic_id(bootstrap, topic):
    """The topic id from a Metadata v12 answer (confluent-kafka's TopicMetadata does not expose it)."""
    from wire.messages import metadata_request as MQ

    s = connect(bootstrap)
    try:
        md = request(s, 3, 12, MQ.MetadataRequest(topics=[MQ.MetadataRequestTopic(name=topic)],
                                                  allow_auto_topic_creation=False))
    finally:
        s.close()
    assert md.topics[0].error_code == 0
    assert md.topics[0].topic_id.int != 0
    return md.topics[0].topic_id


def test_restart_keeps_records_offsets_topic_ids_and_cluster_id(broker_factory, topic):
    b = broker_factory("disk")
    _create(b.bootstrap, topic, 2)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    before = admin.list_topics(timeout=10)
    topic_id = _topic_id(b.bootstrap, topic)
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5, "enable.idempotence": False})
    for i in range(200):
        p.produce(topic, key=str(i).encode(), value=f"v{i}".encode(), partition=i % 2)
    assert p.flush(15) == 0
    b.restart()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    after = admin.list_topics(timeout=10)
    assert after.cluster_id == before.cluster_id
    assert _topic_id(b.bootstrap, topic) == topic_id     # topic ids are stable across restarts
    got = _consume_all(b.bootstrap, topic, 2, 200)
    for part in (0, 1):
        assert [o for o, _, _ in got[part]] == list(range(100))
        assert [v for _, _, v in got[part]] == [f"v{i}".encode() for i in range(part, 200, 2)]
    # the files have Kafka's layout
    names = sorted(os.listdir(b.data_dir / f"{topic}-0"))
    assert "00000000000000000000.log" in names and "00000000000000000000.index" in names
    assert "00000000000000000000.timeindex" in names
    assert (b.data_dir / "meta.properties").exists()


def test_kill9_while_producing_loses_no_acknowledged_record(broker_factory, topic):
    """A producer (acks=all) runs while the broker is SIGKILLed and restarted a few times; every record whose
    delivery was acknowledged is present exactly once, in order, afterwards."""
    b = broker_factory("disk")
    _create(b.bootstrap, topic, 1)
    acked: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def produce():
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 2, "enable.idempotence": False,
                      "retries": 0, "message.timeout.ms": 3000, "reconnect.backoff.ms": 20,
                      "reconnect.backoff.max.ms": 200, "socket.connection.setup.timeout.ms": 1000})

        def cb(err, msg):
            if err is None:
                with lock:
                    acked.append(int(msg.value()))

        i = 0
        while not stop.is_set():
            try:
                p.produce(topic, value=str(i).encode(), partition=0, on_delivery=cb)
                i += 1
            except BufferError:
                p.poll(0.05)
            p.poll(0)
            if i % 50 == 0:
                time.sleep(0.005)
        p.flush(10)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        for _ in range(4):
            time.sleep(0.6)
            b.restart(kill=True)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert len(acked) > 50, "the producer should have got acknowledgements between the kills"
    # read everything stored: stop after 3 s without a new record
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"x-{topic}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    values = []
    idle_until = time.time() + 3
    hard = time.time() + 60
    while time.time() < min(idle_until, hard):
        m = c.poll(0.3)
        if m is None:
            continue
        assert m.error() is None, m.error()
        assert m.offset() == len(values), "offsets are contiguous"
        values.append(int(m.value()))
        idle_until = time.time() + 3
    c.close()
    present = set(values)
    missing = [v for v in acked if v not in present]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    acked_set = set(acked)
    dup = [v for v in acked_set if values.count(v) > 1]
    assert not dup, f"acknowledged records stored twice: {dup[:5]}"
    # acknowledged records appear in the order they were produced
    order = [v for v in values if v in acked_set]
    assert order == sorted(order)
    # and every stored batch is intact (CRC checked by the decoder)
    total = 0
    for name in sorted(os.listdir(b.data_dir / f"{topic}-0")):
        if name.endswith(".log"):
            data = (b.data_dir / f"{topic}-0" / name).read_bytes()
            total += sum(len(batch.records) for batch in decode_batches(data))
    assert total == len(values)


def test_garbage_at_the_end_of_a_log_is_truncated_on_start(broker_factory, topic):
    b = broker_factory("disk")
    _create(b.bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": False})
    for i in range(10):
        p.produce(topic, value=f"v{i}".encode(), partition=0)
    assert p.flush(10) == 0
    b.kill9()
    log = b.data_dir / f"{topic}-0" / "00000000000000000000.log"
    good = log.stat().st_size
    with open(log, "ab") as f:
        f.write(b"\x00\x00\x00\x00\x00\x00\x00\x0a\x00\x00\x01\x00garbage that is not a batch" * 3)
    b.start(b.data_dir, port=b.port)
    got = _consume_all(b.bootstrap, topic, 1, 10)
    assert [v for _, _, v in got[0]] == [f"v{i}".encode() for i in range(10)]
    assert log.stat().st_size == good
    # and the log accepts new records right after the recovered end
    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": False})
    delivered = []
    p.produce(topic, value=b"after", partition=0, on_delivery=lambda e, m: delivered.append((e, m.offset())))
    assert p.flush(10) == 0
    assert delivered == [(None, 10)]
