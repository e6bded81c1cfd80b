"""Run-time support for the generated message modules (hand-written, small, hot).

Generated code does the straight-line work with precompiled ``struct.Struct`` objects; the few
things that need a loop (varints, tagged-field sections) live here.
"""

from __future__ import annotations

import struct
import sys
import uuid

from wire.errors import DecodeError

I8 = struct.Struct(">b")
I16 = struct.Struct(">h")
U16 = struct.Struct(">H")
I32 = struct.Struct(">i")
U32 = struct.Struct(">I")
I64 = struct.Struct(">q")
F64 = struct.Struct(">d")

ZERO_UUID = uuid.UUID(int=0)


class _Default:
    """Marks a constructor argument that was not given (so None can mean null)."""

    __slots__ = ()

    def __repr__(self):
        return "DEFAULT"


DEFAULT = _Default()
_UUID_NEW = object.__new__
_SETATTR = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown

# single-byte unsigned varints, the common case for compact lengths and tag counts
UVARINT1 = tuple(bytes((i,)) for i in range(128))


new = object.__new__   # decoders build objects without __init__

# precompiled packers for arrays of fixed-width ints by length: packer("i", n)(*values)
_PACKERS = {ch: [struct.Struct(f">{n}{ch}").pack for n in range(33)] for ch in "bhHiIqd"}
# the same with the int32 element count in front (non-compact arrays): counted_packer("i", n)(n, *values)
_COUNTED = {ch: [struct.Struct(f">i{n}{ch}").pack for n in range(33)] for ch in "bhHiIqd"}


def packer(ch: str, n: int):
    return _PACKERS[ch][n] if n <= 32 else struct.Struct(f">{n}{ch}").pack


def counted_packer(ch: str, n: int):
    return _COUNTED[ch][n] if n <= 32 else struct.Struct(f">i{n}{ch}").pack


def uuid_from_bytes(b) -> uuid.UUID:
    """uuid.UUID from 16 bytes, without UUID.__init__'s argument checks (about 3x faster)."""
    u = _UUID_NEW(uuid.UUID)
    _SETATTR(u, "int", int.from_bytes(b, "big"))
    _SETATTR(u, "is_safe", _SAFE_UNKNOWN)
    return u


def read_uvarint(buf, pos: int) -> tuple[int, int]:
    """Unsigned varint (at most 5 bytes, 32 bits) at ``pos``: (value, new pos)."""
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 35:
            raise DecodeError("unsigned varint longer than 5 bytes")


def write_uvarint(n: int) -> bytes:
    if n < 128:
        return UVARINT1[n]
    if n < 0 or n > 0xFFFFFFFF:
        raise ValueError(f"unsigned varint out of range: {n}")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(buf, pos: int) -> tuple[int, int]:
    """Zig-zag signed varint (at most 5 bytes)."""
    n, pos = read_uvarint(buf, pos)
    return (n >> 1) ^ -(n & 1), pos


def read_varlong(buf, pos: int) -> tuple[int, int]:
    """Zig-zag signed varlong (at most 10 bytes)."""
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varlong longer than 10 bytes")


def write_varint(n: int) -> bytes:
    return write_uvarint(((n << 1) ^ (n >> 31)) & 0xFFFFFFFF)


def write_varlong(n: int) -> bytes:
    z = ((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def truncated(what: str, need: int, have: int):
    return DecodeError(f"needs {need} bytes, {max(have, 0)} left", what)


def check_count(n: int, buf, pos: int, what: str) -> None:
    """A forged array count must not make us loop or allocate beyond what the bytes can hold."""
    if n > len(buf) - pos:
        raise DecodeError(f"array length {n} exceeds the {len(buf) - pos} bytes left", what)


def read_unknown_tags(buf, pos: int, known: frozenset, what: str) -> tuple[dict, dict | None, int]:
    """A tagged-field section: returns ({known tag: memoryview/bytes of its data}, {unknown tag: bytes} or None, pos)."""
    count, pos = read_uvarint(buf, pos)
    check_count(count, buf, pos, what)
    found: dict = {}
    unknown = None
    last = -1
    for _ in range(count):
        tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        end = pos + size
        if end > len(buf):
            raise truncated(f"{what} tag {tag}", size, len(buf) - pos)
        if tag <= last:
            raise DecodeError(f"tagged fields out of order ({tag} after {last})", what)
        last = tag
        if tag in known:
            found[tag] = buf[pos:end]
        else:
            if unknown is None:
                unknown = {}
            unknown[tag] = bytes(buf[pos:end])
        pos = end
    return found, unknown, pos


def write_tags(w, tags: list) -> None:
    """Write a tagged-field section from [(tag, bytes)] (any order)."""
    if not tags:
        w(b"\x00")
        return
    tags.sort(key=lambda t: t[0])
    w(write_uvarint(len(tags)))
    for tag, data in tags:
        w(write_uvarint(tag))
        w(write_uvarint(len(data)))
        w(data)


class Message:
    """Base of every generated class: equality and repr over ``__slots__``."""

    __slots__ = ()

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __repr__(self):
        inner = ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__ if s != "unknown_tagged_fields")
        return f"{type(self).__name__}({inner})"

    def to_dict(self) -> dict:
        """Plain data (for traces and tests): nested messages become dicts, bytes stay bytes."""
        return {s: _plain(getattr(self, s)) for s in self.__slots__ if s != "unknown_tagged_fields"}


def _plain(v):
    if isinstance(v, Message):
        return v.to_dict()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, memoryview):
        return bytes(v)
    return v


_FIELD_AT_LINE: dict[str, dict[int, str]] = {}


def register_lines(filename: str, table: dict[int, str]) -> None:
    _FIELD_AT_LINE[filename] = table


def as_decode_error(exc: BaseException) -> DecodeError:
    """Turn an exception raised inside generated decode code into a DecodeError naming the field.

    The generated modules register a line -> field table, so naming the field costs nothing
    on the success path.
    """
    if isinstance(exc, DecodeError) and exc.field is not None:
        return exc
    field = None
    tb = exc.__traceback__
    while tb is not None:
        table = _FIELD_AT_LINE.get(tb.tb_frame.f_code.co_filename)
        if table is not None:
            field = table.get(tb.tb_lineno, field)
        tb = tb.tb_next
    if isinstance(exc, (IndexError, struct.error)):
        msg = "truncated: the buffer ends inside this field"
    elif isinstance(exc, UnicodeDecodeError):
        msg = f"invalid UTF-8 ({exc.reason})"
    elif isinstance(exc, DecodeError):
        msg = str(exc)
    else:
        msg = f"{type(exc).__name__}: {exc}"
    err = DecodeError(msg, field)
    err.__cause__ = exc
    return err


# TypeError is not here: it means a bug in the generated code or its caller, never malformed input
DECODE_FAILURES = (IndexError, struct.error, UnicodeDecodeError, ValueError, OverflowError, RecursionError)

__all__ = [n for n in dir(sys.modules[__name__]) if not n.startswith("_")]
