"""The generated codec: round trips for every message and version, regeneration, malformed input (truncated,
mutated and random bytes for every api and version: only DecodeError, never another exception)."""

from __future__ import annotations

import importlib.util
import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wire import DecodeError
from wire import protocol
from wire.messages import APIS, DATA, HEADERS

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT.parent / "shared" / "kafka-message-schemas"

ALL_MODULES = sorted({m for a in APIS.values() for m in a[4:6]} | set(DATA.values()) | set(HEADERS.values()))

INT_RANGES = {"int8": (-128, 127), "int16": (-(1 << 15), (1 << 15) - 1), "uint16": (0, (1 << 16) - 1),
              "int32": (-(1 << 31), (1 << 31) - 1), "uint32": (0, (1 << 32) - 1),
              "int64": (-(1 << 63), (1 << 63) - 1)}


def _value(draw, mod, spec, version, flexible, depth):
    attr, _name, typ, lo, hi, nlo, nhi, tag, tlo, thi, struct_name, _flex = spec
    nullable = nlo <= version <= nhi
    is_array = typ.startswith("[]")
    elem = typ[2:] if is_array else typ
    if nullable and draw(st.integers(0, 4)) == 0:
        return None

    def one():
        if struct_name is not None:
            return _message(draw, mod, getattr(mod, struct_name), version, flexible, depth + 1)
        if elem in INT_RANGES:
            a, b = INT_RANGES[elem]
            return draw(st.integers(a, b))
        if elem == "bool":
            return draw(st.booleans())
        if elem == "float64":
            return draw(st.floats(allow_nan=False))
        if elem == "string":
            return draw(st.text(max_size=12))
        if elem == "bytes":
            return draw(st.binary(max_size=12))
        if elem == "records":
            return draw(st.binary(max_size=40))
        if elem == "uuid":
            return uuid.UUID(int=draw(st.integers(0, (1 << 128) - 1)))
        raise AssertionError(elem)

    if is_array:
        n = draw(st.integers(0, 3 if depth < 2 else 1))
        return [one() for _ in range(n)]
    return one()


def _message(draw, mod, cls, version, flexible, depth=0):
    kwargs = {}
    for spec in cls.FIELDS:
        if spec[3] <= version <= spec[4]:
            kwargs[spec[0]] = _value(draw, mod, spec, version, flexible, depth)
    if flexible and draw(st.integers(0, 5)) == 0:
        kwargs["unknown_tagged_fields"] = {draw(st.integers(5000, 5010)): draw(st.binary(max_size=5))}
    return cls(**kwargs)


def _cases():
    out = []
    for name in ALL_MODULES:
        mod = protocol.module(name)
        for v in sorted(mod.DECODERS):
            out.append(pytest.param(name, v, id=f"{name}-v{v}"))
    return out


