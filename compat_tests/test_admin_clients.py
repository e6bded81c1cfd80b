"""Admin clients against a running broker: configs (describe, alter, incremental alter), cluster, log dirs,
delete records, create partitions, describe topics; and that altered configs take effect.

confluent-kafka (librdkafka), aiokafka and kafka-python, each through its own admin API."""

from __future__ import annotations

import asyncio
import time

import pytest

# DescribeConfigs sources
DYNAMIC_TOPIC_CONFIG, DYNAMIC_BROKER_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 1, 2, 4, 5
TIMEOUT = 15


def _wait(pred, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------------------------------ confluent-kafka


@pytest.fixture
def confluent_admin(broker):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def _ck_create(admin, topic, partitions=1, config=None):
    from confluent_kafka.admin import NewTopic
    admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})])[topic].result(TIMEOUT)


def _ck_describe(admin, rtype, name):
    from confluent_kafka.admin import ConfigResource
    [(_, f)] = admin.describe_configs([ConfigResource(rtype, name)], request_timeout=TIMEOUT).items()
    return f.result(TIMEOUT)


def test_confluent_describe_and_alter_configs(confluent_admin, topic):
    from confluent_kafka.admin import ConfigResource
    from confluent_kafka.admin import ConfigSource
    a = confluent_admin
    _ck_create(a, topic, config={"cleanup.policy": "compact"})
    cfg = _ck_describe(a, "TOPIC", topic)
    assert cfg["cleanup.policy"].value == "compact"
    assert cfg["cleanup.policy"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["retention.ms"].value == "604800000" and cfg["retention.ms"].is_default
    assert cfg["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert not cfg["retention.ms"].is_read_only and not cfg["retention.ms"].is_sensitive
    assert list(cfg["segment.bytes"].synonyms) == ["log.segment.bytes"]
    # legacy AlterConfigs replaces the whole set of overrides
    [(_, f)] = a.alter_configs([ConfigResource("TOPIC", topic, set_config={"retention.ms": "3600000"})]).items()
    f.result(TIMEOUT)
    cfg = _ck_describe(a, "TOPIC", topic)
    assert cfg["retention.ms"].value == "3600000"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["cleanup.policy"].value == "delete" and cfg["cleanup.policy"].source == ConfigSource.DEFAULT_CONFIG.value
    # validate_only changes nothing; a bad value is INVALID_CONFIG
    [(_, f)] = a.alter_configs([ConfigResource("TOPIC", topic, set_config={"retention.ms": "1"})],
                               validate_only=True).items()
    f.result(TIMEOUT)
    assert _ck_describe(a, "TOPIC", topic)["retention.ms"].value == "3600000"
    [(_, f)] = a.alter_configs([ConfigResource("TOPIC", topic, set_config={"retention.ms": "soon"})]).items()
    with pytest.raises(Exception) as e:
        f.result(TIMEOUT)
    assert "INVALID_CONFIG" in str(e.value) or "retention.ms" in str(e.value)


def test_confluent_incremental_alter_and_effect(confluent_admin, broker, topic):
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    a = confluent_admin
    _ck_create(a, topic)
    ops = [ConfigEntry("max.message.bytes", "2000", incremental_operation=AlterConfigOpType.SET),
           ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)]
    [(_, f)] = a.incremental_alter_configs([ConfigResource("TOPIC", topic, incremental_configs=ops)]).items()
    f.result(TIMEOUT)
    cfg = _ck_describe(a, "TOPIC", topic)
    assert cfg["max.message.bytes"].value == "2000"
    assert cfg["cleanup.policy"].value == "delete,compact"
    # the new max.message.bytes is enforced at once
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "message.send.max.retries": 0,
                  "compression.type": "none"})
    results = []
    # keyed: the topic's cleanup.policy is delete,compact here, and compacted topics refuse keyless records
    p.produce(topic, b"x" * 10_000, key=b"k", on_delivery=lambda err, msg: results.append(err))
    assert p.flush(TIMEOUT) == 0      # one batch at a time: a batch is refused as a whole
    p.produce(topic, b"small", key=b"k", on_delivery=lambda err, msg: results.append(err))
    assert p.flush(TIMEOUT) == 0
    codes = sorted((e.code() if e else 0) for e in results)
    assert codes == sorted([0, KafkaError.MSG_SIZE_TOO_LARGE]), results
    ops = [ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
           ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SUBTRACT)]
    [(_, f)] = a.incremental_alter_configs([ConfigResource("TOPIC", topic, incremental_configs=ops)]).items()
    f.result(TIMEOUT)
    cfg = _ck_describe(a, "TOPIC", topic)
    assert cfg["max.message.bytes"].value == "1048588" and cfg["cleanup.policy"].value == "delete"
    # a static broker config cannot be altered; a dynamic one can
    bad = [ConfigEntry("num.partitions", "3", incremental_operation=AlterConfigOpType.SET)]
    [(_, f)] = a.incremental_alter_configs([ConfigResource("BROKER", "1", incremental_configs=bad)]).items()
    with pytest.raises(Exception) as e:
        f.result(TIMEOUT)
    assert "Cannot update these configs dynamically" in str(e.value)


