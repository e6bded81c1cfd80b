"""Every registered api answers a failed request with a decodable response carrying the error (Kafka's
AbstractRequest.getErrorResponse), built from the request alone."""

from __future__ import annotations

import uuid

import pytest

from kafkapy.error_responses import error_response
from kafkapy.handlers import load_all
from wire import protocol
from wire.messages.error_codes import ErrorCode

HANDLERS = load_all()
UNKNOWN = int(ErrorCode.UNKNOWN_SERVER_ERROR)
_SCALARS = {"string": "x", "int32": 3, "int64": 5, "int16": 1, "int8": 1, "uuid": uuid.UUID(int=7)}


def populated(cls, mod, version: int):
    """A request struct with one entry in every list, so that every level of the answer can be seen."""
    msg = cls()
    for f in cls.FIELDS:
        attr, typ, lo, hi, struct = f[0], f[2], f[3], f[4], f[10]
        if not lo <= version <= hi:
            continue
        if typ.startswith("[]"):
            if struct is not None:
                setattr(msg, attr, [populated(getattr(mod, struct), mod, version)])
            elif typ[2:] in _SCALARS:
                setattr(msg, attr, [_SCALARS[typ[2:]]])
        elif typ in _SCALARS and attr in ("name", "topic", "group_id", "key", "resource_name", "transactional_id"):
            setattr(msg, attr, "t")
    return msg


def error_codes(msg, version: int, found: list) -> list:
    for f in getattr(msg, "FIELDS", ()):
        if not f[3] <= version <= f[4]:
            continue
        value = getattr(msg, f[0])
        if f[2] == "int16" and f[0].endswith("error_code") and f[7] is None:   # not a tagged one
            found.append(value)
        elif isinstance(value, list):
            for item in value:
                error_codes(item, version, found)
    return found


CASES = [(h.api_key, v) for h in sorted(HANDLERS.values(), key=lambda h: h.api_key)
         for v in range(h.min_version, h.max_version + 1)]


@pytest.mark.parametrize("key,version", CASES, ids=[f"{protocol.API[k].name}-v{v}" for k, v in CASES])
def test_every_registered_api_has_a_decodable_error_response(key, version):
    api = protocol.API[key]
    req = populated(api.request.MESSAGE, api.request, version)
    if key == 0:
        req.acks = -1
    # the request itself must be a valid one at this version
    protocol.decode(api.request, version, protocol.encode(api.request, version, req))
    resp = error_response(key, version, req)
    frames = protocol.encode_response(key, version, 9, resp)
    corr, decoded = protocol.decode_response(key, version, b"".join(frames)[4:])
    assert corr == 9
    codes = error_codes(decoded, version, [])
    if api.name == "DescribeLogDirs" and version < 3:
        assert codes == [] and decoded.results == []     # no error field before v3; Kafka answers empty
    else:
        assert codes and set(codes) == {UNKNOWN}, codes


def test_produce_with_acks_0_has_no_error_response():
    mod = protocol.API[0].request
    assert error_response(0, 9, populated(mod.MESSAGE, mod, 9)) is None


def test_mirrors_topics_and_partitions_like_kafka():
    mod = protocol.API_BY_NAME["Produce"].request
    req = mod.ProduceRequest(acks=-1, timeout_ms=100, topic_data=[
        mod.TopicProduceData(name="a", partition_data=[mod.PartitionProduceData(index=2, records=b"x"),
                                                       mod.PartitionProduceData(index=5, records=b"y")])])
    resp = error_response(0, 9, req)
    [t] = resp.responses
    assert t.name == "a"
    assert [(p.index, p.error_code, p.base_offset) for p in t.partition_responses] == [(2, -1, -1), (5, -1, -1)]

    mod = protocol.API_BY_NAME["Metadata"].request
    resp = error_response(3, 12, mod.MetadataRequest(topics=[mod.MetadataRequestTopic(name="m", topic_id=uuid.UUID(int=3))]))
    assert [(t.name, t.topic_id, t.error_code, t.partitions) for t in resp.topics] == [("m", uuid.UUID(int=3), -1, [])]
    assert resp.brokers == []
    assert error_response(3, 12, mod.MetadataRequest(topics=None)).topics == []   # all topics: Kafka answers none

    mod = protocol.API_BY_NAME["DescribeGroups"].request
    resp = error_response(15, 5, mod.DescribeGroupsRequest(groups=["g1", "g2"]))
    assert [(g.group_id, g.error_code) for g in resp.groups] == [("g1", -1), ("g2", -1)]

    mod = protocol.API_BY_NAME["Fetch"].request
    resp = error_response(1, 4, mod.FetchRequest(topics=[mod.FetchTopic(topic="f", partitions=[
        mod.FetchPartition(partition=1, fetch_offset=10)])]))
    [p] = resp.responses[0].partitions
    assert (resp.responses[0].topic, p.partition_index, p.error_code, p.high_watermark, p.records) == ("f", 1, -1, -1, b"")
    assert error_response(1, 12, mod.FetchRequest(topics=[])).error_code == -1


