"""The embedding API, kafkapy.Broker: in-process (own thread, or the caller's loop) and subprocess, through real
clients; config overrides, create_topic, disk storage across restarts, and a stop that closes every connection."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import kafkapy
from kafkapy.broker import TopicError
from kafkapy.embedded import EmbeddedBroker


def _roundtrip(bootstrap: str, topic: str, n: int = 5) -> list[bytes]:
    from confluent_kafka import Consumer, Producer

    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        p.produce(topic, f"m{i}".encode())
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    return got


def test_exported_name():
    from kafkapy.broker import Broker as CoreBroker

    assert kafkapy.Broker is EmbeddedBroker and kafkapy.EmbeddedBroker is EmbeddedBroker
    assert CoreBroker is not EmbeddedBroker


def test_context_manager_in_process_roundtrip_and_fast_start():
    t0 = time.perf_counter()
    with kafkapy.Broker() as b:
        ready = time.perf_counter() - t0
        host, port = b.bootstrap_servers.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        assert b.running and b.mode == "inprocess" and b.storage == "memory"
        assert _roundtrip(b.bootstrap_servers, "cm") == [f"m{i}".encode() for i in range(5)]
        thread = b._thread
    assert not thread.is_alive()
    assert not b.running
    print(f"in-process start to ready: {ready * 1000:.1f} ms")
    assert ready < 5


def test_second_broker_starts_in_milliseconds():
    with kafkapy.Broker():
        pass                       # imports done
    t0 = time.perf_counter()
    with kafkapy.Broker() as b:
        ready = time.perf_counter() - t0
        # start to the first Metadata answer
        from confluent_kafka.admin import AdminClient

        md = AdminClient({"bootstrap.servers": b.bootstrap_servers}).list_topics(timeout=10)
        first_metadata = time.perf_counter() - t0
        assert md.brokers[1].port == int(b.bootstrap_servers.rsplit(":", 1)[1])
    print(f"warm start to ready {ready * 1000:.1f} ms, to first Metadata {first_metadata * 1000:.1f} ms")
    assert ready < 0.3


def test_config_overrides_and_create_topic():
    from confluent_kafka.admin import AdminClient, ConfigResource

    with kafkapy.Broker(config={"num.partitions": 3, "auto.create.topics.enable": True}) as b:
        assert b.create_topic("explicit", partitions=2, config={"cleanup.policy": "compact"}) == "explicit"
        admin = AdminClient({"bootstrap.servers": b.bootstrap_servers})
        md = admin.list_topics(timeout=10)
        assert len(md.topics["explicit"].partitions) == 2
        res = ConfigResource(ConfigResource.Type.TOPIC, "explicit")
        cfg = admin.describe_configs([res])[res].result(10)
        assert cfg["cleanup.policy"].value == "compact"
        _roundtrip(b.bootstrap_servers, "auto-created", n=1)
        assert len(admin.list_topics(timeout=10).topics["auto-created"].partitions) == 3
        with pytest.raises(TopicError, match="already exists"):
            b.create_topic("explicit")
        with pytest.raises(TopicError):
            b.create_topic("bad name!")
        assert b.call(lambda core: core.topics["explicit"].partitions) == 2


def test_bad_arguments_fail_fast():
    with pytest.raises(ValueError):
        kafkapy.Broker(mode="docker")
    with pytest.raises(ValueError):
        kafkapy.Broker(storage="memory", data_dir="/tmp/x")
    with pytest.raises(ValueError, match="num.partitions"):
        kafkapy.Broker(config={"num.partitions": "zero"})


def test_stop_closes_client_connections():
    b = kafkapy.Broker().start()
    socks = [socket.create_connection(b.bound, timeout=5) for _ in range(3)]
    deadline = time.monotonic() + 5
    while b.call(lambda core: len(core.server.connections)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.perf_counter()
    b.stop()
    stopped = time.perf_counter() - t0
    for s in socks:
        s.settimeout(5)
        assert s.recv(1) == b""           # closed by the broker
        s.close()
    with pytest.raises(OSError):
        socket.create_connection(b.bound, timeout=2).close()
    assert stopped < 2
    b.stop()                               # idempotent


def test_port_in_use_raises():
    with kafkapy.Broker() as b:
        port = int(b.bootstrap_servers.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            kafkapy.Broker(port=port).start()
    assert threading.active_count() < 50


def test_async_context_manager_in_callers_loop():
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def main():
        async with kafkapy.Broker() as b:
            assert b.core is not None and b._loop is asyncio.get_running_loop()
            assert b._thread is None
            await b.acreate_topic("aio", partitions=2)
            p = AIOKafkaProducer(bootstrap_servers=b.bootstrap_servers)
            await p.start()
            try:
                for i in range(4):
                    await p.send_and_wait("aio", f"a{i}".encode(), partition=i % 2)
            finally:
                await p.stop()
            c = AIOKafkaConsumer("aio", bootstrap_servers=b.bootstrap_servers, auto_offset_reset="earliest",
                                 group_id="aio-g")
            await c.start()
            try:
                got = []
                async with asyncio.timeout(20):
                    while len(got) < 4:
                        batch = await c.getmany(timeout_ms=500)
                        got += [m.value for msgs in batch.values() for m in msgs]
            finally:
                await c.stop()
            assert sorted(got) == [b"a0", b"a1", b"a2", b"a3"]
            server = b.core.server
        assert not b.running and not server.connections

    asyncio.run(main())


def test_subprocess_mode_disk_storage_survives_restart(tmp_path):
    data = tmp_path / "data"
    with kafkapy.Broker(mode="subprocess", storage="disk", data_dir=data, config={"num.partitions": "2"}) as b:
        assert b.process.poll() is None
        b.create_topic("kept", partitions=1)
        with pytest.raises(TopicError, match="already exists"):
            b.create_topic("kept")
        assert _roundtrip(b.bootstrap_servers, "kept", n=3) == [b"m0", b"m1", b"m2"]
        proc = b.process
    assert proc.returncode == 0            # SIGTERM -> clean shutdown
    assert (data / "kept-0").is_dir()
    with kafkapy.Broker(storage="disk", data_dir=data) as b:   # the same data, in-process this time
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": "again"})
        lo, hi = c.get_watermark_offsets(TopicPartition("kept", 0), timeout=10)
        c.close()
        assert (lo, hi) == (0, 3)


def test_disk_storage_without_data_dir_uses_a_temporary_one():
    import os

    with kafkapy.Broker(storage="disk") as b:
        d = b.data_dir
        b.create_topic("tmpdisk")
        assert os.path.isdir(os.path.join(d, "tmpdisk-0"))
    assert not os.path.exists(d)


def test_subprocess_in_async_with_and_trace_file(tmp_path):
    import json

    path = tmp_path / "sub.jsonl"

    async def main():
        async with kafkapy.Broker(mode="subprocess", trace={"out": str(path), "apis": "CreateTopics"}) as b:
            await b.acreate_topic("via-wire", partitions=4)

    asyncio.run(main())
    events = [json.loads(x) for x in path.read_text().splitlines()]
    assert [e["direction"] for e in events] == ["request", "response"]
    assert events[0]["body"]["topics"][0]["num_partitions"] == 4
    assert events[1]["body"]["topics"][0]["error_code"] == 0


def test_clients_cannot_change_the_host_programs_logging():
    """BROKER_LOGGER resources reach only the broker's own loggers (kafkapy, storage, wire): the root logger and the
    application's loggers are loggers that do not exist (Kafka's INVALID_CONFIG "Logger ... does not exist!")."""
    import logging

    from compat_tests.inprocess import connect, request
    from wire.messages import describe_configs_request as DCQ
    from wire.messages import incremental_alter_configs_request as IACQ

    app = logging.getLogger("myapp.service")
    app.setLevel(logging.WARNING)
    root_level = logging.getLogger().level

    def alter(name, level):
        body = IACQ.IncrementalAlterConfigsRequest(resources=[IACQ.AlterConfigsResource(
            resource_type=8, resource_name="1",
            configs=[IACQ.AlterableConfig(name=name, config_operation=0, value=level)])], validate_only=False)
        return request(s, 44, 1, body).responses[0]

    with kafkapy.Broker() as b:
        s = connect(b.bootstrap_servers)
        try:
            for name in ("root", "myapp.service", "myapp"):
                r = alter(name, "DEBUG")
                assert (r.error_code, r.error_message) == (40, f"Logger {name} does not exist!")   # INVALID_CONFIG
            body = DCQ.DescribeConfigsRequest(resources=[DCQ.DescribeConfigsResource(
                resource_type=8, resource_name="1", configuration_keys=None)], include_synonyms=False)
            names = [c.name for c in request(s, 32, 4, body).results[0].configs]
            assert "kafkapy" in names and not [n for n in names if n.split(".")[0] not in ("kafkapy", "storage",
                                                                                            "wire")]
            saved = logging.getLogger("kafkapy").level
            assert alter("kafkapy", "WARN").error_code == 0
            assert logging.getLogger("kafkapy").level == logging.WARNING
            logging.getLogger("kafkapy").setLevel(saved)
        finally:
            s.close()
    assert app.level == logging.WARNING and logging.getLogger().level == root_level
