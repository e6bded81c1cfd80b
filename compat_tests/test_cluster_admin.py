"""Topic admin in a cluster through real clients against ``kafkapy.Cluster(3)``: DeleteTopics, CreatePartitions and
topic config changes go through the metadata store, so every broker follows (its Metadata, its logs, its configs),
whichever broker was asked; DescribeCluster answers from the cluster view.

confluent-kafka sends these admin requests to the controller; the same requests are also sent straight to a broker
that is not the controller (``raw``), which answers once its own view has the change.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions,
                                   NewTopic)

import kafkapy
from inprocess import connect, request  # compat_tests/ is on sys.path (conftest)
from kafkapy.cluster.metadata import assign_replicas
from wire.messages import create_partitions_request as CPQ
from wire.messages import delete_topics_request as DTQ
from wire.messages import describe_cluster_request as DCLQ
from wire.messages import describe_configs_request as DCQ
from wire.messages import incremental_alter_configs_request as IACQ
from wire.messages import metadata_request as MQ
from wire.messages.error_codes import ErrorCode

FAST = {"broker.session.timeout.ms": 1500, "broker.heartbeat.interval.ms": 300, "replica.fetch.wait.max.ms": 200}
NODES = (1, 2, 3)
TOPIC_RESOURCE = 2
DYNAMIC_TOPIC_CONFIG = 1


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def raw(port: int, api_key: int, version: int, body, timeout: float = 20.0):
    """One request straight to the broker on ``port`` (no client routing); its decoded response."""
    with connect(f"127.0.0.1:{port}", timeout) as s:
        return request(s, api_key, version, body, correlation_id=11, client_id="raw-admin")


def port_of(c, node: int) -> int:
    return c.nodes[node].port


def metadata(c, node: int) -> dict[str, list[tuple[int, int, list[int], list[int]]]]:
    """Broker ``node``'s Metadata v12 for every topic: {topic: [(partition, leader, replicas, isr)]}."""
    resp = raw(port_of(c, node), 3, 12, MQ.MetadataRequest(topics=None, allow_auto_topic_creation=False))
    return {t.name: sorted((p.partition_index, p.leader_id, list(p.replica_nodes), sorted(p.isr_nodes))
                           for p in t.partitions)
            for t in resp.topics if t.error_code == 0}


def not_controller(c) -> int:
    ctrl = c.controller()
    return next(n for n in NODES if n != ctrl)


def produce(bootstrap: str, topic: str, values: dict[int, bytes], **conf) -> dict[int, object]:
    """One record per partition (acks=all); {partition: error or offset}."""
    out = {}
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 15000, **conf})
    for part, v in values.items():
        p.produce(topic, v, partition=part,
                  on_delivery=lambda err, msg, part=part: out.__setitem__(part, err if err else msg.offset()))
    p.flush(30)
    return out


def consume(bootstrap: str, topic: str, partitions, expected: int, timeout: float = 20.0) -> dict[int, list]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.monotonic_ns()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in partitions])
    got: dict[int, list] = {p: [] for p in partitions}
    n, deadline = 0, time.monotonic() + timeout
    try:
        while n < expected and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            got[m.partition()].append((m.offset(), m.value()))
            n += 1
    finally:
        c.close()
    return got


def logs_of(c, topic: str, partitions: int) -> dict[int, list]:
    """{node: [partition log or None, ...]} as each broker has it."""
    return c.call(lambda cl: {n: [cl.core(n).partition_log(topic, p) for p in range(partitions)] for n in NODES})


def test_delete_topic_through_one_broker_is_gone_from_every_broker_and_can_be_recreated():
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("doomed", 3, 3)
        c.create_topic("doomed-too", 2, 3)
        assert produce(c.bootstrap_servers, "doomed", {p: b"old-%d" % p for p in range(3)}) == {0: 0, 1: 0, 2: 0}
        assert all(all(lg is not None for lg in logs) for logs in logs_of(c, "doomed", 3).values())

        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port_of(c, 1)}"})
        admin.delete_topics(["doomed"], operation_timeout=10)["doomed"].result(20)
        wait_until(lambda: all("doomed" not in metadata(c, n) for n in NODES), 10, "every broker to drop the topic")
        wait_until(lambda: all(lg is None for logs in logs_of(c, "doomed", 3).values() for lg in logs), 10,
                   "every broker to drop the logs")
        assert c.call(lambda cl: [sorted(k for k in cl.core(n).logs.logs if k[0] == "doomed") for n in NODES]) \
            == [[], [], []]
        assert c.call(lambda cl: cl.store is not None and cl._any_core().cluster.image.topics.get("doomed")) is None

        # straight to a broker that is not the controller: its own view has the deletion when it answers
        other = not_controller(c)
        resp = raw(port_of(c, other), 20, 6, DTQ.DeleteTopicsRequest(
            topics=[DTQ.DeleteTopicState(name="doomed-too")], timeout_ms=10000))
        assert [r.error_code for r in resp.responses] == [0]
        assert "doomed-too" not in metadata(c, other)
        resp = raw(port_of(c, other), 20, 6, DTQ.DeleteTopicsRequest(
            topics=[DTQ.DeleteTopicState(name="doomed-too")], timeout_ms=10000))
        assert [r.error_code for r in resp.responses] == [ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]
        wait_until(lambda: all("doomed-too" not in metadata(c, n) for n in NODES), 10, "doomed-too gone everywhere")

        # recreated under the same name: a new topic with empty logs on every broker
        admin.create_topics([NewTopic("doomed", 2, 3)], operation_timeout=10)["doomed"].result(20)
        wait_until(lambda: all(len(metadata(c, n).get("doomed", [])) == 2 for n in NODES), 10, "the new topic")
        assert produce(c.bootstrap_servers, "doomed", {0: b"new-0", 1: b"new-1"}) == {0: 0, 1: 0}
        got = consume(c.bootstrap_servers, "doomed", [0, 1], 2)
        assert got == {0: [(0, b"new-0")], 1: [(0, b"new-1")]}