def test_top_level_error_code_wins():
    mod = protocol.API_BY_NAME["JoinGroup"].request
    resp = error_response(11, 5, mod.JoinGroupRequest(group_id="g", member_id="m"))
    assert resp.error_code == -1 and resp.member_id == "" and resp.members == []


# ---------------------------------------------------------------- through the server

@pytest.fixture(scope="module")
def live_broker():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "compat_tests"))
    from inprocess import InProcessBroker

    with InProcessBroker({"auto.create.topics.enable": "false"}) as b:
        b.run(b.broker.create_topic, "kept", 1)
        yield b


async def _boom(ctx, req):
    raise RuntimeError("forced failure for a test")


def test_a_raising_handler_answers_every_api_and_the_connection_keeps_serving(live_broker, monkeypatch):
    from dataclasses import replace

    from inprocess import connect, recv_frame, request
    from wire.messages import api_versions_request as AVQ

    b = live_broker
    s = connect(b.bootstrap)
    try:
        for corr, h in enumerate(sorted(HANDLERS.values(), key=lambda h: h.api_key), start=100):
            api = protocol.API[h.api_key]
            v = h.max_version
            req = populated(api.request.MESSAGE, api.request, v)
            if h.api_key == 0:
                req.acks = -1
            monkeypatch.setitem(b.broker.handlers, h.api_key, replace(h, fn=_boom))
            s.sendall(protocol.encode_request(h.api_key, v, corr, "raiser", req))
            frame = recv_frame(s)
            assert frame is not None, f"{api.name} v{v}: the broker closed the connection"
            got_corr, resp = protocol.decode_response(h.api_key, v, frame)
            assert got_corr == corr
            if not (api.name == "DescribeLogDirs" and v < 3):
                assert set(error_codes(resp, v, [])) == {UNKNOWN}, api.name
            monkeypatch.setitem(b.broker.handlers, h.api_key, h)
        ok = request(s, 18, 3, AVQ.ApiVersionsRequest(client_software_name="t", client_software_version="1"))
        assert ok.error_code == 0 and ok.api_keys
    finally:
        s.close()


def test_produce_acks_0_whose_handler_raises_closes_the_connection(live_broker, monkeypatch):
    from dataclasses import replace

    from inprocess import closed_by_peer, connect

    b = live_broker
    h = b.broker.handlers[0]
    monkeypatch.setitem(b.broker.handlers, 0, replace(h, fn=_boom))
    mod = protocol.API[0].request
    req = populated(mod.MESSAGE, mod, 9)
    req.acks = 0
    s = connect(b.bootstrap)
    try:
        s.sendall(protocol.encode_request(0, 9, 1, "raiser", req))
        assert closed_by_peer(s, 5)
    finally:
        s.close()


def test_a_real_client_sees_the_error_and_the_broker_keeps_serving_it(live_broker, monkeypatch):
    from dataclasses import replace

    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient, ConfigResource

    b = live_broker
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    assert "kept" in admin.list_topics(timeout=10).topics
    failed_on = []

    async def boom_once(ctx, req):
        failed_on.append(ctx.connection)
        raise RuntimeError("forced failure for a test")

    h = b.broker.handlers[32]   # DescribeConfigs
    monkeypatch.setitem(b.broker.handlers, 32, replace(h, fn=boom_once))
    res = ConfigResource(ConfigResource.Type.TOPIC, "kept")
    with pytest.raises(KafkaException) as e:
        admin.describe_configs([res])[res].result(timeout=10)
    assert e.value.args[0].code() == UNKNOWN
    monkeypatch.setitem(b.broker.handlers, 32, h)
    [conn] = failed_on
    served = conn.requests
    configs = admin.describe_configs([res])[res].result(timeout=10)
    assert "cleanup.policy" in configs
    assert conn in b.run(lambda: set(b.server.connections)) and conn.requests > served, \
        "the connection whose request failed must keep serving"
    p = Producer({"bootstrap.servers": b.bootstrap})
    p.produce("kept", b"after the failure")
    assert p.flush(10) == 0
    del admin, p     # librdkafka handles go before the module's broker does


def test_offset_fetch_before_v2_answers_per_partition_with_no_offset():
    mod = protocol.API_BY_NAME["OffsetFetch"].request
    req = mod.OffsetFetchRequest(group_id="g", topics=[mod.OffsetFetchRequestTopic(name="t", partition_indexes=[0, 4])])
    [t] = error_response(9, 1, req).topics
    assert [(p.partition_index, p.committed_offset, p.error_code) for p in t.partitions] == [(0, -1, -1), (4, -1, -1)]
    assert error_response(9, 5, req).error_code == -1
