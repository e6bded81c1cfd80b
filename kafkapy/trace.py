"""Protocol trace: one JSON line per request and per response, decoded with the generated codec.

The server calls ``broker.tracer.request(ctx, body)`` before a handler runs and
``broker.tracer.response(ctx, response)`` before the response is encoded, only when ``broker.tracer``
is not None: with tracing off the request path pays one attribute test and nothing else.

A line looks like::

    {"ts": "2025-05-01T10:00:00.123456Z", "direction": "request", "api": "Produce", "api_key": 0,
     "version": 9, "correlation_id": 4, "client_id": "rdkafka", "peer": "127.0.0.1:50412",
     "body": {"transactional_id": null, "acks": -1, "timeout_ms": 30000, "topic_data": [...]}}

``body`` holds the fields the message has at that version (schema order, Python names of the
generated classes, as ``Message.to_dict()`` names them): bytes fields as base64, UUIDs as strings,
and every ``records`` field summarised batch by batch (offsets, count, size, compression, producer,
flags); with ``records=True`` each batch also lists its records, keys and values as text when they
are valid UTF-8 and as ``{"base64": "..."}`` otherwise. Responses carry ``elapsed_ms`` (handler time,
including any long-poll wait).
"""

from __future__ import annotations

import base64
import datetime
import json
import sys
import threading
import time
import uuid
from typing import Callable, Iterable

from wire import protocol
from wire import records as wire_records
from wire.primitives import Message

COMPRESSION_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

_PLAIN_TYPES = frozenset(("int8", "int16", "uint16", "int32", "int64", "bool", "string", "float64"))


def _b64(b) -> str:
    return base64.b64encode(bytes(b)).decode("ascii")


def _text_or_b64(b):
    """Record keys/values/header values: text when valid UTF-8, else ``{"base64": ...}``; None stays None."""
    if b is None:
        return None
    raw = bytes(b)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": _b64(raw)}


def _scalar(kind: str, v):
    if v is None:
        return None
    if kind == "bytes":
        return _b64(v)
    if kind == "uuid":
        return str(v)
    if kind == "float64" and v != v:   # NaN is not JSON
        return "NaN"
    if isinstance(v, memoryview):
        return _b64(v)
    return v


def _record_json(r) -> dict:
    return {"offset": r.offset, "timestamp": r.timestamp, "key": _text_or_b64(r.key),
            "value": _text_or_b64(r.value),
            "headers": [{"key": k, "value": _text_or_b64(hv)} for k, hv in r.headers]}


def summarize_records(buf, decode_records: bool = False) -> dict | None:
    """A ``records`` field (a run of record batches, or an old message set) as plain data."""
    if buf is None:
        return None
    view = memoryview(buf)
    total = len(view)
    out: dict = {"size": total, "batches": []}
    if total == 0:
        return {"count": 0, **out}
    batches = out["batches"]
    count = 0
    pos = 0
    try:
        if total >= 17 and view[16] < 2:     # magic 0/1: an old message set (Produce v0-v2 style clients)
            recs = wire_records.decode_legacy_message_set(view)
            count = len(recs)
            entry = {"magic": int(view[16]), "count": count,
                     "base_offset": recs[0].offset if recs else None,
                     "last_offset": recs[-1].offset if recs else None}
            if decode_records:
                entry["records"] = [_record_json(r) for r in recs]
            batches.append(entry)
            pos = total
        else:
            for pos, h in wire_records.iter_batch_headers(view):
                entry = {
                    "base_offset": h.base_offset, "last_offset": h.last_offset, "count": h.record_count,
                    "size": h.size, "compression": COMPRESSION_NAMES.get(h.compression, str(h.compression)),
                    "producer_id": h.producer_id, "producer_epoch": h.producer_epoch,
                    "base_sequence": h.base_sequence, "partition_leader_epoch": h.partition_leader_epoch,
                    "base_timestamp": h.base_timestamp, "max_timestamp": h.max_timestamp,
                    "timestamp_type": "LogAppendTime" if h.log_append_time else "CreateTime",
                    "transactional": h.is_transactional, "control": h.is_control,
                }
                count += h.record_count
                if decode_records:
                    batch = wire_records.decode_batch(view, pos, verify_crc=False)
                    entry["records"] = [_record_json(r) for r in batch.records]
                batches.append(entry)
                pos += h.size
    except Exception as e:  # noqa: BLE001 - a trace shows what it could not read instead of failing the request
        out["error"] = f"{type(e).__name__}: {e}"
    if pos < total and "error" not in out:
        out["trailing_partial_bytes"] = total - pos    # a fetch cut inside a batch at max bytes
    return {"count": count, **out}


def message_to_plain(msg, version: int, decode_records: bool = False):
    """A generated message as plain JSON-ready data: the fields it has at ``version``, in schema order."""
    fields = getattr(msg, "FIELDS", None)
    if fields is None:     # not a generated class: fall back to to_dict()
        return msg.to_dict() if isinstance(msg, Message) else msg
    out = {}
    for f in fields:
        attr, kind, vlo, vhi, tag, tlo, thi = f[0], f[2], f[3], f[4], f[7], f[8], f[9]
        if not vlo <= version <= vhi and not (tag is not None and tlo <= version <= thi):
            continue
        out[attr] = _value(kind, getattr(msg, attr), version, decode_records)
    unknown = getattr(msg, "unknown_tagged_fields", None)
    if unknown:
        out["unknown_tagged_fields"] = {str(t): _b64(b) for t, b in unknown.items()}
    return out