def test_create_partitions_three_to_six_with_replication_factor_three():
    with kafkapy.Cluster(3, config=FAST) as c:
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port_of(c, 2)}"})
        admin.create_topics([NewTopic("grow", 3, 3)], operation_timeout=10)["grow"].result(20)
        before = c.call(lambda cl: cl._any_core().cluster.image.topics["grow"].assignment)
        admin.create_partitions([NewPartitions("grow", 6)], operation_timeout=10)["grow"].result(20)

        def grown(n):
            md = metadata(c, n).get("grow", [])
            return len(md) == 6 and all(len(r) == 3 and len(isr) == 3 and lead in r for _p, lead, r, isr in md)
        wait_until(lambda: all(grown(n) for n in NODES), 15, "six partitions with their ISR on every broker")
        md = metadata(c, 1)["grow"]
        assignment = [r for _p, _lead, r, _isr in md]
        assert assignment[:3] == before
        start = next(i for i, b in enumerate(NODES) if b >= before[0][0])
        assert assignment[3:] == assign_replicas(list(NODES), 3, 3, start, first_partition=3)  # Kafka's, continued
        assert {lead for _p, lead, _r, _isr in md[3:]} == set(NODES)                      # leaders spread
        assert all(all(lg is not None for lg in logs) for logs in logs_of(c, "grow", 6).values())

        acked = produce(c.bootstrap_servers, "grow", {p: b"v-%d" % p for p in range(6)})
        assert acked == {p: 0 for p in range(6)}
        got = consume(c.bootstrap_servers, "grow", range(3, 6), 3)
        assert got == {p: [(0, b"v-%d" % p)] for p in range(3, 6)}
        # replicated to every broker of the new partitions (the leaders' high watermark passed them: acks=all)
        wait_until(lambda: all(lg.log_end_offset == 1 for logs in logs_of(c, "grow", 6).values() for lg in logs[3:]),
                   10, "the followers of the new partitions to catch up")

        # straight to a broker that is not the controller, with a manual assignment; then bad ones
        other = not_controller(c)

        def create_partitions(count, assignments, validate_only=False):
            body = CPQ.CreatePartitionsRequest(
                topics=[CPQ.CreatePartitionsTopic(name="grow", count=count, assignments=None if assignments is None
                                                  else [CPQ.CreatePartitionsAssignment(broker_ids=a)
                                                        for a in assignments])],
                timeout_ms=10000, validate_only=validate_only)
            r = raw(port_of(c, other), 37, 3, body).results[0]
            return r.error_code, r.error_message
        assert create_partitions(8, [[9, 1, 2], [1, 2, 3]])[0] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
        assert create_partitions(8, [[1, 2], [1, 2]])[0] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
        assert create_partitions(8, [[1, 1, 2], [1, 2, 3]])[0] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
        assert create_partitions(5, None)[0] == ErrorCode.INVALID_PARTITIONS
        assert create_partitions(8, None, validate_only=True) == (0, None)
        assert len(metadata(c, other)["grow"]) == 6
        assert create_partitions(8, [[3, 1, 2], [2, 3, 1]]) == (0, None)
        md = metadata(c, other)["grow"]                                # at once on the broker asked
        assert [(r, lead) for _p, lead, r, _isr in md[6:]] == [([3, 1, 2], 3), ([2, 3, 1], 2)]
        wait_until(lambda: all(len(metadata(c, n)["grow"]) == 8 for n in NODES), 10, "eight partitions everywhere")
        assert produce(c.bootstrap_servers, "grow", {6: b"x", 7: b"y"}) == {6: 0, 7: 0}


def describe_topic_configs(c, node: int, topic: str) -> dict[str, tuple[str, int]]:
    """DescribeConfigs straight to broker ``node``: {name: (value, source)}."""
    resp = raw(port_of(c, node), 32, 4, DCQ.DescribeConfigsRequest(
        resources=[DCQ.DescribeConfigsResource(resource_type=TOPIC_RESOURCE, resource_name=topic,
                                               configuration_keys=None)]))
    r = resp.results[0]
    assert r.error_code == 0, r.error_message
    return {e.name: (e.value, e.config_source) for e in r.configs}


