"""The official Java client (kafka-clients 3.9.1) against the broker: admin, produce, consume, groups.

Producers run with enable.idempotence=false for now (the broker does not do idempotent producers yet).
"""

from __future__ import annotations

import time

import pytest

from harness import JavaClientError

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


@pytest.fixture
def kc(java, broker):
    """The Java client bound to the session broker: ``kc("produce", topic, 10, ...)``."""
    return java.bind(broker.bootstrap)


def produce(kc, topic, n, *opts, compression="none"):
    """Produce n records; returns the per-record acks (i, partition, offset, timestamp) in send order."""
    acks = kc("produce", topic, n, "--compression", compression, "--acks", "all", "--idempotence", "false", *opts)
    assert len(acks) == n
    return acks


def records(lines):
    return [line for line in lines if "offset" in line and "value" in line]


def topic_names(kc):
    return {t["topic"] for t in kc("list-topics")}


def wait_for(pred, timeout=10.0, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def test_admin_create_describe_delete(kc, topic):
    created = kc("create-topic", topic, 3)
    assert created == [{"created": topic, "partitions": 3, "replication_factor": 1,
                        "topic_id": created[0]["topic_id"]}]
    assert topic in topic_names(kc)

    [desc] = kc("describe-topic", topic)
    assert desc["topic"] == topic and desc["internal"] is False
    assert desc["topic_id"] == created[0]["topic_id"]
    assert [p["partition"] for p in desc["partitions"]] == [0, 1, 2]
    for p in desc["partitions"]:
        assert p["leader"] is not None and p["leader"] >= 0
        assert p["replicas"] == [p["leader"]] and p["isr"] == [p["leader"]]

    assert kc("delete-topic", topic) == [{"deleted": topic}]
    assert wait_for(lambda: topic not in topic_names(kc)), "deleted topic still listed"


def test_create_existing_topic_fails(kc, topic):
    kc("create-topic", topic, 1)
    with pytest.raises(JavaClientError) as err:
        kc("create-topic", topic, 1)
    assert err.value.error_type == "TopicExistsException"


def test_describe_unknown_topic_fails(kc, topic):
    with pytest.raises(JavaClientError) as err:
        kc("describe-topic", topic)
    assert err.value.error_type == "UnknownTopicOrPartitionException"


@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume_by_offset(kc, topic, codec):
    kc("create-topic", topic, 1)
    keyed = produce(kc, topic, 20, "--key-prefix", "key", "--headers", "--value-size", "200", compression=codec)
    assert [(a["partition"], a["offset"]) for a in keyed] == [(0, i) for i in range(20)]
    unkeyed = produce(kc, topic, 5, "--start", "20", "--value-prefix", "plain", compression=codec)
    assert [(a["partition"], a["offset"]) for a in unkeyed] == [(0, i) for i in range(20, 25)]

    got = records(kc("consume-assign", topic, 0, 0, 25))
    assert [r["offset"] for r in got] == list(range(25))
    for r in got[:20]:
        i = r["offset"]
        assert r["key"] == f"key-{i}"
        assert r["value"].startswith(f"value-{i} ") and len(r["value"]) == 200
        assert r["headers"] == [["idx", str(i)], ["codec", codec], ["empty", ""]]
        assert r["timestamp_type"] == "CreateTime"
    for r in got[20:]:
        assert r["key"] is None
        assert r["value"] == f"plain-{r['offset']}"
        assert r["headers"] == []
    acked_ts = {a["offset"]: a["timestamp"] for a in keyed + unkeyed}
    assert [r["timestamp"] for r in got] == [acked_ts[r["offset"]] for r in got]
    assert all(r["timestamp"] > 1_500_000_000_000 for r in got)

    # seeking into the middle of a batch: the client must get exactly the records from there on
    middle = records(kc("consume-assign", topic, 0, 7, 5))
    assert [r["offset"] for r in middle] == [7, 8, 9, 10, 11]
    assert [r["key"] for r in middle] == [f"key-{i}" for i in range(7, 12)]
    # nothing beyond the end
    assert records(kc("consume-assign", topic, 0, 25, 1, "--timeout-ms", "1500")) == []


def test_keyed_records_stick_to_partitions(kc, topic):
    kc("create-topic", topic, 3)
    acks = produce(kc, topic, 30, "--key-prefix", "k", compression="lz4")
    acks += produce(kc, topic, 30, "--key-prefix", "k", compression="lz4")  # the same 30 keys again
    part_of = {}
    for a in acks:
        assert part_of.setdefault(a["i"], a["partition"]) == a["partition"], "same key, different partition"
    for p in range(3):
        offsets = [a["offset"] for a in acks if a["partition"] == p]
        assert offsets == list(range(len(offsets))), f"partition {p} offsets not contiguous from 0"
    for p in range(3):
        expect = [f"k-{a['i']}" for a in acks if a["partition"] == p]
        got = records(kc("consume-assign", topic, p, 0, len(expect)))
        assert [r["key"] for r in got] == expect
        assert all(r["partition"] == p for r in got)


def test_produce_to_explicit_partition(kc, topic):
    kc("create-topic", topic, 2)
    acks = produce(kc, topic, 4, "--partition", "1")
    assert [(a["partition"], a["offset"]) for a in acks] == [(1, i) for i in range(4)]
    assert records(kc("consume-assign", topic, 0, 0, 1, "--timeout-ms", "1500")) == []
    assert [r["value"] for r in records(kc("consume-assign", topic, 1, 0, 4))] == [f"value-{i}" for i in range(4)]


def test_list_offsets(kc, topic):
    kc("create-topic", topic, 1)

    def offsets(spec):
        [res] = kc("list-offsets", topic, 0, spec)
        return res["offset"], res["timestamp"]

    assert offsets("earliest")[0] == 0
    assert offsets("latest")[0] == 0
    base = 1_700_000_000_000
    produce(kc, topic, 10, "--timestamp-base", base, "--timestamp-step", 1000, "--linger-ms", "50")
    assert offsets("earliest")[0] == 0
    assert offsets("latest")[0] == 10
    assert offsets(f"timestamp:{base}") == (0, base)
    assert offsets(f"timestamp:{base + 3500}") == (4, base + 4000)  # first record with timestamp >= T
    assert offsets(f"timestamp:{base - 1}") == (0, base)
    assert offsets(f"timestamp:{base + 60_000}")[0] == -1  # none that late
    assert offsets("max-timestamp") == (9, base + 9000)


def test_describe_and_alter_configs(kc, topic):
    kc("create-topic", topic, 1, "retention.ms=3600000", "cleanup.policy=delete")
    configs = {c["name"]: c for c in kc("describe-configs", topic)}
    for name in ("cleanup.policy", "retention.ms", "segment.bytes", "max.message.bytes", "compression.type"):
        assert name in configs, f"describe-configs lacks {name}"
    assert configs["retention.ms"]["value"] == "3600000"
    assert configs["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert configs["retention.ms"]["default"] is False
    assert configs["segment.bytes"]["source"] in ("DEFAULT_CONFIG", "STATIC_BROKER_CONFIG")

    assert kc("alter-config", topic, "retention.ms=7200000", "max.message.bytes=2000000") == [
        {"altered": topic, "ops": 2}]
    configs = {c["name"]: c for c in kc("describe-configs", topic)}
    assert configs["retention.ms"]["value"] == "7200000"
    assert configs["max.message.bytes"]["value"] == "2000000"
    assert configs["max.message.bytes"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert configs["cleanup.policy"]["value"] == "delete"  # incremental: untouched keys stay

    kc("alter-config", topic, "-retention.ms")  # DELETE: back to the default
    configs = {c["name"]: c for c in kc("describe-configs", topic)}
    assert configs["retention.ms"]["value"] == "604800000"
    assert configs["retention.ms"]["source"] != "DYNAMIC_TOPIC_CONFIG"


def test_dynamic_broker_configs_through_the_java_admin(java, broker_factory, topic):
    """kafka-configs --entity-default / --entity-name 1 through the Java Admin: a broker-level log.retention.ms
    is the topic's retention.ms (source DYNAMIC_DEFAULT_BROKER_CONFIG / DYNAMIC_BROKER_CONFIG), kept across a
    restart, back to Kafka's default when deleted. Its own broker, so the session broker's defaults stay."""
    b = broker_factory(storage="disk")
    kc = java.bind(b.bootstrap)
    kc("create-topic", topic, 1)

    def topic_config(name):
        return {c["name"]: c for c in kc("describe-configs", topic)}[name]

    assert (topic_config("retention.ms")["value"], topic_config("retention.ms")["source"]) == (
        "604800000", "DEFAULT_CONFIG")
    assert kc("alter-config", "broker:", "log.retention.ms=3600000", "log.cleanup.policy=compact") == [
        {"altered": "broker:", "ops": 2}]
    r = topic_config("retention.ms")
    assert (r["value"], r["source"], r["default"]) == ("3600000", "DYNAMIC_DEFAULT_BROKER_CONFIG", False)
    assert topic_config("cleanup.policy")["value"] == "compact"
    assert {c["name"]: c["value"] for c in kc("describe-configs", "broker:")} == {
        "log.retention.ms": "3600000", "log.cleanup.policy": "compact"}
    kc("alter-config", "broker:1", "log.retention.ms=1800000")
    r = topic_config("retention.ms")
    assert (r["value"], r["source"]) == ("1800000", "DYNAMIC_BROKER_CONFIG")
    brk = {c["name"]: c for c in kc("describe-configs", "broker:1")}
    assert (brk["log.retention.ms"]["value"], brk["log.retention.ms"]["source"]) == ("1800000",
                                                                                      "DYNAMIC_BROKER_CONFIG")
    assert brk["log.retention.hours"]["read_only"] and not brk["log.retention.ms"]["read_only"]

    b.restart()
    kc = java.bind(b.bootstrap)
    r = topic_config("retention.ms")
    assert (r["value"], r["source"]) == ("1800000", "DYNAMIC_BROKER_CONFIG")
    kc("alter-config", "broker:1", "-log.retention.ms")
    r = topic_config("retention.ms")
    assert (r["value"], r["source"]) == ("3600000", "DYNAMIC_DEFAULT_BROKER_CONFIG")
    kc("alter-config", "broker:", "-log.retention.ms", "-log.cleanup.policy")
    r = topic_config("retention.ms")
    assert (r["value"], r["source"]) == ("604800000", "DEFAULT_CONFIG")
    assert topic_config("cleanup.policy")["value"] == "delete"
    with pytest.raises(JavaClientError) as e:
        kc("alter-config", "broker:", "log.retention.hours=1")
    assert "Cannot update these configs dynamically" in str(e.value)


def test_consumer_group_consume_and_commit(kc, topic):
    group = f"g-{topic}"
    kc("create-topic", topic, 2)
    acks = produce(kc, topic, 10, "--key-prefix", "k")
    end = {p: sum(1 for a in acks if a["partition"] == p) for p in (0, 1)}

    lines = kc("consume-group", topic, group, 10)
    got, summary = records(lines), lines[-1]
    assert sorted(r["value"] for r in got) == sorted(f"value-{i}" for i in range(10))
    assert summary["assignment"] == [0, 1]
    assert summary["generation"] >= 1 and summary["member_id"]
    committed = {c["partition"]: c["offset"] for c in summary["committed"]}
    assert committed == {p: n for p, n in end.items() if n}

    offsets = {(o["topic"], o["partition"]): o["offset"] for o in kc("group-offsets", group)}
    assert offsets == {(topic, p): n for p, n in end.items() if n}
    assert group in {g["group"] for g in kc("list-groups")}

    # the same group resumes after its commit: only the new records
    produce(kc, topic, 4, "--key-prefix", "k", "--start", "10")
    lines = kc("consume-group", topic, group, 4)
    assert sorted(r["value"] for r in records(lines)) == [f"value-{i}" for i in range(10, 14)]
    assert sum(c["offset"] for c in lines[-1]["committed"]) == 14

    [desc] = kc("describe-group", group)
    assert desc["group"] == group
    assert desc["state"] in ("EMPTY", "Empty")  # the consumer left on close


def test_delete_topic_then_recreate(kc, topic):
    kc("create-topic", topic, 1)
    produce(kc, topic, 3)
    kc("delete-topic", topic)
    assert wait_for(lambda: topic not in topic_names(kc))
    kc("create-topic", topic, 1)
    assert kc("list-offsets", topic, 0, "latest")[0]["offset"] == 0
    assert [a["offset"] for a in produce(kc, topic, 2)] == [0, 1]
