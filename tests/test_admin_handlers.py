"""Admin handlers through raw requests over a socket: DescribeConfigs, AlterConfigs, IncrementalAlterConfigs,
DescribeCluster, DescribeLogDirs, OffsetForLeaderEpoch, DeleteRecords, every version."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import uuid

import pytest

from kafkapy.broker import Broker
from kafkapy.config import BrokerConfig
from wire import protocol
from wire.messages import alter_configs_request as ACQ
from wire.messages import delete_records_request as DRQ
from wire.messages import describe_cluster_request as DCLQ
from wire.messages import describe_configs_request as DCQ
from wire.messages import describe_log_dirs_request as DLDQ
from wire.messages import incremental_alter_configs_request as IACQ
from wire.messages import list_offsets_request as LOQ
from wire.messages import offset_for_leader_epoch_request as OLEQ
from wire.messages import produce_request as PQ
from wire.messages.error_codes import ErrorCode
from wire.records import build_batch

TOPIC, BROKER = 2, 4
DYNAMIC_TOPIC_CONFIG, DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG = 1, 2, 3
STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 4, 5
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


class RunningBroker:
    """An in-process broker on its own event loop thread, and a raw-protocol client."""

    def __init__(self, **kw):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.broker = Broker(BrokerConfig(host="127.0.0.1", port=0, **kw))
        self.host, self.port = self.run(self.broker.start())
        self.sock = socket.create_connection((self.host, self.port), timeout=10)
        self.corr = 0

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    def call_sync(self, fn, *args, **kw):
        async def wrapper():
            return fn(*args, **kw)
        return self.run(wrapper())

    def request(self, name: str, version: int, body):
        key = protocol.API_BY_NAME[name].key
        self.corr += 1
        self.sock.sendall(protocol.encode_request(key, version, self.corr, "admin-test", body))
        n = struct.unpack(">i", self.sock.recv(4, socket.MSG_WAITALL))[0]
        corr, resp = protocol.decode_response(key, version, self.sock.recv(n, socket.MSG_WAITALL))
        assert corr == self.corr
        return resp

    def create_topic(self, name, partitions=1, configs=None):
        return self.call_sync(self.broker.create_topic, name, partitions, 1, configs or {})

    def produce(self, topic, partition, n=1, value=b"v", version=9):
        batch = build_batch([(None, value) for _ in range(n)])
        body = PQ.ProduceRequest(transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
            PQ.TopicProduceData(name=topic, partition_data=[PQ.PartitionProduceData(index=partition, records=batch)])])
        return self.request("Produce", version, body).responses[0].partition_responses[0]

    def earliest(self, topic, partition):
        body = LOQ.ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[LOQ.ListOffsetsTopic(
            name=topic, partitions=[LOQ.ListOffsetsPartition(partition_index=partition, current_leader_epoch=-1,
                                                             timestamp=-2)])])
        return self.request("ListOffsets", 5, body).topics[0].partitions[0].offset

    def close(self):
        self.sock.close()
        self.run(self.broker.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def rb():
    b = RunningBroker(storage="memory")
    yield b
    b.close()


def topic_name():
    return f"t-{uuid.uuid4().hex[:10]}"


def describe(rb, version, resources, synonyms=False, docs=False):
    body = DCQ.DescribeConfigsRequest(resources=[DCQ.DescribeConfigsResource(resource_type=t, resource_name=n,
                                                                             configuration_keys=keys)
                                                 for t, n, keys in resources],
                                      include_synonyms=synonyms, include_documentation=docs)
    return rb.request("DescribeConfigs", version, body).results


def by_name(result):
    return {c.name: c for c in result.configs}


def alter(rb, version, resources, validate_only=False):
    body = ACQ.AlterConfigsRequest(resources=[ACQ.AlterConfigsResource(
        resource_type=t, resource_name=n, configs=[ACQ.AlterableConfig(name=k, value=v) for k, v in cfg.items()])
        for t, n, cfg in resources], validate_only=validate_only)
    return rb.request("AlterConfigs", version, body).responses


def incremental(rb, version, rtype, name, ops, validate_only=False):
    body = IACQ.IncrementalAlterConfigsRequest(resources=[IACQ.AlterConfigsResource(
        resource_type=rtype, resource_name=name,
        configs=[IACQ.AlterableConfig(name=k, config_operation=op, value=v) for k, op, v in ops])],
        validate_only=validate_only)
    return rb.request("IncrementalAlterConfigs", version, body).responses[0]


# ------------------------------------------------------------------------------------------ DescribeConfigs


@pytest.mark.parametrize("version", range(5))
def test_describe_topic_configs_every_version(rb, version):
    t = topic_name()
    rb.create_topic(t, configs={"retention.ms": "12345"})
    [res] = describe(rb, version, [(TOPIC, t, None)], synonyms=True, docs=True)
    assert res.error_code == 0 and res.resource_name == t and res.resource_type == TOPIC
    cfg = by_name(res)
    assert "segment.bytes" in cfg and "cleanup.policy" in cfg and len(cfg) >= 30
    r, s = cfg["retention.ms"], cfg["segment.bytes"]
    assert r.value == "12345" and s.value == "1073741824"
    assert not r.read_only and not r.is_sensitive
    if version == 0:
        assert r.is_default is False and s.is_default is True
    else:
        assert r.config_source == DYNAMIC_TOPIC_CONFIG and s.config_source == DEFAULT_CONFIG
        # Kafka's synonym order: the topic override, then the broker setting's sources, Kafka's default last
        assert [(y.name, y.value, y.source) for y in r.synonyms] == [("retention.ms", "12345", DYNAMIC_TOPIC_CONFIG)]
        assert [(y.name, y.value, y.source) for y in s.synonyms] == [("log.segment.bytes", "1073741824",
                                                                       DEFAULT_CONFIG)]
    if version >= 3:
        assert s.config_type == 3    # INT
        assert r.config_type == 5    # LONG
        assert cfg["cleanup.policy"].config_type == 7   # LIST


def test_describe_without_synonyms_and_key_filter(rb):
    t = topic_name()
    rb.create_topic(t)
    [res] = describe(rb, 4, [(TOPIC, t, ["retention.ms", "max.message.bytes", "no.such.config"])])
    cfg = by_name(res)
    assert set(cfg) == {"retention.ms", "max.message.bytes"}
    assert cfg["max.message.bytes"].synonyms == [] and cfg["max.message.bytes"].config_source == DEFAULT_CONFIG
    assert cfg["retention.ms"].documentation is None
    # an empty key list means all configs, like null
    assert len(describe(rb, 4, [(TOPIC, t, [])])[0].configs) == len(describe(rb, 4, [(TOPIC, t, None)])[0].configs)


def test_describe_static_broker_synonym():
    b = RunningBroker(storage="memory", properties={"log.segment.bytes": "2000000", "log.retention.ms": "5000"})
    try:
        t = topic_name()
        b.create_topic(t, configs={"segment.bytes": "3000000"})
        cfg = by_name(describe(b, 4, [(TOPIC, t, None)], synonyms=True)[0])
        seg = cfg["segment.bytes"]
        assert seg.value == "3000000" and seg.config_source == DYNAMIC_TOPIC_CONFIG
        assert [(y.name, y.value, y.source) for y in seg.synonyms] == [
            ("segment.bytes", "3000000", DYNAMIC_TOPIC_CONFIG),
            ("log.segment.bytes", "2000000", STATIC_BROKER_CONFIG),
            ("log.segment.bytes", "1073741824", DEFAULT_CONFIG)]
        ret = cfg["retention.ms"]
        assert ret.value == "5000" and ret.config_source == STATIC_BROKER_CONFIG
        assert [(y.name, y.source) for y in ret.synonyms] == [("log.retention.ms", STATIC_BROKER_CONFIG),
                                                              ("log.retention.hours", DEFAULT_CONFIG)]
        bcfg = by_name(describe(b, 4, [(BROKER, "1", None)], synonyms=True)[0])
        assert bcfg["log.segment.bytes"].value == "2000000"
        assert bcfg["log.segment.bytes"].config_source == STATIC_BROKER_CONFIG
    finally:
        b.close()


def test_describe_errors_and_broker_resources(rb):
    t = topic_name()
    rb.create_topic(t)
    res = describe(rb, 4, [(TOPIC, "no-such-topic", None), (TOPIC, "bad/name", None), (BROKER, "7", None),
                           (BROKER, "abc", None), (BROKER, "", None), (BROKER, "1", None), (99, "x", None)])
    assert [r.error_code for r in res] == [ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.INVALID_TOPIC_EXCEPTION,
                                           ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_REQUEST, 0, 0,
                                           ErrorCode.INVALID_REQUEST]
    assert [r.resource_name for r in res] == ["no-such-topic", "bad/name", "7", "abc", "", "1", "x"]
    assert res[2].error_message == "Unexpected broker id, expected 1 or empty string, but received 7"
    assert res[4].configs == []          # "" = the dynamic cluster-wide defaults: none set
    cfg = by_name(res[5])
    assert cfg["num.partitions"].read_only and cfg["num.partitions"].value == "1"
    assert not cfg["log.retention.ms"].read_only and cfg["log.retention.ms"].value is None
    assert cfg["log.retention.hours"].value == "168" and cfg["log.retention.hours"].config_source == DEFAULT_CONFIG


# ------------------------------------------------------------------------------------------ AlterConfigs


@pytest.mark.parametrize("version", range(3))
def test_alter_configs_replaces_the_set(rb, version):
    t = topic_name()
    rb.create_topic(t, configs={"retention.ms": "1000", "cleanup.policy": "compact"})
    [r] = alter(rb, version, [(TOPIC, t, {"segment.bytes": "1048576"})], validate_only=True)
    assert r.error_code == 0
    assert rb.broker.topics[t].configs == {"retention.ms": "1000", "cleanup.policy": "compact"}
    [r] = alter(rb, version, [(TOPIC, t, {"segment.bytes": "1048576"})])
    assert r.error_code == 0 and r.resource_name == t and r.resource_type == TOPIC
    assert rb.broker.topics[t].configs == {"segment.bytes": "1048576"}
    cfg = by_name(describe(rb, 4, [(TOPIC, t, None)])[0])
    assert cfg["segment.bytes"].config_source == DYNAMIC_TOPIC_CONFIG
    assert cfg["retention.ms"].config_source == DEFAULT_CONFIG and cfg["retention.ms"].value == "604800000"
    assert rb.broker.partition_log(t, 0).config.segment_bytes == 1048576


def test_alter_configs_errors(rb):
    t = topic_name()
    rb.create_topic(t, configs={"retention.ms": "1000"})
    res = alter(rb, 1, [(TOPIC, t, {"no.such.config": "1"})])
    assert res[0].error_code == ErrorCode.INVALID_CONFIG and "no.such.config" in res[0].error_message
    res = alter(rb, 1, [(TOPIC, t, {"retention.ms": "soon"})])
    assert res[0].error_code == ErrorCode.INVALID_CONFIG and "retention.ms" in res[0].error_message
    res = alter(rb, 1, [(TOPIC, "missing-topic", {"retention.ms": "1"})])
    assert res[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    res = alter(rb, 1, [(TOPIC, t, {"retention.ms": "1"}), (TOPIC, t, {"retention.ms": "2"})])
    assert [r.error_code for r in res] == [ErrorCode.INVALID_REQUEST] * 2
    assert rb.broker.topics[t].configs == {"retention.ms": "1000"}     # nothing applied after errors
    # broker resources: only dynamic broker configs
    res = alter(rb, 1, [(BROKER, "1", {"num.partitions": "3"})])
    assert res[0].error_code == ErrorCode.INVALID_REQUEST
    assert res[0].error_message == "Cannot update these configs dynamically: Set(num.partitions)"
    res = alter(rb, 1, [(BROKER, "2", {"log.retention.ms": "1"})])
    assert res[0].error_code == ErrorCode.INVALID_REQUEST
    res = alter(rb, 1, [(BROKER, "1", {"log.retention.ms": "abc"})])
    assert res[0].error_code == ErrorCode.INVALID_REQUEST
    res = alter(rb, 1, [(BROKER, "1", {"log.retention.ms": "60000"}), (BROKER, "", {"log.segment.bytes": "999999"})])
    assert [r.error_code for r in res] == [0, 0]
    cfg = by_name(describe(rb, 4, [(BROKER, "1", ["log.retention.ms", "log.segment.bytes"])], synonyms=True)[0])
    assert cfg["log.retention.ms"].value == "60000" and cfg["log.retention.ms"].config_source == DYNAMIC_BROKER_CONFIG
    assert cfg["log.segment.bytes"].config_source == DYNAMIC_DEFAULT_BROKER_CONFIG
    assert [y.source for y in cfg["log.segment.bytes"].synonyms] == [DYNAMIC_DEFAULT_BROKER_CONFIG, DEFAULT_CONFIG]
    [default] = describe(rb, 4, [(BROKER, "", None)])
    assert [(c.name, c.value) for c in default.configs] == [("log.segment.bytes", "999999")]


# ------------------------------------------------------------------------------------------ IncrementalAlterConfigs


@pytest.mark.parametrize("version", range(2))
def test_incremental_alter_configs(rb, version):
    t = topic_name()
    rb.create_topic(t, configs={"retention.ms": "1000"})
    r = incremental(rb, version, TOPIC, t, [("segment.bytes", SET, "2097152"), ("cleanup.policy", APPEND, "compact")])
    assert r.error_code == 0
    assert rb.broker.topics[t].configs == {"retention.ms": "1000", "segment.bytes": "2097152",
                                           "cleanup.policy": "delete,compact"}
    r = incremental(rb, version, TOPIC, t, [("cleanup.policy", SUBTRACT, "delete"), ("retention.ms", DELETE, None)])
    assert r.error_code == 0
    assert rb.broker.topics[t].configs == {"segment.bytes": "2097152", "cleanup.policy": "compact"}
    r = incremental(rb, version, TOPIC, t, [("segment.bytes", DELETE, None)], validate_only=True)
    assert r.error_code == 0 and "segment.bytes" in rb.broker.topics[t].configs
    r = incremental(rb, version, TOPIC, t, [("retention.ms", APPEND, "5")])
    assert r.error_code == ErrorCode.INVALID_CONFIG
    assert r.error_message == "Can't APPEND to key retention.ms because its type is not LIST."
    r = incremental(rb, version, TOPIC, t, [("nope", SET, "1")])
    assert r.error_code == ErrorCode.INVALID_CONFIG
    r = incremental(rb, version, TOPIC, t, [("retention.ms", 9, "1")])
    assert r.error_code == ErrorCode.INVALID_REQUEST
    r = incremental(rb, version, TOPIC, "missing", [("retention.ms", SET, "1")])
    assert r.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    r = incremental(rb, version, BROKER, "1", [("auto.create.topics.enable", SET, "false")])
    assert r.error_code == ErrorCode.INVALID_REQUEST and "auto.create.topics.enable" in r.error_message


def test_altered_configs_take_effect(rb):
    t = topic_name()
    rb.create_topic(t)
    assert rb.produce(t, 0, value=b"x" * 5000).error_code == 0
    assert incremental(rb, 1, TOPIC, t, [("max.message.bytes", SET, "1000")]).error_code == 0
    assert rb.produce(t, 0, value=b"x" * 5000).error_code == ErrorCode.MESSAGE_TOO_LARGE
    assert rb.produce(t, 0, value=b"x" * 10).error_code == 0
    p = rb.produce(t, 0)
    assert p.log_append_time_ms == -1
    assert incremental(rb, 1, TOPIC, t, [("message.timestamp.type", SET, "LogAppendTime")]).error_code == 0
    p = rb.produce(t, 0)
    assert p.error_code == 0 and p.log_append_time_ms > 0


# ------------------------------------------------------------------------------------------ DescribeCluster


@pytest.mark.parametrize("version", range(2))
def test_describe_cluster(rb, version):
    r = rb.request("DescribeCluster", version, DCLQ.DescribeClusterRequest(include_cluster_authorized_operations=True,
                                                                           endpoint_type=1))
    assert r.error_code == 0 and r.cluster_id == rb.broker.cluster_id and r.controller_id == 1
    assert [(b.broker_id, b.host, b.port, b.rack) for b in r.brokers] == [(1, "127.0.0.1", rb.port, None)]
    assert r.cluster_authorized_operations > 0
    r = rb.request("DescribeCluster", version, DCLQ.DescribeClusterRequest(include_cluster_authorized_operations=False,
                                                                           endpoint_type=1))
    assert r.cluster_authorized_operations == -2147483648
    if version >= 1:
        assert r.endpoint_type == 1
        r = rb.request("DescribeCluster", 1, DCLQ.DescribeClusterRequest(endpoint_type=2))
        assert r.error_code == ErrorCode.MISMATCHED_ENDPOINT_TYPE
        r = rb.request("DescribeCluster", 1, DCLQ.DescribeClusterRequest(endpoint_type=0))
        assert r.error_code == ErrorCode.UNSUPPORTED_ENDPOINT_TYPE


# ------------------------------------------------------------------------------------------ DescribeLogDirs


@pytest.mark.parametrize("version", range(5))
def test_describe_log_dirs_memory(rb, version):
    t = topic_name()
    rb.create_topic(t, 2)
    rb.produce(t, 1, n=3)
    r = rb.request("DescribeLogDirs", version, DLDQ.DescribeLogDirsRequest(topics=None))
    assert r.error_code == 0
    [d] = r.results
    assert d.error_code == 0 and d.log_dir == "memory"
    if version >= 4:
        assert d.total_bytes == -1 and d.usable_bytes == -1
    parts = {p.partition_index: p for tt in d.topics if tt.name == t for p in tt.partitions}
    assert set(parts) == {0, 1}
    assert parts[0].partition_size == 0 and parts[1].partition_size > 0
    assert parts[1].offset_lag == 0 and parts[1].is_future_key is False
    r = rb.request("DescribeLogDirs", version, DLDQ.DescribeLogDirsRequest(
        topics=[DLDQ.DescribableLogDirTopic(topic=t, partitions=[1, 7]),
                DLDQ.DescribableLogDirTopic(topic="nope", partitions=[0])]))
    [d] = r.results
    assert [(tt.name, [p.partition_index for p in tt.partitions]) for tt in d.topics] == [(t, [1])]


def test_describe_log_dirs_disk(tmp_path):
    b = RunningBroker(storage="disk", data_dir=str(tmp_path / "data"))
    try:
        t = topic_name()
        b.create_topic(t)
        b.produce(t, 0, n=2)
        [d] = b.request("DescribeLogDirs", 4, DLDQ.DescribeLogDirsRequest(topics=None)).results
        assert d.log_dir == os.path.abspath(tmp_path / "data")
        assert d.total_bytes > 0 and 0 <= d.usable_bytes <= d.total_bytes
        assert [p.partition_size for tt in d.topics if tt.name == t for p in tt.partitions] == [
            b.broker.partition_log(t, 0).size_in_bytes]
    finally:
        b.close()


# ------------------------------------------------------------------------------------------ OffsetForLeaderEpoch


@pytest.mark.parametrize("version", range(5))
def test_offset_for_leader_epoch(rb, version):
    t = topic_name()
    rb.create_topic(t)
    rb.produce(t, 0, n=4)

    def ask(epoch, current=-1, partition=0, topic=t):
        body = OLEQ.OffsetForLeaderEpochRequest(replica_id=-1, topics=[OLEQ.OffsetForLeaderTopic(
            topic=topic, partitions=[OLEQ.OffsetForLeaderPartition(partition=partition, current_leader_epoch=current,
                                                                   leader_epoch=epoch)])])
        return rb.request("OffsetForLeaderEpoch", version, body).topics[0].partitions[0]

    r = ask(0)
    assert r.error_code == 0 and r.end_offset == 4
    if version >= 1:
        assert r.leader_epoch == 0
    r = ask(5)   # a later epoch than any known: the log end offset of the latest epoch
    assert r.error_code == 0
    assert ask(0, partition=3).error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert ask(0, topic="nope").error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if version >= 2:
        assert ask(0, current=0).error_code == 0
        assert ask(0, current=3).error_code == ErrorCode.UNKNOWN_LEADER_EPOCH
        rb.broker.partition(t, 0).leader_epoch = 2
        assert ask(0, current=1).error_code == ErrorCode.FENCED_LEADER_EPOCH


# ------------------------------------------------------------------------------------------ DeleteRecords


@pytest.mark.parametrize("version", range(3))
def test_delete_records(rb, version):
    t = topic_name()
    rb.create_topic(t, 2)
    rb.produce(t, 0, n=5)
    rb.produce(t, 1, n=2)

    def delete(parts, topic=t):
        body = DRQ.DeleteRecordsRequest(topics=[DRQ.DeleteRecordsTopic(name=topic, partitions=[
            DRQ.DeleteRecordsPartition(partition_index=p, offset=o) for p, o in parts])], timeout_ms=5000)
        return [(p.partition_index, p.error_code, p.low_watermark)
                for p in rb.request("DeleteRecords", version, body).topics[0].partitions]

    assert delete([(0, 3), (1, -1)]) == [(0, 0, 3), (1, 0, 2)]
    assert rb.earliest(t, 0) == 3 and rb.earliest(t, 1) == 2
    assert delete([(0, 1)]) == [(0, 0, 3)]                    # never moves back
    assert delete([(0, 6)]) == [(0, ErrorCode.OFFSET_OUT_OF_RANGE, -1)]
    assert delete([(0, -5)]) == [(0, ErrorCode.OFFSET_OUT_OF_RANGE, -1)]
    assert delete([(2, 0)]) == [(2, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1)]
    assert delete([(0, 0)], topic="nope") == [(0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1)]
    c = topic_name()
    rb.create_topic(c, configs={"cleanup.policy": "compact"})
    assert delete([(0, 0)], topic=c) == [(0, ErrorCode.POLICY_VIOLATION, -1)]