@pytest.mark.parametrize(("name", "version"), _cases())
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_round_trip(name, version, data):
    mod = protocol.module(name)
    flexible = mod.FLEXIBLE_FROM is not None and version >= mod.FLEXIBLE_FROM
    msg = data.draw(st.builds(lambda: None).flatmap(
        lambda _: st.composite(lambda draw: _message(draw, mod, mod.MESSAGE, version, flexible))()))
    raw = protocol.encode(mod, version, msg)
    back, end = protocol.decode(mod, version, raw)
    assert end == len(raw)
    assert back == msg
    assert protocol.encode(mod, version, back) == raw
    # mutated copies (a few bytes changed, some bytes appended) decode or raise DecodeError, nothing else
    if raw:
        for _ in range(3):
            bad = bytearray(raw)
            for _ in range(data.draw(st.integers(1, 3), label="mutations")):
                bad[data.draw(st.integers(0, len(raw) - 1), label="at")] = data.draw(st.integers(0, 255), label="b")
            try:
                protocol.decode(mod, version, bytes(bad) + data.draw(st.binary(max_size=4), label="tail"))
            except DecodeError:
                pass
    try:   # and random bytes
        protocol.decode(mod, version, data.draw(st.binary(max_size=64), label="random"))
    except DecodeError:
        pass
    # every strict prefix is rejected with DecodeError (never another exception)
    for cut in range(len(raw) - 1, -1, -max(1, len(raw) // 16)):
        with pytest.raises(DecodeError):
            decoded, used = protocol.decode(mod, version, raw[:cut])
            # a prefix may decode when trailing fields are optional; then it must not claim more bytes
            assert used <= cut
            raise DecodeError("prefix decoded")


def test_every_api_key_is_registered():
    assert len(APIS) == 88
    assert set(APIS) == set(range(88))
    for key, (_name, lo, hi, _flex, _req, _resp) in APIS.items():
        api = protocol.API[key]
        assert api.request.VERSIONS == (lo, hi) == api.response.VERSIONS
        assert set(api.request.DECODERS) == set(range(lo, hi + 1)) == set(api.response.ENCODERS)


@pytest.mark.skipif(not SCHEMAS.is_dir(), reason="the Kafka schemas (../shared) are not present")
def test_regeneration_is_byte_identical():
    spec = importlib.util.spec_from_file_location("generate_wire", ROOT / "scripts" / "generate_wire.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    files = gen.generate(gen.read_sources(SCHEMAS, None))
    files["error_codes.py"] = gen.error_codes_module(SCHEMAS.parent / "kafka-error-codes.tsv")
    out = ROOT / "wire" / "messages"
    on_disk = {p.name for p in out.glob("*.py")}
    assert on_disk == set(files)
    for name, text in files.items():
        assert (out / name).read_text() == text, f"{name} differs from a fresh generation"


# ---------------------------------------------------------------- framing

def test_request_frame_round_trip_and_header_versions():
    produce = protocol.API[0].request.MESSAGE
    tpd = protocol.module("produce_request").TopicProduceData
    ppd = protocol.module("produce_request").PartitionProduceData
    body = produce(transactional_id=None, acks=-1, timeout_ms=30000,
                   topic_data=[tpd(name="t", partition_data=[ppd(index=0, records=b"abc")])])
    for version in (3, 8, 9, 11):
        frame = protocol.encode_request(0, version, 7, "me", body)
        assert struct.unpack(">i", frame[:4])[0] == len(frame) - 4
        req = protocol.decode_request(memoryview(frame)[4:])
        assert (req.api_key, req.api_version, req.correlation_id, req.client_id) == (0, version, 7, "me")
        assert req.header_version == (2 if version >= 9 else 1)
        assert bytes(req.body.topic_data[0].partition_data[0].records) == b"abc"


def test_api_versions_response_header_is_v0():
    resp = protocol.API[18].response.MESSAGE(error_code=0, api_keys=[])
    frame = b"".join(protocol.encode_response(18, 3, 42, resp))
    corr, back = protocol.decode_response(18, 3, frame[4:])
    assert corr == 42 and back.error_code == 0
    # v0 header: correlation id immediately followed by the body's int16 error code
    assert frame[4:8] == struct.pack(">i", 42) and frame[8:10] == b"\x00\x00"
    meta = protocol.API[3].response.MESSAGE()
    frame = b"".join(protocol.encode_response(3, 12, 5, meta))
    assert frame[8] == 0   # v1 header: empty tagged-field section
    assert protocol.decode_response(3, 12, frame[4:])[1] == meta


def test_unknown_key_and_version():
    with pytest.raises(protocol.UnknownApiKey):
        protocol.decode_request(struct.pack(">hhi", 999, 0, 1) + b"\x00\x00")
    with pytest.raises(protocol.UnsupportedVersion):
        protocol.decode_request(struct.pack(">hhi", 18, 99, 1) + b"\x00\x00")


# ---------------------------------------------------------------- malformed input

def test_malformed_inputs_raise_decode_error_naming_the_field():
    mod = protocol.module("metadata_request")
    # v1: int32 array length of 2^31-1 with nothing behind it: no loop, no allocation
    with pytest.raises(DecodeError) as e:
        protocol.decode(mod, 1, struct.pack(">i", 0x7FFFFFFF))
    assert "topics" in str(e.value)
    # negative array length other than -1 in a non-nullable array (v0)
    with pytest.raises(DecodeError):
        protocol.decode(mod, 0, struct.pack(">i", -5))
    # string length beyond the buffer
    with pytest.raises(DecodeError) as e:
        protocol.decode(mod, 1, struct.pack(">ih", 1, 300) + b"abc")
    assert "name" in str(e.value)
    # invalid UTF-8
    with pytest.raises(DecodeError) as e:
        protocol.decode(mod, 1, struct.pack(">ih", 1, 2) + b"\xff\xfe")
    assert "UTF-8" in str(e.value)
    # an unsigned varint longer than 5 bytes (flexible v9 topics array length)
    with pytest.raises(DecodeError) as e:
        protocol.decode(mod, 9, b"\xff\xff\xff\xff\xff\xff\x01")
    assert "varint" in str(e.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([(0, 9), (1, 12), (3, 12), (18, 3), (11, 9), (8, 9), (19, 7)]))
def test_random_bytes_only_raise_decode_error(raw, key_version):
    key, version = key_version
    for mod in (protocol.API[key].request, protocol.API[key].response):
        try:
            protocol.decode(mod, version, raw)
        except DecodeError:
            pass
