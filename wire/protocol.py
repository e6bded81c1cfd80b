"""Framing and the api registry: the sans-io entry points the broker, tools and tests use.

A frame on the wire is a 4-byte big-endian size followed by that many bytes: a request header
(v0/v1/v2) and body, or a response header (v0/v1) and body. Header versions follow from the api's
flexible versions; ApiVersions' response header is always v0 (so a client that does not yet know
the broker's versions can read it).
"""

from __future__ import annotations

import importlib
import struct
from types import ModuleType
from typing import NamedTuple

from wire.errors import DecodeError
from wire.messages import APIS, DATA, HEADERS
from wire.primitives import DECODE_FAILURES, as_decode_error

_SIZE = struct.Struct(">i")
_KEY_VERSION = struct.Struct(">hh")
API_VERSIONS_KEY = 18
CONTROLLED_SHUTDOWN_KEY = 7


class UnknownApiKey(DecodeError):
    """The request names an api key this codec does not know."""


class UnsupportedVersion(DecodeError):
    """The request's version is outside the schema's valid versions."""


_modules: dict[str, ModuleType] = {}


def module(name: str) -> ModuleType:
    """A generated message module, imported on first use."""
    m = _modules.get(name)
    if m is None:
        m = _modules[name] = importlib.import_module(f"wire.messages.{name}")
    return m


class Api(NamedTuple):
    key: int
    name: str
    min_version: int
    max_version: int
    flexible_from: int | None
    request_module: str
    response_module: str

    def flexible(self, version: int) -> bool:
        return self.flexible_from is not None and version >= self.flexible_from

    @property
    def request(self) -> ModuleType:
        return module(self.request_module)

    @property
    def response(self) -> ModuleType:
        return module(self.response_module)


API: dict[int, Api] = {k: Api(k, *v) for k, v in APIS.items()}
API_BY_NAME: dict[str, Api] = {a.name: a for a in API.values()}


def request_header_version(api_key: int, version: int) -> int:
    api = API[api_key]
    if api.flexible(version):
        return 2
    if api_key == CONTROLLED_SHUTDOWN_KEY and version == 0:
        return 0
    return 1


def response_header_version(api_key: int, version: int) -> int:
    if api_key == API_VERSIONS_KEY:
        return 0
    return 1 if API[api_key].flexible(version) else 0


def header_module(name: str) -> ModuleType:
    return module(HEADERS[name])


def data_module(name: str) -> ModuleType:
    """Generated module of an internal/embedded data schema (e.g. 'OffsetCommitValue')."""
    return module(DATA[name])


# ---------------------------------------------------------------- generic encode/decode

def decode(mod: ModuleType, version: int, buf, pos: int = 0):
    """Decode ``mod``'s top-level message at ``version``: (message, end position). Raises DecodeError only."""
    fn = mod.DECODERS.get(version)
    if fn is None:
        raise UnsupportedVersion(f"{mod.MESSAGE.__name__} has no version {version}")
    try:
        return fn(buf, pos)
    except DecodeError as e:
        if e.field is None:
            raise as_decode_error(e) from None
        raise
    except DECODE_FAILURES as e:
        raise as_decode_error(e) from None


def encode_into(mod: ModuleType, version: int, msg, out: list) -> None:
    mod.ENCODERS[version](msg, out.append)


def encode(mod: ModuleType, version: int, msg) -> bytes:
    out: list = []
    mod.ENCODERS[version](msg, out.append)
    return b"".join(out)


# ---------------------------------------------------------------- requests

class RequestFrame(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    header: object      # the RequestHeader message
    body: object        # the request message
    header_version: int


def peek_key_version(frame) -> tuple[int, int]:
    """api key and version of a request frame (size prefix removed), before anything else is parsed."""
    if len(frame) < 4:
        raise DecodeError("request shorter than api key and version", "RequestHeader")
    return _KEY_VERSION.unpack_from(frame, 0)


def decode_request_header(frame) -> tuple[object, int, int]:
    """(RequestHeader, header version, body offset). Raises UnknownApiKey / UnsupportedVersion / DecodeError."""
    key, version = peek_key_version(frame)
    api = API.get(key)
    if api is None:
        raise UnknownApiKey(f"unknown api key {key}", "RequestHeader.request_api_key")
    if not api.min_version <= version <= api.max_version:
        raise UnsupportedVersion(f"{api.name} v{version} is not a known version "
                                 f"({api.min_version}-{api.max_version})", "RequestHeader.request_api_version")
    hv = request_header_version(key, version)
    header, pos = decode(header_module("RequestHeader"), hv, frame)
    return header, hv, pos


def decode_request(frame) -> RequestFrame:
    """Decode a whole request frame (without its size prefix)."""
    header, hv, pos = decode_request_header(frame)
    api = API[header.request_api_key]
    body, end = decode(api.request, header.request_api_version, frame, pos)
    return RequestFrame(header.request_api_key, header.request_api_version, header.correlation_id,
                        header.client_id, header, body, hv)


def encode_request(api_key: int, version: int, correlation_id: int, client_id: str | None, body) -> bytes:
    """A size-prefixed request frame (the client side; used by tools and tests)."""
    hv = request_header_version(api_key, version)
    hmod = header_module("RequestHeader")
    out: list = [b""]
    hmod.ENCODERS[hv](hmod.MESSAGE(api_key, version, correlation_id, client_id), out.append)
    API[api_key].request.ENCODERS[version](body, out.append)
    payload = b"".join(out)
    return _SIZE.pack(len(payload)) + payload


# ---------------------------------------------------------------- responses

_RESPONSE_HEADER_V0 = struct.Struct(">ii")   # size, correlation id


def encode_response(api_key: int, version: int, correlation_id: int, body) -> list:
    """A size-prefixed response frame as a list of chunks (for transport.writelines: no big copies)."""
    out: list = [b"", b""]
    w = out.append
    API[api_key].response.ENCODERS[version](body, w)
    size = sum(map(len, out)) + 4
    if response_header_version(api_key, version) == 1:
        out[1] = b"\x00"   # empty tagged-field section of ResponseHeader v1
        size += 1
    out[0] = _RESPONSE_HEADER_V0.pack(size, correlation_id)
    return out


def decode_response(api_key: int, version: int, frame):
    """(correlation id, response message) from a response frame without its size prefix."""
    hv = response_header_version(api_key, version)
    header, pos = decode(header_module("ResponseHeader"), hv, frame)
    body, _ = decode(API[api_key].response, version, frame, pos)
    return header.correlation_id, body


def frame_size(prefix) -> int:
    return _SIZE.unpack_from(prefix, 0)[0]
