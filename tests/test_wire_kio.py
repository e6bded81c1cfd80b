"""Cross-check of the generated codec against kio, an independent implementation of the protocol.

For every (api key, version) that both kio and our codec know, hypothesis draws a request and a response
(walking our ``FIELDS``, with value ranges kio can represent), and:

(a) our bytes -> kio: the message is framed with ``protocol.encode_request`` / ``encode_response``; kio reads
    the header (with the header version kio itself picks for the api/version) and then the body, and every
    field kio decoded is compared with what we encoded;
(b) kio -> our bytes: kio writes that decoded header and body again, ``protocol.decode_request`` /
    ``decode_response`` read the frame, and the result must equal the original; kio's body bytes must also
    equal ours byte for byte.

The request/response headers and the embedded data schemas kio models (consumer protocol, raft control
records, ...) get the same treatment on their own.

kio's representation differs from ours in a few ways that are not bugs; ``_from_kio`` maps them back:
- ``*_ms`` int fields that kio types as ``timedelta_i32`` / ``timedelta_i64`` are ``timedelta`` objects named
  without the ``_ms`` suffix; ``datetime_i64`` ones are aware ``datetime`` objects (and ``None`` for -1 when
  kio marks them nullable, e.g. ProduceResponse's LogAppendTimeMs);
- error codes are ``ErrorCode`` members, so only known codes can be drawn for them;
- uuid fields are ``UUID | None`` with ``None`` for the all-zero uuid;
- arrays are tuples, strings/ints are newtype subclasses (TopicName, BrokerId, i32, ...), records are bytes;
- a field named ``id`` is ``id_``; fields Kafka renamed after our schema snapshot are in ``RENAMED``;
- kio 0.6.5 raises ``KeyError('Unknown tagged field tag: N')`` on a tagged field it does not know, where
  Kafka's rule is to skip it, so no unknown tagged fields are drawn here (``test_wire_codec`` covers ours);
- kio converts timedeltas and datetimes to milliseconds through floats, so drawn ``timedelta_i64`` values stay
  within +-2**47 ms and datetimes within year 1970..9999.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.index import load_entity_schema
from kio.schema.errors import ErrorCode
from kio.schema.index import api_key_map, schema_name_map
from kio.serial import entity_reader, entity_writer
from kio.serial._introspect import classify_field, is_optional
from kio.static.constants import EntityType

from wire import protocol
from wire.messages import DATA
from wire.primitives import Message as _Message

# ---------------------------------------------------------------- what is (not) compared

# Apis (or single api/version/direction) that cannot be compared, with the reason. Keys: api key, or
# (api key, version, "request"|"response").
NOT_COMPARABLE: dict[object, str] = {
    4: "LeaderAndIsr: ZooKeeper-era inter-broker api, removed in Kafka 4.0; kio has no schema",
    5: "StopReplica: ZooKeeper-era inter-broker api, removed in Kafka 4.0; kio has no schema",
    6: "UpdateMetadata: ZooKeeper-era inter-broker api, removed in Kafka 4.0; kio has no schema",
    7: "ControlledShutdown: ZooKeeper-era inter-broker api, removed in Kafka 4.0; kio has no schema",
    76: "ShareGroupHeartbeat: ours is the unstable pre-release v0, kio only has v1+ (no common version)",
    77: "ShareGroupDescribe: ours is the unstable pre-release v0, kio only has v1+ (no common version)",
    78: "ShareFetch: ours is the unstable pre-release v0, kio only has v1+ (no common version)",
    79: "ShareAcknowledge: ours is the unstable pre-release v0, kio only has v1+ (no common version)",
    (87, 0, "response"): "ReadShareGroupStateSummary v0 was unstable: kio's (Kafka 4.1) v0 response has a "
                         "LeaderEpoch field our schema snapshot's v0 lacks",
}

# (our module, our attribute) -> kio attribute, for fields Kafka renamed after our schema snapshot
# (the wire format is the same).
RENAMED = {
    ("vote_request", "candidate_epoch"): "replica_epoch",
    ("vote_request", "candidate_id"): "replica_id",
    ("vote_request", "candidate_directory_id"): "replica_directory_id",
    ("list_client_metrics_resources_response", "client_metrics_resources"): "config_resources",
    ("list_client_metrics_resources_response", "name"): "resource_name",
}

# kio's api names differ from ours where Kafka renamed the api
KIO_NAME = dict(api_key_map)

# our header/data module -> kio schema name
KIO_ENTITY = {
    "request_header": ("request_header", EntityType.header),
    "response_header": ("response_header", EntityType.header),
    **{m: (m, EntityType.data) for m in DATA.values() if m in schema_name_map},
}


def _api_cases():
    out = []
    for key, api in sorted(protocol.API.items()):
        if key in NOT_COMPARABLE or key not in KIO_NAME:
            continue
        for v in sorted(schema_name_map[KIO_NAME[key]]):
            if api.min_version <= v <= api.max_version:
                out.append(pytest.param(key, v, id=f"{api.name}-v{v}"))
    return out


def _entity_cases():
    out = []
    for mod_name, (kname, _etype) in sorted(KIO_ENTITY.items()):
        mod = protocol.module(mod_name)
        for v in sorted(schema_name_map[kname]):
            if v in mod.DECODERS:
                out.append(pytest.param(mod_name, v, id=f"{mod_name}-v{v}"))
    return out


API_CASES = _api_cases()
ENTITY_CASES = _entity_cases()


def test_coverage_is_broad_and_exclusions_stay_short():
    assert len(NOT_COMPARABLE) <= 10
    compared = {p.values[0] for p in API_CASES}
    # every api we have is compared in at least one version, unless listed with a reason
    for key in protocol.API:
        assert key in compared or key in NOT_COMPARABLE, f"api {key} is neither compared nor listed"
    assert len(API_CASES) > 250
    # headers and the embedded data schemas kio knows are compared too
    assert {p.values[0] for p in ENTITY_CASES} >= {"request_header", "response_header",
                                                    "consumer_protocol_assignment",
                                                    "consumer_protocol_subscription", "leader_change_message"}


# ---------------------------------------------------------------- field mapping

_TIME_TYPES = ("timedelta_i32", "timedelta_i64", "datetime_i64")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MS = datetime.timedelta(milliseconds=1)
_US = datetime.timedelta(microseconds=1)
_ZERO_UUID = uuid.UUID(int=0)
_ERROR_CODES = sorted(int(e) for e in ErrorCode)
_DATETIME_MAX_MS = 253402300799999     # 9999-12-31T23:59:59.999Z
INT_RANGES = {"int8": (-128, 127), "int16": (-(1 << 15), (1 << 15) - 1), "uint16": (0, (1 << 16) - 1),
              "int32": (-(1 << 31), (1 << 31) - 1), "uint32": (0, (1 << 32) - 1),
              "int64": (-(1 << 63), (1 << 63) - 1)}

# a few examples per api/version keep the file quick; KIO_CROSSCHECK_EXAMPLES=200 for a deeper run
EXAMPLES = int(os.environ.get("KIO_CROSSCHECK_EXAMPLES", "3"))

_field_maps: dict = {}


def _mod_name(mod) -> str:
    return mod.__name__.rsplit(".", 1)[1]


def _field_map(mod, cls, kcls, version):
    """[(our FIELDS spec, kio dataclass Field)] for the fields of ``cls`` present at ``version``.

    Fails when a field exists on one side only: that is schema drift, and must be listed above.
    """
    key = (cls, kcls, version)
    fm = _field_maps.get(key)
    if fm is not None:
        return fm
    kfields = {f.name: f for f in dataclasses.fields(kcls)}
    fm = []
    for spec in cls.FIELDS:
        if not spec[3] <= version <= spec[4]:
            continue
        attr = spec[0]
        name = RENAMED.get((_mod_name(mod), attr), attr)
        if name not in kfields and name + "_" in kfields:
            name += "_"      # kio avoids shadowing builtins (id -> id_)
        if name not in kfields and attr.endswith("_ms") and kfields.get(attr[:-3]) is not None \
                and kfields[attr[:-3]].metadata.get("kafka_type") in _TIME_TYPES:
            name = attr[:-3]
        assert name in kfields, f"{cls.__name__}.{attr} v{version}: no kio field (kio has {sorted(kfields)})"
        fm.append((spec, kfields.pop(name)))
    assert not kfields, f"{cls.__name__} v{version}: kio has fields we lack: {sorted(kfields)}"
    _field_maps[key] = fm
    return fm


def _kio_struct(kfield):
    return classify_field(kfield).type_


# ---------------------------------------------------------------- drawing messages

def _draw_scalar(draw, elem, ktype, kio_nullable):
    if ktype == "error_code":
        return draw(st.sampled_from(_ERROR_CODES))
    if ktype == "timedelta_i64":
        return draw(st.integers(-(1 << 47), 1 << 47))
    if ktype == "datetime_i64":
        if kio_nullable and draw(st.integers(0, 3)) == 0:
            return -1
        return draw(st.integers(0, _DATETIME_MAX_MS))
    if elem in INT_RANGES:
        return draw(st.integers(*INT_RANGES[elem]))
    if elem == "bool":
        return draw(st.booleans())
    if elem == "float64":
        return draw(st.floats(allow_nan=False, allow_infinity=False))
    if elem == "string":
        return draw(st.text(max_size=12))
    if elem == "bytes":
        return draw(st.binary(max_size=12))
    if elem == "records":
        return draw(st.binary(max_size=40))
    if elem == "uuid":
        if draw(st.integers(0, 4)) == 0:
            return _ZERO_UUID
        return uuid.UUID(int=draw(st.integers(1, (1 << 128) - 1)))
    raise AssertionError(elem)


def _draw_value(draw, mod, spec, kfield, version, flexible, depth):
    struct_name = spec[10]
    if struct_name is not None:
        return _draw_message(draw, mod, getattr(mod, struct_name), _kio_struct(kfield), version, flexible, depth + 1)
    typ = spec[2]
    return _draw_scalar(draw, typ[2:] if typ.startswith("[]") else typ, kfield.metadata.get("kafka_type"),
                        is_optional(kfield))


def _draw_message(draw, mod, cls, kcls, version, flexible, depth=0):
    kwargs = {}
    for spec, kfield in _field_map(mod, cls, kcls, version):
        attr, nlo, nhi = spec[0], spec[5], spec[6]
        if nlo <= version <= nhi and draw(st.integers(0, 4)) == 0:
            kwargs[attr] = None
        elif spec[2].startswith("[]"):
            n = draw(st.integers(0, 3 if depth < 2 else 1))
            kwargs[attr] = [_draw_value(draw, mod, spec, kfield, version, flexible, depth) for _ in range(n)]
        else:
            kwargs[attr] = _draw_value(draw, mod, spec, kfield, version, flexible, depth)
    return cls(**kwargs)


def _flexible(mod, version):
    return mod.FLEXIBLE_FROM is not None and version >= mod.FLEXIBLE_FROM


def _messages(mod, kcls, version):
    return st.composite(lambda draw: _draw_message(draw, mod, mod.MESSAGE, kcls, version,
                                                   _flexible(mod, version)))()


# ---------------------------------------------------------------- kio -> our representation

def _scalar_from_kio(value, elem, ktype, ours_nullable):
    if value is None:
        if ktype == "uuid" and not ours_nullable:
            return _ZERO_UUID          # kio reads the all-zero uuid as None
        if ktype == "datetime_i64" and not ours_nullable:
            return -1                  # kio's nullable datetime: -1 on the wire
        return None
    if ktype in ("timedelta_i32", "timedelta_i64"):
        ms, rest = divmod(value, _MS)
        assert not rest, value
        return ms
    if ktype == "datetime_i64":
        # kio's native reader goes through float seconds: 19806826916863 ms comes back as ...56.862999 s
        us = (value - _EPOCH) // _US
        assert abs(us - round(us, -3)) < 100, value
        return (us + 500) // 1000
    if elem in INT_RANGES:
        assert isinstance(value, int), (elem, value)
        return int(value)
    if elem == "bool":
        assert type(value) is bool, value
        return value
    if elem == "float64":
        return float(value)
    if elem == "string":
        assert isinstance(value, str), value
        return str(value)
    if elem in ("bytes", "records"):
        assert isinstance(value, bytes | bytearray | memoryview), value
        return bytes(value)
    if elem == "uuid":
        assert isinstance(value, uuid.UUID), value
        return value
    raise AssertionError(elem)


def _value_from_kio(value, mod, spec, kfield, version, in_array):
    if spec[10] is not None:
        return None if value is None else _from_kio(value, mod, getattr(mod, spec[10]), version)
    typ = spec[2]
    nullable = spec[5] <= version <= spec[6] and not in_array
    return _scalar_from_kio(value, typ[2:] if typ.startswith("[]") else typ, kfield.metadata.get("kafka_type"),
                            nullable)


def _from_kio(kobj, mod, cls, version):
    """Our message class built from a kio entity (unknown tagged fields: None, kio has none)."""
    kwargs = {}
    for spec, kfield in _field_map(mod, cls, type(kobj), version):
        attr = spec[0]
        value = getattr(kobj, kfield.name)
        if not spec[2].startswith("[]"):
            kwargs[attr] = _value_from_kio(value, mod, spec, kfield, version, False)
        elif value is None:
            kwargs[attr] = None
        else:
            assert isinstance(value, tuple), (cls.__name__, attr, type(value))
            kwargs[attr] = [_value_from_kio(x, mod, spec, kfield, version, True) for x in value]
    return cls(**kwargs)


# ---------------------------------------------------------------- field-by-field comparison

def _diff(a, b, path="") -> list[str]:
    """Differences between two of our messages, ignoring unknown tagged fields."""
    if isinstance(a, _Message):
        if type(a) is not type(b):
            return [f"{path}: {type(a).__name__} != {type(b).__name__}"]
        out = []
        for s in a.__slots__:
            if s != "unknown_tagged_fields":
                out += _diff(getattr(a, s), getattr(b, s), f"{path}.{s}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} elements != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    if isinstance(a, memoryview):
        a = bytes(a)
    if isinstance(b, memoryview):
        b = bytes(b)
    if a != b or type(a) is not type(b):
        return [f"{path}: {a!r} != {b!r}"]
    return []


def _assert_same(expected, actual, what):
    diffs = _diff(expected, actual)
    assert not diffs, f"{what}:\n  " + "\n  ".join(diffs[:20])


def _kio_read(kcls, buf, pos=0):
    obj, size = entity_reader(kcls)(buf, pos)
    return obj, pos + size


def _kio_write(kcls, obj) -> bytes:
    out = io.BytesIO()
    entity_writer(kcls)(out, obj)
    return out.getvalue()


# ---------------------------------------------------------------- the tests

@pytest.mark.parametrize(("key", "version"), API_CASES)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_api_against_kio(key, version, data):
    api = protocol.API[key]
    kname = KIO_NAME[key]
    for side in ("request", "response"):
        if (key, version, side) in NOT_COMPARABLE:
            continue
        mod = getattr(api, side)
        etype = EntityType.request if side == "request" else EntityType.response
        kcls = load_entity_schema(kname, version, etype)
        msg = data.draw(_messages(mod, kcls, version), label=side)
        corr = data.draw(st.integers(*INT_RANGES["int32"]), label="correlation id")
        khdr = kcls.__header_schema__
        what = f"{api.name}{side.capitalize()} v{version}"

        # (a) our frame -> kio
        if side == "request":
            client_id = data.draw(st.none() | st.text(max_size=8), label="client id")
            frame = protocol.encode_request(key, version, corr, client_id, msg)[4:]
        else:
            frame = b"".join(protocol.encode_response(key, version, corr, msg))[4:]
        khead, pos = _kio_read(khdr, frame)
        assert khead.correlation_id == corr
        if side == "request":
            assert (khead.request_api_key, khead.request_api_version, khead.client_id) == (key, version, client_id)
            assert protocol.request_header_version(key, version) == khdr.__version__
        else:
            assert protocol.response_header_version(key, version) == khdr.__version__
        kmsg, end = _kio_read(kcls, frame, pos)
        assert end == len(frame), f"{what}: kio read {end - pos} of {len(frame) - pos} body bytes"
        _assert_same(msg, _from_kio(kmsg, mod, mod.MESSAGE, version), f"{what}: ours -> kio")

        # (b) kio's bytes of what it decoded -> ours
        kbody = _kio_write(kcls, kmsg)
        kframe = _kio_write(khdr, khead) + kbody
        if side == "request":
            req = protocol.decode_request(kframe)
            assert (req.api_key, req.api_version, req.correlation_id, req.client_id) == (key, version, corr,
                                                                                         client_id)
            back = req.body
        else:
            back_corr, back = protocol.decode_response(key, version, kframe)
            assert back_corr == corr
        _assert_same(msg, back, f"{what}: kio -> ours")
        assert kbody == protocol.encode(mod, version, msg), f"{what}: kio's bytes differ from ours"


@pytest.mark.parametrize(("name", "version"), ENTITY_CASES)
@settings(max_examples=EXAMPLES + 2, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_header_and_data_schemas_against_kio(name, version, data):
    mod = protocol.module(name)
    kname, etype = KIO_ENTITY[name]
    kcls = load_entity_schema(kname, version, etype)
    msg = data.draw(_messages(mod, kcls, version))
    raw = protocol.encode(mod, version, msg)
    kmsg, end = _kio_read(kcls, raw)
    assert end == len(raw)
    _assert_same(msg, _from_kio(kmsg, mod, mod.MESSAGE, version), f"{name} v{version}: ours -> kio")
    kraw = _kio_write(kcls, kmsg)
    back, end = protocol.decode(mod, version, kraw)
    assert end == len(kraw)
    _assert_same(msg, back, f"{name} v{version}: kio -> ours")
    assert kraw == raw, f"{name} v{version}: kio's bytes differ from ours"


def test_kio_still_rejects_unknown_tagged_fields():
    """Why no unknown tagged fields are drawn above; if kio learns to skip them, draw them here too."""
    mod = protocol.API[3].request
    kcls = load_entity_schema("metadata", 12, EntityType.request)
    raw = protocol.encode(mod, 12, mod.MESSAGE(topics=None, unknown_tagged_fields={5000: b"x"}))
    assert protocol.decode(mod, 12, raw)[0].unknown_tagged_fields == {5000: b"x"}
    with pytest.raises(KeyError, match="Unknown tagged field"):
        _kio_read(kcls, raw)
