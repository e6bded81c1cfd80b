"""The connection protocol core with plain bytes: no socket, no event loop (kafkapy.connection's rules)."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkapy.connection import Close, ConnectionState, Dispatch, LegacySaslToken, Respond
from kafkapy.handlers import load_all
from wire import protocol
from wire.messages import api_versions_request as AVQ
from wire.messages import api_versions_response as AVR
from wire.messages import fetch_request as FQ
from wire.messages import metadata_request as MQ
from wire.messages import produce_request as PQ
from wire.messages.error_codes import ErrorCode

HANDLERS = load_all()
SASL_LISTENER = SimpleNamespace(name="SASL_PLAINTEXT", sasl=True)


def api_versions(error_code=0):
    return AVR.ApiVersionsResponse(error_code=int(error_code), throttle_time_ms=0, api_keys=[
        AVR.ApiVersion(api_key=h.api_key, min_version=h.min_version, max_version=h.max_version)
        for h in sorted(HANDLERS.values(), key=lambda h: h.api_key)])


def state(**kw) -> ConnectionState:
    kw.setdefault("handlers", HANDLERS)
    kw.setdefault("api_versions", api_versions)
    return ConnectionState("test-peer", **kw)


def metadata(version=12, corr=5, topics=("t",)) -> bytes:
    body = MQ.MetadataRequest(topics=[MQ.MetadataRequestTopic(name=n) for n in topics])
    return protocol.encode_request(3, version, corr, "client-1", body)


def raw(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def test_good_request_is_dispatched_to_its_handler():
    c = state()
    [d] = c.receive_data(metadata(corr=42))
    assert isinstance(d, Dispatch)
    assert (d.handler, d.api_key, d.api_version, d.correlation_id, d.client_id) == (HANDLERS[3], 3, 12, 42, "client-1")
    assert [t.name for t in d.body.topics] == ["t"] and d.max_wait_ms == 0
    assert c.requests == 1 and c.closed is None


def test_frames_split_and_joined_across_reads():
    c = state()
    data = metadata(corr=1) + metadata(corr=2)
    assert c.receive_data(data[:3]) == []
    assert c.receive_data(data[3:20]) == []
    actions = c.receive_data(data[20:])
    assert [a.correlation_id for a in actions] == [1, 2] and c.requests == 2


@pytest.mark.parametrize("size", [-1, -(1 << 31), 101, 1 << 30])
def test_negative_or_too_large_size_closes_before_reading_the_frame(size):
    c = state(max_request_size=100)
    [a] = c.receive_data(struct.pack(">i", size) + b"x" * 10)
    assert a == Close("invalid request size", f"request size {size} is invalid (socket.request.max.bytes=100)")
    assert c.requests == 0
    assert c.receive_data(metadata()) == []          # nothing more is taken


def test_size_at_the_limit_is_read():
    frame = metadata()
    c = state(max_request_size=len(frame) - 4)
    assert isinstance(c.receive_data(frame)[0], Dispatch)


def test_unknown_api_key_closes():
    [a] = state().receive_data(raw(struct.pack(">hhi", 999, 0, 1) + b"\x00\x00"))
    assert a.reason == "unknown api key" and "999" in a.message


def test_unknown_version_of_api_versions_gets_a_v0_answer_with_our_versions():
    c = state()
    [a] = c.receive_data(raw(struct.pack(">hhi", 18, 77, 1234) + b"\x00\x03abc" + b"garbage"))
    assert isinstance(a, Respond)
    corr, body = protocol.decode_response(18, 0, b"".join(a.frames)[4:])
    assert corr == 1234 and body.error_code == ErrorCode.UNSUPPORTED_VERSION
    assert [(k.api_key, k.min_version, k.max_version) for k in body.api_keys] == \
        [(h.api_key, h.min_version, h.max_version) for h in sorted(HANDLERS.values(), key=lambda h: h.api_key)]
    assert c.closed is None
    [d] = c.receive_data(protocol.encode_request(18, 3, 2, "c", AVQ.ApiVersionsRequest(
        client_software_name="x", client_software_version="1")))
    assert isinstance(d, Dispatch) and d.api_version == 3     # the retry at a version we have


def test_api_versions_too_short_for_a_correlation_id_is_answered_with_zero():
    [a] = state().receive_data(raw(struct.pack(">hh", 18, 99)))
    assert isinstance(a, Respond) and protocol.decode_response(18, 0, b"".join(a.frames)[4:])[0] == 0


def test_api_versions_below_the_handlers_range_is_answered_too():
    handlers = dict(HANDLERS)
    handlers[18] = SimpleNamespace(**{**vars_of(HANDLERS[18]), "min_version": 3})
    [a] = state(handlers=handlers).receive_data(protocol.encode_request(18, 1, 8, "c", AVQ.ApiVersionsRequest()))
    assert isinstance(a, Respond) and protocol.decode_response(18, 0, b"".join(a.frames)[4:])[1].error_code == 35


def vars_of(h):
    return {"api_key": h.api_key, "min_version": h.min_version, "max_version": h.max_version, "fn": h.fn,
            "max_wait": h.max_wait, "name": h.name}


def test_unknown_version_of_another_api_closes():
    [a] = state().receive_data(raw(struct.pack(">hhi", 3, 77, 1) + b"\x00\x00"))
    assert a == Close("unsupported version", "Metadata v77 is not a version this broker knows")


def test_version_or_api_without_a_handler_closes():
    missing = next(k for k in sorted(protocol.API) if k not in HANDLERS)
    api = protocol.API[missing]
    frame = protocol.encode_request(missing, api.max_version, 1, "c", api.request.MESSAGE())
    [a] = state().receive_data(frame)
    assert a.reason == "unsupported api" and "is not implemented by this broker" in a.message
    handlers = dict(HANDLERS)
    handlers[3] = SimpleNamespace(**{**vars_of(HANDLERS[3]), "max_version": 9})
    [a] = state(handlers=handlers).receive_data(metadata(version=10))
    assert a == Close("unsupported api", "Metadata v10 is not implemented by this broker")


@pytest.mark.parametrize("frame", [raw(b"\x00"), raw(struct.pack(">hhi", 3, 9, 1) + b"\x00\x09ab")],
                         ids=["shorter-than-key-and-version", "client-id-cut-short"])
def test_malformed_header_closes(frame):
    [a] = state().receive_data(frame)
    assert a.reason == "malformed request" and a.message.startswith("malformed request header")


def test_malformed_body_closes():
    frame = metadata(version=9)
    [a] = state().receive_data(raw(frame[4:-3]))
    assert a.reason == "malformed request" and a.message.startswith("malformed Metadata v9 request")


def test_sasl_listener_allows_only_the_handshake_before_authentication():
    c = state(listener=SASL_LISTENER)
    assert not c.authenticated
    [d] = c.receive_data(protocol.encode_request(18, 0, 1, "c", AVQ.ApiVersionsRequest()))
    assert isinstance(d, Dispatch)
    from wire.messages import sasl_handshake_request as HQ
    [d] = c.receive_data(protocol.encode_request(17, 1, 2, "c", HQ.SaslHandshakeRequest(mechanism="PLAIN")))
    assert isinstance(d, Dispatch) and d.api_key == 17
    [a] = c.receive_data(metadata())
    assert a == Close("request before SASL authentication",
                      "Metadata request before SASL authentication on listener SASL_PLAINTEXT")


def test_expired_session_closes_on_any_request_but_reauthentication():
    now = [100.0]
    c = state(listener=SASL_LISTENER, clock=lambda: now[0])
    c.authenticated, c.session_expires = True, 110.0
    assert isinstance(c.receive_data(metadata())[0], Dispatch)
    now[0] = 111.0
    [d] = c.receive_data(protocol.encode_request(18, 0, 1, "c", AVQ.ApiVersionsRequest()))
    assert isinstance(d, Dispatch)                  # re-authentication may still begin
    [a] = c.receive_data(metadata())
    assert a.reason == "SASL session expired" and "connections.max.reauth.ms" in a.message


def test_legacy_sasl_frames_are_raw_tokens_until_authenticated():
    c = state(listener=SASL_LISTENER)
    c.sasl_legacy = True
    c.sasl = SimpleNamespace(complete=False)
    [t] = c.receive_data(raw(b"\x00alice\x00secret"))
    assert t == LegacySaslToken(b"\x00alice\x00secret") and c.requests == 1
    assert c.legacy_sasl_answer(b"chal").frames == [struct.pack(">i", 4), b"chal"] and c.sasl_legacy
    c.sasl.complete = True
    assert b"".join(c.legacy_sasl_answer(b"").frames) == b"\x00\x00\x00\x00" and not c.sasl_legacy
    c.authenticated = True
    assert isinstance(c.receive_data(metadata())[0], Dispatch)
    f = state(listener=SASL_LISTENER)
    f.sasl_mechanism = "PLAIN"
    assert f.legacy_sasl_failed(ValueError("bad password")) == Close(
        "SASL authentication failed", "SASL PLAIN authentication failed on listener SASL_PLAINTEXT: bad password")


def test_fetch_declares_how_long_it_may_wait():
    body = FQ.FetchRequest(max_wait_ms=4321, topics=[])
    [d] = state().receive_data(protocol.encode_request(1, 12, 1, "c", body))
    assert d.max_wait_ms == 4321


def produce(acks: int) -> bytes:
    body = PQ.ProduceRequest(acks=acks, timeout_ms=1000, topic_data=[
        PQ.TopicProduceData(name="p", partition_data=[PQ.PartitionProduceData(index=1, records=None)])])
    return protocol.encode_request(0, 9, 77, "c", body)


def test_a_failed_handler_is_answered_with_unknown_server_error_and_the_connection_goes_on():
    c = state()
    [d] = c.receive_data(produce(acks=-1))
    a = c.handler_failed(d)
    corr, body = protocol.decode_response(0, 9, b"".join(a.frames)[4:])
    assert corr == 77 and a.body is not None
    [t] = body.responses
    assert (t.name, [(p.index, p.error_code) for p in t.partition_responses]) == ("p", [(1, -1)])
    assert c.after_response() is None and c.closed is None
    assert isinstance(c.receive_data(metadata())[0], Dispatch)


def test_a_failed_request_without_a_response_closes():
    c = state()
    [d] = c.receive_data(produce(acks=0))
    a = c.handler_failed(d)
    assert isinstance(a, Close) and a.reason == "handler failed on a request without a response"


def test_a_handler_can_ask_to_close_after_its_response():
    c = state()
    c.receive_data(metadata())
    c.close_reason = "SASL authentication failed"
    assert c.after_response() == Close("SASL authentication failed")
    assert c.receive_data(metadata()) == []
    with pytest.raises(RuntimeError):
        c.receive_frame(metadata()[4:])


ACTIONS = (Dispatch, Respond, Close, LegacySaslToken)


@settings(max_examples=300, deadline=None)
@given(data=st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([metadata(), produce(-1), raw(b"\x00\x12")])),
                     max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_any_bytes_give_actions_and_chunking_does_not_matter(data, cuts):
    stream = b"".join(data)
    whole = state(max_request_size=1000).receive_data(stream)
    c = state(max_request_size=1000)
    chunked = []
    last = 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        chunked += c.receive_data(stream[last:cut])
        last = max(last, cut)
    assert all(isinstance(a, ACTIONS) for a in whole)
    assert [type(a) for a in chunked] == [type(a) for a in whole]
    assert all(not isinstance(a, Close) for a in whole[:-1])      # nothing after a Close