def test_confluent_broker_configs_and_cluster(confluent_admin, broker):
    a = confluent_admin
    cfg = _ck_describe(a, "BROKER", "1")
    assert cfg["num.partitions"].value == "1" and cfg["num.partitions"].is_read_only
    assert not cfg["log.retention.ms"].is_read_only
    cluster = a.describe_cluster(include_authorized_operations=True, request_timeout=TIMEOUT).result(TIMEOUT)
    assert cluster.cluster_id and cluster.controller.id == 1
    assert [(n.id, n.host, n.port) for n in cluster.nodes] == [(1, *broker.bootstrap.rsplit(":", 1)[0:1],
                                                                int(broker.bootstrap.rsplit(":", 1)[1]))]
    assert cluster.authorized_operations


def test_confluent_delete_records_partitions_describe_topics(confluent_admin, broker, topic):
    from confluent_kafka import Consumer, Producer, TopicCollection, TopicPartition
    from confluent_kafka.admin import NewPartitions
    a = confluent_admin
    _ck_create(a, topic)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(10):
        p.produce(topic, f"m{i}".encode(), partition=0)
    assert p.flush(TIMEOUT) == 0
    [(_, f)] = a.delete_records([TopicPartition(topic, 0, 4)], request_timeout=TIMEOUT).items()
    assert f.result(TIMEOUT).low_watermark == 4
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{topic}", "enable.auto.commit": False})
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT) == (4, 10)
    finally:
        c.close()
    [(_, f)] = a.delete_records([TopicPartition(topic, 0, 20)], request_timeout=TIMEOUT).items()
    with pytest.raises(Exception) as e:
        f.result(TIMEOUT)
    assert "OFFSET_OUT_OF_RANGE" in str(e.value) or "out of range" in str(e.value).lower()
    a.create_partitions([NewPartitions(topic, 3)])[topic].result(TIMEOUT)
    desc = a.describe_topics(TopicCollection([topic]), request_timeout=TIMEOUT)[topic].result(TIMEOUT)
    assert desc.name == topic and len(desc.partitions) == 3
    assert all(pi.leader.id == 1 for pi in desc.partitions)


# ------------------------------------------------------------------------------------------ aiokafka


