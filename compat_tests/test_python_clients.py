"""Produce / consume / admin with the three Python clients: confluent-kafka (librdkafka), aiokafka, kafka-python.

Each client creates its topic through its admin API, produces keyed and unkeyed records with headers
under every compression type, reads them back by partition assignment from an offset, checks content,
order and offsets, lists offsets and deletes the topic.
"""

from __future__ import annotations

import asyncio
import time

import pytest

COMPRESSIONS = ["none", "gzip", "snappy", "lz4", "zstd"]
N = 30


def expected_records(tag: str):
    """(key, value, headers) triples: every third record unkeyed, some with several headers."""
    out = []
    for i in range(N):
        key = None if i % 3 == 0 else f"key-{i % 4}".encode()
        value = f"{tag}-value-{i}-".encode() + bytes(range(i % 7)) * 10
        headers = [("idx", str(i).encode()), ("tag", tag.encode())] if i % 2 == 0 else []
        out.append((key, value, headers))
    return out


# ---------------------------------------------------------------- confluent-kafka


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_confluent_produce_consume(broker, topic, compression):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)], operation_timeout=10)
    futures[topic].result(15)
    md = admin.list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 2

    producer = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": compression, "linger.ms": 20,
                         "enable.idempotence": False, "acks": "all"})
    delivered = []

    def on_delivery(err, msg):
        assert err is None, err
        delivered.append((msg.partition(), msg.offset(), msg.key(), msg.value()))

    records = expected_records(compression)
    for i, (k, v, h) in enumerate(records):
        producer.produce(topic, key=k, value=v, headers=h, partition=i % 2, on_delivery=on_delivery)
    assert producer.flush(15) == 0
    assert len(delivered) == N
    # offsets per partition are 0..n-1 in production order
    for p in (0, 1):
        offs = [o for part, o, _, _ in delivered if part == p]
        assert offs == list(range(len(offs)))

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{topic}", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 5)])
    got = {0: [], 1: []}
    deadline = time.time() + 20
    want = {0: N // 2, 1: N // 2 - 5}
    while (len(got[0]) < want[0] or len(got[1]) < want[1]) and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got[m.partition()].append((m.offset(), m.key(), m.value(), m.headers() or []))
    lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, 1), timeout=10)
    assert (lo, hi) == (0, N // 2)
    ts_offsets = consumer.offsets_for_times([TopicPartition(topic, 0, 0)], timeout=10)
    assert ts_offsets[0].offset == 0
    consumer.close()
    for p, start in ((0, 0), (1, 5)):
        sent = [r for i, r in enumerate(records) if i % 2 == p][start:]
        assert [o for o, *_ in got[p]] == list(range(start, start + len(sent)))
        assert [(k, v, [(hk, hv) for hk, hv in h]) for _, k, v, h in got[p]] == \
               [(k, v, h) for k, v, h in sent]

    futures = admin.delete_topics([topic], operation_timeout=10)
    futures[topic].result(15)
    assert topic not in admin.list_topics(timeout=10).topics


# ---------------------------------------------------------------- aiokafka


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_aiokafka_produce_consume(broker, topic, compression):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def run():
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                        compression_type=None if compression == "none" else compression,
                                        linger_ms=10)
            await producer.start()
            records = expected_records(compression)
            try:
                metas = [await asyncio.wait_for(producer.send_and_wait(topic, value=v, key=k, headers=h,
                                                                       partition=0), 15)
                         for k, v, h in records[:5]]
                batch_futs = [await producer.send(topic, value=v, key=k, headers=h, partition=0)
                              for k, v, h in records[5:]]
                metas += [await asyncio.wait_for(f, 15) for f in batch_futs]
            finally:
                await producer.stop()
            assert [m.offset for m in metas] == list(range(N))

            consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                                        auto_offset_reset="earliest")
            await consumer.start()
            try:
                tp = TopicPartition(topic, 0)
                consumer.assign([tp])
                consumer.seek(tp, 3)
                got = []
                deadline = time.time() + 20
                while len(got) < N - 3 and time.time() < deadline:
                    batch = await consumer.getmany(tp, timeout_ms=500)
                    for m in batch.get(tp, []):
                        got.append((m.offset, m.key, m.value, list(m.headers)))
                assert [g[0] for g in got] == list(range(3, N))
                assert [(k, v, [(hk, bytes(hv)) for hk, hv in h]) for _, k, v, h in got] == \
                       [(k, v, h) for k, v, h in records[3:]]
                assert (await consumer.beginning_offsets([tp]))[tp] == 0
                assert (await consumer.end_offsets([tp]))[tp] == N
                by_time = await consumer.offsets_for_times({tp: 0})
                assert by_time[tp].offset == 0
                future = await consumer.offsets_for_times({tp: int(time.time() * 1000) + 3_600_000})
                assert future[tp] is None
            finally:
                await consumer.stop()
            await admin.delete_topics([topic])
        finally:
            await admin.close()

    asyncio.run(asyncio.wait_for(run(), 60))


# ---------------------------------------------------------------- kafka-python


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_kafka_python_produce_consume(broker, topic, compression):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=10,
                                 compression_type=None if compression == "none" else compression,
                                 enable_idempotence=False)
        records = expected_records(compression)
        futures = [producer.send(topic, key=k, value=v, headers=h, partition=0) for k, v, h in records]
        offsets = [f.get(timeout=15).offset for f in futures]
        producer.close(10)
        assert offsets == list(range(N))

        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                                 auto_offset_reset="earliest", consumer_timeout_ms=10000)
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got = []
        deadline = time.time() + 20
        while len(got) < N and time.time() < deadline:
            for m in consumer.poll(timeout_ms=500).get(tp, []):
                got.append((m.offset, m.key, m.value, list(m.headers)))
        assert [g[0] for g in got] == list(range(N))
        assert [(k, v, h) for _, k, v, h in got] == [(k, v, h) for k, v, h in records]
        assert consumer.end_offsets([tp])[tp] == N
        assert consumer.beginning_offsets([tp])[tp] == 0
        consumer.close()
        admin.delete_topics([topic])
        assert topic not in admin.list_topics()
    finally:
        admin.close()
