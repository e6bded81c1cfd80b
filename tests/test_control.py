"""Request control hooks (kafkapy.control) through ``kafkapy.Broker``: raw requests over a socket, every wait
bounded. Real clients against hooks are in compat_tests/test_control_clients.py."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import kafkapy
from compat_tests.inprocess import closed_by_peer, connect, request
from kafkapy.control import CLOSE, DROP_RESPONSE, Control, Delay, DropResponse, Error
from wire import protocol
from wire.messages.error_codes import ErrorCode
from wire.records import build_batch

API_VERSIONS, METADATA, PRODUCE, FETCH = 18, 3, 0, 1
MQ = protocol.API[METADATA].request
PQ = protocol.API[PRODUCE].request
FQ = protocol.API[FETCH].request
AVQ = protocol.API[API_VERSIONS].request


@pytest.fixture(scope="module")
def broker():
    with kafkapy.Broker(config={"auto.create.topics.enable": "false"}) as b:
        b.create_topic("t", 1)
        yield b


@pytest.fixture(autouse=True)
def no_hooks_left(broker):
    yield
    broker.clear_controls()
    assert broker.call(lambda core: core.controls) is None


def metadata(s, corr=1, topics=("t",)):
    return request(s, METADATA, 9, MQ.MetadataRequest(topics=[MQ.MetadataRequestTopic(name=t) for t in topics],
                                                      allow_auto_topic_creation=False), correlation_id=corr)


def produce_body(value: bytes, acks: int = -1):
    return PQ.ProduceRequest(acks=acks, timeout_ms=5000, topic_data=[PQ.TopicProduceData(name="t", partition_data=[
        PQ.PartitionProduceData(index=0, records=build_batch([(None, value)]))])])


def end_offset(b) -> int:
    return b.call(lambda core: core.partition_log("t", 0).log_end_offset)


def test_an_observer_sees_every_request_in_order_and_stays(broker):
    seen = []
    c = broker.control(lambda r: seen.append((r.api_key, r.api_name, r.api_version, r.client_id)))
    s = connect(broker.bootstrap_servers)
    try:
        request(s, API_VERSIONS, 3, AVQ.ApiVersionsRequest(client_software_name="t", client_software_version="1"),
                client_id="obs")
        metadata(s)
        request(s, PRODUCE, 9, produce_body(b"observed"), client_id="obs")
    finally:
        s.close()
    assert [k for k, *_ in seen] == [API_VERSIONS, METADATA, PRODUCE]
    assert seen[1][1:3] == ("Metadata", 9) and seen[0][3] == "obs"
    assert (c.seen, c.fired, c.active) == (3, 0, True)     # it only observed: still installed


def test_an_error_code_answers_once_then_the_hook_is_gone(broker):
    c = broker.control_key("Metadata", lambda r: ErrorCode.NOT_LEADER_OR_FOLLOWER)
    s = connect(broker.bootstrap_servers)
    try:
        first = metadata(s, 1)
        assert [(t.name, t.error_code) for t in first.topics] == [("t", ErrorCode.NOT_LEADER_OR_FOLLOWER)]
        second = metadata(s, 2)
        assert [(t.name, t.error_code) for t in second.topics] == [("t", 0)]
    finally:
        s.close()
    assert (c.fired, c.active) == (1, False) and c.wait(0)
    assert broker.controls == []


def test_kept_hook_answers_until_removed_and_codes_by_name(broker):
    c = broker.control_key(METADATA, lambda r: "UNKNOWN_TOPIC_OR_PARTITION", keep=True)
    s = connect(broker.bootstrap_servers)
    try:
        for corr in (1, 2, 3):
            assert metadata(s, corr).topics[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        c.remove()
        assert metadata(s, 4).topics[0].error_code == 0
    finally:
        s.close()
    assert c.fired == 3 and not c.active


def test_a_response_object_replaces_the_handlers_answer(broker):
    def answer(r):
        body = r.response_class(throttle_time_ms=7, brokers=[], cluster_id="hooked", controller_id=-1, topics=[])
        return body

    broker.control_key("Metadata", answer)
    s = connect(broker.bootstrap_servers)
    try:
        resp = metadata(s)
        assert (resp.cluster_id, resp.throttle_time_ms, resp.topics) == ("hooked", 7, [])
    finally:
        s.close()


def test_close_then_a_new_connection_is_served(broker):
    c = broker.control_key("Metadata", lambda r: CLOSE)
    s = connect(broker.bootstrap_servers)
    try:
        s.sendall(protocol.encode_request(METADATA, 9, 1, "t", MQ.MetadataRequest(topics=None)))
        assert closed_by_peer(s, 5)
    finally:
        s.close()
    assert c.fired == 1
    s = connect(broker.bootstrap_servers)
    try:
        assert metadata(s).topics[0].error_code == 0
    finally:
        s.close()


def test_delay_then_pass_and_delay_then_answer(broker):
    broker.control_key("Metadata", lambda r: Delay(0.3))
    s = connect(broker.bootstrap_servers)
    try:
        t0 = time.monotonic()
        assert metadata(s, 1).topics[0].error_code == 0
        assert time.monotonic() - t0 >= 0.3
        broker.control_key("Metadata", lambda r: Delay(0.2, then=Error("LEADER_NOT_AVAILABLE")))
        t0 = time.monotonic()
        assert metadata(s, 2).topics[0].error_code == ErrorCode.LEADER_NOT_AVAILABLE
        assert time.monotonic() - t0 >= 0.2
    finally:
        s.close()


def test_a_delayed_fetch_is_observed(broker):
    fetches = []
    broker.control_key("Fetch", lambda r: (fetches.append(time.monotonic()), Delay(1.0))[1])
    body = FQ.FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1 << 20, isolation_level=0,
                           session_id=0, session_epoch=-1, topics=[FQ.FetchTopic(topic="t", partitions=[
                               FQ.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 20,
                                                 current_leader_epoch=-1, log_start_offset=-1)])],
                           forgotten_topics_data=[], rack_id="")
    s = connect(broker.bootstrap_servers)
    try:
        t0 = time.monotonic()
        resp = request(s, FETCH, 11, body)
        took = time.monotonic() - t0
    finally:
        s.close()
    assert len(fetches) == 1 and 1.0 <= took < 5
    assert resp.responses[0].partitions[0].error_code == 0


def test_drop_response_after_the_append(broker):
    before = end_offset(broker)
    c = broker.control_key("Produce", lambda r: DROP_RESPONSE)
    s = connect(broker.bootstrap_servers)
    try:
        s.sendall(protocol.encode_request(PRODUCE, 9, 1, "t", produce_body(b"lost answer")))
        assert closed_by_peer(s, 5)          # no answer, the connection is cut ...
    finally:
        s.close()
    assert c.fired == 1
    assert end_offset(broker) == before + 1  # ... but the record was appended


def test_drop_response_keeping_the_connection_open(broker):
    before = end_offset(broker)
    broker.control_key("Produce", lambda r: DropResponse(close=False))
    s = connect(broker.bootstrap_servers)
    try:
        s.sendall(protocol.encode_request(PRODUCE, 9, 1, "t", produce_body(b"silent")))
        assert not closed_by_peer(s, 0.5)    # nothing comes back, the connection stays
        assert metadata(s, 2).topics[0].error_code == 0     # and serves the next request
    finally:
        s.close()
    assert end_offset(broker) == before + 1


def test_an_error_for_produce_with_acks_0_closes_the_connection(broker):
    before = end_offset(broker)
    broker.control_key("Produce", lambda r: ErrorCode.NOT_LEADER_OR_FOLLOWER)
    s = connect(broker.bootstrap_servers)
    try:
        s.sendall(protocol.encode_request(PRODUCE, 9, 1, "t", produce_body(b"x", acks=0)))
        assert closed_by_peer(s, 5)
    finally:
        s.close()
    assert end_offset(broker) == before      # the handler did not run


def test_key_hooks_go_first_and_the_first_acting_hook_decides(broker):
    order = []
    any_hook = broker.control(lambda r: order.append("any") or ErrorCode.REQUEST_TIMED_OUT)
    broker.control_key("Metadata", lambda r: order.append("key-observer"))
    broker.control_key("Metadata", lambda r: order.append("key-acting") or ErrorCode.NOT_CONTROLLER)
    s = connect(broker.bootstrap_servers)
    try:
        assert metadata(s, 1).topics[0].error_code == ErrorCode.NOT_CONTROLLER
        assert order == ["key-observer", "key-acting"] and any_hook.seen == 0
        assert metadata(s, 2).topics[0].error_code == ErrorCode.REQUEST_TIMED_OUT   # now the one for any key
        assert order[2:] == ["key-observer", "any"]
    finally:
        s.close()


def test_a_hook_may_remove_itself_and_add_another(broker):
    box: dict[str, Control] = {}
    later = []

    def once_observer(r):
        box["self"].remove()                  # kfake's DropControl: observe once, then let requests through
        box["next"] = broker.control_key("Metadata", lambda r: later.append(r.correlation_id))

    box["self"] = broker.control_key("Metadata", once_observer)
    s = connect(broker.bootstrap_servers)
    try:
        for corr in (1, 2, 3):
            assert metadata(s, corr).topics[0].error_code == 0
    finally:
        s.close()
    assert box["self"].seen == 1 and not box["self"].active
    assert later == [2, 3] and box["next"].active


def test_a_failing_hook_answers_unknown_server_error_and_is_reported(broker):
    def boom(r):
        raise RuntimeError("hook bug")

    bad = broker.control_key("Metadata", boom)
    junk = broker.control_key("Produce", lambda r: object())
    s = connect(broker.bootstrap_servers)
    try:
        assert metadata(s).topics[0].error_code == ErrorCode.UNKNOWN_SERVER_ERROR
        resp = request(s, PRODUCE, 9, produce_body(b"junk"), correlation_id=2)
        assert resp.responses[0].partition_responses[0].error_code == ErrorCode.UNKNOWN_SERVER_ERROR
        assert metadata(s, 3).topics[0].error_code == ErrorCode.UNKNOWN_SERVER_ERROR  # it did not act: still there
        bad.remove()
        assert metadata(s, 4).topics[0].error_code == 0        # the connection kept serving
    finally:
        s.close()
    assert [type(e) for e in bad.errors] == [RuntimeError] * 2 and [type(e) for e in junk.errors] == [TypeError]
    assert junk.active and bad.fired == junk.fired == 0


def test_hooks_are_asked_on_the_brokers_thread_and_installed_from_another(broker):
    threads = []
    c = broker.control_key("Metadata", lambda r: threads.append(threading.current_thread().name))
    s = connect(broker.bootstrap_servers)
    try:
        metadata(s)
    finally:
        s.close()
    assert threads == ["kafkapy-broker"] and c.seen == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown api name"):
        Control(lambda r: None, "Produc")
    with pytest.raises(ValueError, match="unknown api key"):
        Control(lambda r: None, 9999)
    with pytest.raises(TypeError):
        Control("not callable")
    with pytest.raises(ValueError):
        Delay(-1)


def test_subprocess_brokers_have_no_hooks():
    b = kafkapy.Broker(mode="subprocess")
    with pytest.raises(RuntimeError, match="in-process"):
        b.control(lambda r: None)
    with pytest.raises(RuntimeError, match="in-process"):
        b.control_key("Produce", lambda r: None)


def test_hooks_in_the_callers_event_loop():
    async def run():
        async with kafkapy.Broker() as b:
            await b.acreate_topic("t", 1)
            c = b.control_key("Metadata", lambda r: ErrorCode.NOT_LEADER_OR_FOLLOWER)
            reader, writer = await asyncio.open_connection(*b.bound)
            try:
                writer.write(protocol.encode_request(METADATA, 9, 5, "t", MQ.MetadataRequest(
                    topics=[MQ.MetadataRequestTopic(name="t")], allow_auto_topic_creation=False)))
                size = int.from_bytes(await asyncio.wait_for(reader.readexactly(4), 5), "big")
                corr, resp = protocol.decode_response(METADATA, 9, await asyncio.wait_for(reader.readexactly(size), 5))
            finally:
                writer.close()
            assert (corr, resp.topics[0].error_code) == (5, ErrorCode.NOT_LEADER_OR_FOLLOWER) and c.fired == 1
    asyncio.run(asyncio.wait_for(run(), 30))


def test_no_hook_no_controls_object(broker):
    c = broker.control(lambda r: None)
    assert broker.call(lambda core: core.controls) is not None
    c.remove()
    c.remove()                                  # twice: a no-op
    assert broker.call(lambda core: core.controls) is None




def test_error_response_takes_any_code_by_number_or_name():
    from kafkapy.error_responses import error_code_of, error_response

    body = MQ.MetadataRequest(topics=[MQ.MetadataRequestTopic(name="a")], allow_auto_topic_creation=False)
    for code in (6, ErrorCode.NOT_LEADER_OR_FOLLOWER, "NOT_LEADER_OR_FOLLOWER", "not_leader_or_follower"):
        assert error_response(METADATA, 9, body, code).topics[0].error_code == 6
    assert error_code_of(-1) == -1
    for bad in ("NO_SUCH_ERROR", 1 << 20, True, 1.5):
        with pytest.raises(ValueError):
            error_code_of(bad)


def test_a_hook_may_keep_itself_from_inside(broker):
    def sticky(r):
        box.keep = r.correlation_id < 2        # kfake's KeepControl, decided per request
        return ErrorCode.NOT_CONTROLLER

    box = broker.control_key("Metadata", sticky)
    s = connect(broker.bootstrap_servers)
    try:
        assert [metadata(s, corr).topics[0].error_code for corr in (1, 2, 3)] == [ErrorCode.NOT_CONTROLLER] * 2 + [0]
    finally:
        s.close()
    assert box.fired == 2 and not box.active