def test_aiokafka_admin(broker, topic):
    from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic, RecordsToDelete
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka import AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    async def run():
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT * 1000)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
            [resp] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                                  include_synonyms=True)
            [res] = resp.resources
            assert res[0] == 0, res
            cfg = {c[0]: c for c in res[4]}
            assert cfg["retention.ms"][1] == "604800000"
            resp = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                             {"retention.ms": "7200000"})])
            assert [r[0] for r in resp[0].resources] == [0]
            [resp] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                                  include_synonyms=True)
            cfg = {c[0]: c for c in resp.resources[0][4]}
            assert cfg["retention.ms"][1] == "7200000" and cfg["retention.ms"][3] == DYNAMIC_TOPIC_CONFIG
            [bresp] = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")])
            assert bresp.resources[0][0] == 0 and len(bresp.resources[0][4]) > 10
            cluster = await admin.describe_cluster()
            assert cluster["controller_id"] == 1 and cluster["cluster_id"]
            assert [b["node_id"] if isinstance(b, dict) else b[0] for b in cluster["brokers"]] == [1]
            await admin.create_partitions({topic: NewPartitions(2)})
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            try:
                for i in range(6):
                    await producer.send_and_wait(topic, f"v{i}".encode(), partition=1)
            finally:
                await producer.stop()
            low = await admin.delete_records({TopicPartition(topic, 1): RecordsToDelete(before_offset=5)})
            assert low == {TopicPartition(topic, 1): 5}
        finally:
            await admin.close()

    asyncio.run(asyncio.wait_for(run(), 60))


# ------------------------------------------------------------------------------------------ kafka-python


def test_kafka_python_admin(broker, topic):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT * 1000)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
        got = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
        cfg = got["topic"][topic]
        assert cfg["retention.ms"]["value"] == "604800000" and cfg["retention.ms"]["config_source"] == "DEFAULT_CONFIG"
        assert cfg["cleanup.policy"]["config_type"] == "LIST"
        # the default filter ("modified") shows only overrides: none yet
        assert admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])["topic"][topic] == {}
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "1800000"})])
        got = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], include_synonyms=True)
        assert got["topic"][topic] == {"retention.ms": {
            "value": "1800000", "read_only": False, "config_source": "DYNAMIC_TOPIC_CONFIG", "is_sensitive": False,
            "synonyms": [{"name": "retention.ms", "value": "1800000", "source": "DYNAMIC_TOPIC_CONFIG"}],
            "config_type": "LONG", "documentation": None}}
        # the broker (not the client) refuses an unknown name
        res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"no.such": "1"})],
                                  raise_on_unknown=False)
        err = res["topic"][topic]
        assert "InvalidConfig" in type(err).__name__ or "InvalidConfig" in repr(err), res
        # IncrementalAlterConfigs (the default on brokers that offer it) and legacy AlterConfigs
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                            configs={"cleanup.policy": ("APPEND", "compact")})], incremental=True)
        got = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])["topic"][topic]
        assert {k: v["value"] for k, v in got.items()} == {"retention.ms": "1800000",
                                                           "cleanup.policy": "delete,compact"}
        # legacy AlterConfigs replaces the whole set; kafka-python re-sends the other modified keys itself
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "900000"})],
                            incremental=False)
        got = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])["topic"][topic]
        assert {k: v["value"] for k, v in got.items()} == {"retention.ms": "900000",
                                                           "cleanup.policy": "delete,compact"}
        bcfg = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")], config_filter="all")
        assert bcfg["broker"]["1"]["num.partitions"]["read_only"] is True

        prod = KafkaProducer(bootstrap_servers=broker.bootstrap)
        # keyed: the topic is delete,compact by now, and compacted topics refuse keyless records
        sent = [prod.send(topic, f"v{i}".encode(), key=f"k{i}".encode(), partition=0) for i in range(5)]
        prod.flush(TIMEOUT)
        assert [f.get(TIMEOUT).offset for f in sent] == list(range(5))
        prod.close()
        [dirs] = admin.describe_log_dirs(topic_partitions={topic: [0]})
        assert dirs["broker"] == 1
        [d] = dirs["log_dirs"]
        assert d["error_code"] == 0 and d["log_dir"] == str(broker.data_dir.resolve())
        assert d["total_bytes"] > 0 and d["usable_bytes"] > 0
        [t] = d["topics"]
        assert t["name"] == topic and [p["partition_index"] for p in t["partitions"]] == [0]
        assert t["partitions"][0]["partition_size"] > 0

        res = admin.delete_records({TopicPartition(topic, 0): 3})
        assert res[TopicPartition(topic, 0)]["low_watermark"] == 3
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
        try:
            assert consumer.beginning_offsets([TopicPartition(topic, 0)]) == {TopicPartition(topic, 0): 3}
        finally:
            consumer.close()
        admin.create_partitions({topic: NewPartitions(4)})
        meta = admin.describe_topics([topic])
        assert len(meta[0]["partitions"]) == 4
        cluster = admin.describe_cluster()
        assert cluster["controller_id"] == 1 and [b["broker_id"] for b in cluster["brokers"]] == [1]
    finally:
        admin.close()