def _value(kind: str, v, version: int, decode_records: bool):
    if v is None:
        return None
    if kind == "records":
        return summarize_records(v, decode_records)
    if kind.startswith("[]"):
        inner = kind[2:]
        return [_value(inner, x, version, decode_records) for x in v]
    if isinstance(v, Message):
        return message_to_plain(v, version, decode_records)
    if kind in _PLAIN_TYPES and not isinstance(v, (memoryview, bytes, uuid.UUID)):
        return v
    return _scalar(kind, v)


def _timestamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _names(values: Iterable[str] | str | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values:
        out.extend(p.strip() for p in str(v).split(",") if p.strip())
    return out


def parse_apis(values: Iterable[str] | str | None) -> frozenset[int] | None:
    """Api names (Kafka's: Produce, Fetch, JoinGroup; case-insensitive) or numeric keys -> api keys."""
    names = _names(values)
    if not names:
        return None
    by_lower = {name.lower(): api.key for name, api in protocol.API_BY_NAME.items()}
    keys = set()
    for n in names:
        if n.isdigit() and int(n) in protocol.API:
            keys.add(int(n))
        elif n.lower() in by_lower:
            keys.add(by_lower[n.lower()])
        else:
            raise ValueError(f"unknown api {n!r} (Kafka api names, e.g. Produce, Fetch, Metadata, JoinGroup)")
    return frozenset(keys)


class Tracer:
    """Writes one JSON line per traced request and response.

    ``out``: a path (appended to), a text file object, or None for stderr. ``apis``: api names or keys to
    trace (default all). ``client_ids``: only requests whose client id is one of these. ``records``: decode
    the records of record batches (default: a summary per batch). ``callback``: also called with each event
    dict (e.g. a test collecting events, or a live view); it runs on the broker's event loop and must be quick.
    """

    def __init__(self, out=None, *, apis: Iterable[str] | str | None = None,
                 client_ids: Iterable[str] | str | None = None, records: bool = False,
                 callback: Callable[[dict], None] | None = None, write: bool = True):
        self.apis = parse_apis(apis)
        ids = _names(client_ids)
        self.client_ids = frozenset(ids) if ids else None
        self.records = bool(records)
        self.callback = callback
        self._lock = threading.Lock()
        self._owned = False
        self._path = None
        self._file = None
        if write:
            if out is None:
                self._file = None          # sys.stderr, looked up at write time (pytest capture swaps it)
            elif hasattr(out, "write"):
                self._file = out
            else:
                self._path = str(out)
                self._file = open(self._path, "a", encoding="utf-8", buffering=1)   # noqa: SIM115
                self._owned = True
        self._write = write

    def wants(self, api_key: int, client_id: str | None) -> bool:
        if self.apis is not None and api_key not in self.apis:
            return False
        if self.client_ids is not None and client_id not in self.client_ids:
            return False
        return True

    def request(self, ctx, body) -> None:
        if not self.wants(ctx.api_key, ctx.client_id):
            return
        try:
            ctx.trace_started = time.monotonic()
        except AttributeError:
            pass
        self._emit(self.event("request", ctx, body))

    def response(self, ctx, response) -> None:
        if not self.wants(ctx.api_key, ctx.client_id):
            return
        ev = self.event("response", ctx, response)
        started = getattr(ctx, "trace_started", None)
        if started is not None:
            ev["elapsed_ms"] = round((time.monotonic() - started) * 1000, 3)
        self._emit(ev)

    def event(self, direction: str, ctx, msg) -> dict:
        api = protocol.API.get(ctx.api_key)
        conn = getattr(ctx, "connection", None)
        try:
            body = message_to_plain(msg, ctx.api_version, self.records)
        except Exception as e:  # noqa: BLE001 - never fail a request because of its trace
            body = {"trace_error": f"{type(e).__name__}: {e}"}
        return {"ts": _timestamp(time.time()), "direction": direction,
                "api": api.name if api else str(ctx.api_key), "api_key": ctx.api_key, "version": ctx.api_version,
                "correlation_id": ctx.correlation_id, "client_id": ctx.client_id,
                "peer": getattr(conn, "peer", None), "body": body}

    def _emit(self, ev: dict) -> None:
        if self.callback is not None:
            try:
                self.callback(ev)
            except Exception:  # noqa: BLE001
                pass
        if not self._write:
            return
        line = json.dumps(ev, ensure_ascii=False, default=str) + "\n"
        f = self._file if self._file is not None else sys.stderr
        with self._lock:
            try:
                f.write(line)
                f.flush()
            except (OSError, ValueError):   # closed file / broken pipe: tracing must not break the broker
                pass

    def close(self) -> None:
        if self._owned and self._file is not None:
            with self._lock:
                self._file.close()
            self._file = None
            self._write = False


def tracer_from(spec) -> Tracer | None:
    """The ``trace=`` switch of the embedding API: None/False (off), True (stderr), a path, a file object,
    a callable (gets each event dict; nothing written), a dict of Tracer keyword arguments, or a Tracer."""
    if spec is None or spec is False:
        return None
    if isinstance(spec, Tracer):
        return spec
    if spec is True:
        return Tracer()
    if isinstance(spec, dict):
        kw = dict(spec)
        return Tracer(kw.pop("out", None), **kw)
    if callable(spec) and not hasattr(spec, "write"):
        return Tracer(callback=spec, write=False)
    return Tracer(spec)