def test_topic_config_changes_through_one_broker_are_in_effect_on_every_broker():
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("limits", 3, 3)
        assert {c.leader_for("limits", p) for p in range(3)} == set(NODES)      # one leader per broker
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port_of(c, 1)}"})
        res = ConfigResource("topic", "limits", incremental_configs=[
            ConfigEntry("max.message.bytes", "2000", incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([res])[res].result(20)

        wait_until(lambda: all(describe_topic_configs(c, n, "limits")["max.message.bytes"]
                               == ("2000", DYNAMIC_TOPIC_CONFIG) for n in NODES), 10, "every broker to describe it")
        assert c.call(lambda cl: [cl.core(n).partition_log("limits", p).config.max_message_bytes
                                  for n in NODES for p in range(3)]) == [2000] * 9
        # in effect on every leader: a large record refused on each partition, a small one accepted
        big = produce(c.bootstrap_servers, "limits", {p: b"x" * 5000 for p in range(3)}, **{"retries": 0})
        assert {p: e.code() for p, e in big.items()} == {p: KafkaError.MSG_SIZE_TOO_LARGE for p in range(3)}
        assert produce(c.bootstrap_servers, "limits", {p: b"small" for p in range(3)}) == {0: 0, 1: 0, 2: 0}

        # DescribeConfigs through another broker (bootstrapped with it alone)
        admin3 = AdminClient({"bootstrap.servers": f"127.0.0.1:{port_of(c, 3)}"})
        got = admin3.describe_configs([ConfigResource("topic", "limits")])
        entries = list(got.values())[0].result(20)
        assert entries["max.message.bytes"].value == "2000"
        assert entries["max.message.bytes"].source == DYNAMIC_TOPIC_CONFIG

        # an incremental change straight to a broker that is not the controller, applied to the store's overrides
        other = not_controller(c)
        body = IACQ.IncrementalAlterConfigsRequest(resources=[IACQ.AlterConfigsResource(
            resource_type=TOPIC_RESOURCE, resource_name="limits", configs=[
                IACQ.AlterableConfig(name="retention.ms", config_operation=0, value="123456"),
                IACQ.AlterableConfig(name="cleanup.policy", config_operation=2, value="compact")])],
            validate_only=False)
        r = raw(port_of(c, other), 44, 1, body).responses[0]
        assert (r.error_code, r.error_message) == (0, None)
        assert describe_topic_configs(c, other, "limits")["retention.ms"] == ("123456", DYNAMIC_TOPIC_CONFIG)
        wait_until(lambda: c.call(lambda cl: all(cl.core(n).topics["limits"].configs == {
            "max.message.bytes": "2000", "retention.ms": "123456", "cleanup.policy": "delete,compact"}
            for n in NODES)), 10, "every broker to have both changes")
        assert c.call(lambda cl: {cl.core(n).partition_log("limits", p).config.retention_ms
                                  for n in NODES for p in range(3)}) == {123456}
        # a bad value is refused (INVALID_CONFIG) and changes nothing
        body.resources[0].configs = [IACQ.AlterableConfig(name="retention.ms", config_operation=0, value="soon")]
        r = raw(port_of(c, other), 44, 1, body).responses[0]
        assert r.error_code == ErrorCode.INVALID_CONFIG

        # AlterConfigs replaces the whole override set, on every broker
        res = ConfigResource("topic", "limits", set_config={"retention.ms": "654321"})
        admin.alter_configs([res])[res].result(20)
        wait_until(lambda: c.call(lambda cl: all(cl.core(n).topics["limits"].configs == {"retention.ms": "654321"}
                                                 for n in NODES)), 10, "every broker to have the new set")
        assert c.call(lambda cl: {cl.core(n).partition_log("limits", p).config.max_message_bytes
                                  for n in NODES for p in range(3)}) == {1048588}
        assert all(describe_topic_configs(c, n, "limits")["max.message.bytes"][1] != DYNAMIC_TOPIC_CONFIG
                   for n in NODES)


def test_describe_cluster_lists_every_live_broker_and_the_controller():
    with kafkapy.Cluster(3, config=FAST) as c:
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port_of(c, 2)}"})
        d = admin.describe_cluster(request_timeout=10).result(20)
        assert sorted((n.id, n.host, n.port) for n in d.nodes) == [(n, "127.0.0.1", port_of(c, n)) for n in NODES]
        assert d.controller.id == c.controller()
        for n in NODES:          # each broker answers from the cluster view, not just itself
            resp = raw(port_of(c, n), 60, 0, DCLQ.DescribeClusterRequest(include_cluster_authorized_operations=False))
            assert resp.controller_id == c.controller()
            assert sorted(b.broker_id for b in resp.brokers) == list(NODES)
        c.kill(3)
        wait_until(lambda: sorted(b.broker_id for b in raw(port_of(c, 1), 60, 0, DCLQ.DescribeClusterRequest(
            include_cluster_authorized_operations=False)).brokers) == [1, 2], 10, "broker 3 gone from the view")