def test_confluent_dynamic_broker_configs_are_topic_defaults_and_survive_a_restart(broker_factory, topic):
    """A broker-level log.retention.ms / message.max.bytes is what a topic without an override gets, at once;
    deleting it restores Kafka's default; it is kept across a restart. librdkafka refuses an empty resource name,
    so the cluster-wide default ("", kafka-configs --entity-default) is tested with the Java Admin
    (test_java_client.py). Its own broker: the session broker's defaults must not change under other tests."""
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource
    b = broker_factory(storage="disk")
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    _ck_create(a, topic)
    other = topic + "-override"
    _ck_create(a, other, config={"retention.ms": "7200000"})

    def alter(*ops):
        entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET if v is not None
                               else AlterConfigOpType.DELETE) for k, v in ops]
        [(_, f)] = a.incremental_alter_configs([ConfigResource("BROKER", "1", incremental_configs=entries)]).items()
        f.result(TIMEOUT)

    def produce_sizes(*sizes):
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "message.send.max.retries": 0,
                      "compression.type": "none"})
        errs = []
        for n in sizes:
            p.produce(topic, b"x" * n, on_delivery=lambda err, msg: errs.append(err.code() if err else 0))
            assert p.flush(TIMEOUT) == 0
        return errs

    cfg = _ck_describe(a, "TOPIC", topic)
    assert (cfg["retention.ms"].value, cfg["retention.ms"].source) == ("604800000", ConfigSource.DEFAULT_CONFIG.value)
    alter(("log.retention.ms", "3600000"), ("message.max.bytes", "2000"))
    cfg = _ck_describe(a, "TOPIC", topic)
    assert cfg["retention.ms"].value == "3600000"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    assert cfg["max.message.bytes"].value == "2000"
    assert _ck_describe(a, "TOPIC", other)["retention.ms"].value == "7200000"     # its override still wins
    assert produce_sizes(10_000, 100) == [KafkaError.MSG_SIZE_TOO_LARGE, 0]
    bcfg = _ck_describe(a, "BROKER", "1")
    assert bcfg["log.retention.ms"].value == "3600000"
    assert bcfg["log.retention.ms"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value

    b.restart()
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    cfg = _ck_describe(a, "TOPIC", topic)
    assert cfg["retention.ms"].value == "3600000"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    assert produce_sizes(10_000) == [KafkaError.MSG_SIZE_TOO_LARGE]

    alter(("log.retention.ms", None), ("message.max.bytes", None))
    cfg = _ck_describe(a, "TOPIC", topic)
    assert (cfg["retention.ms"].value, cfg["retention.ms"].source) == ("604800000", ConfigSource.DEFAULT_CONFIG.value)
    assert produce_sizes(10_000) == [0]
    # legacy AlterConfigs on the broker replaces its whole set; a read-only config is refused
    [(_, f)] = a.alter_configs([ConfigResource("BROKER", "1", set_config={"log.retention.bytes": "5000000"})]).items()
    f.result(TIMEOUT)
    assert _ck_describe(a, "TOPIC", topic)["retention.bytes"].value == "5000000"
    [(_, f)] = a.alter_configs([ConfigResource("BROKER", "1", set_config={"log.retention.hours": "1"})]).items()
    with pytest.raises(Exception) as e:
        f.result(TIMEOUT)
    assert "Cannot update these configs dynamically: Set(log.retention.hours)" in str(e.value)
