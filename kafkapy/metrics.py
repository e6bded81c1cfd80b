"""Broker metrics, exported in Prometheus text format at ``/metrics`` on the console port.

Counted on the request path (``kafkapy/server.py`` calls these; each is a few dict operations):

- ``observe(api_key, version, seconds)``: requests by api and version, handler latency histogram by api;
- ``responded(api_key, response, frames)``: response bytes, and error codes found in the response: every
  int16 field whose Kafka name ends in ``ErrorCode`` (top-level, per topic, per partition, ...), found by a
  walk planned once per message class that visits only the structs that can hold one;
- ``bytes_in`` and ``connections_total`` are plain counters the server increments.

Read when scraped (nothing on the request path): open connections, per-partition offsets and log sizes,
consumer group committed offsets and lag.
"""

from __future__ import annotations

import sys
import time
from bisect import bisect_left

from wire import protocol
from wire.messages.error_codes import ErrorCode

_frame_size = protocol.frame_size

# Prometheus' default buckets plus the sub-millisecond ones a local broker lives in (seconds)
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
_NB = len(LATENCY_BUCKETS)

_PLANS: dict[type, tuple] = {}
_WALKERS: dict[type, object] = {}     # message class -> compiled counter of its error codes, or None (it has none)


def _error_plan(cls, _seen=None) -> tuple:
    """((attr, None, False) for an error code field | (attr, sub plan, is array) for a struct or an array of
    structs, ...), holding only the paths that lead to an error code field. Version ranges are ignored: a field
    a version lacks keeps its default (0 / empty / None)."""
    plan = _PLANS.get(cls)
    if plan is not None:
        return plan
    seen = _seen or set()
    if cls in seen:        # recursive schema: no such thing in Kafka's, but do not loop
        return ()
    seen.add(cls)
    mod = sys.modules.get(cls.__module__)
    out = []
    for f in getattr(cls, "FIELDS", ()):
        attr, kafka_name, kind, struct_name = f[0], f[1], f[2], f[10]
        if kind == "int16" and kafka_name.endswith("ErrorCode"):
            out.append((attr, None, False))
        elif struct_name and mod is not None:
            sub_cls = getattr(mod, struct_name, None)
            if sub_cls is not None:
                sub = _error_plan(sub_cls, seen)
                if sub:
                    out.append((attr, sub, kind.startswith("[]")))
    plan = _PLANS[cls] = tuple(out)
    return plan


def _compile_walker(plan):
    """Straight-line Python for a plan: ``walk(msg, api_key, counts)`` adds each non-zero error code to
    ``counts[(api_key, code)]`` (about 3 times faster than interpreting the plan)."""
    lines = ["def walk(m, api_key, counts):"]
    n = [0]

    def emit(plan, var: str, ind: str) -> None:
        for attr, sub, is_array in plan:
            n[0] += 1
            v = f"v{n[0]}"
            lines.append(f"{ind}{v} = {var}.{attr}")
            if sub is None:
                lines.append(f"{ind}if {v}:")
                lines.append(f"{ind}    k = (api_key, {v})")
                lines.append(f"{ind}    counts[k] = counts.get(k, 0) + 1")
            elif is_array:
                lines.append(f"{ind}if {v}:")
                lines.append(f"{ind}    for {v}x in {v}:")
                emit(sub, f"{v}x", ind + "        ")
            else:
                lines.append(f"{ind}if {v} is not None:")
                emit(sub, v, ind + "    ")
    emit(plan, "m", "    ")
    ns: dict = {}
    exec("\n".join(lines), ns)   # noqa: S102 - code built from the generated classes' FIELDS, not from input
    return ns["walk"]


def _walker(cls):
    try:
        return _WALKERS[cls]
    except KeyError:
        plan = _error_plan(cls)
        w = _WALKERS[cls] = _compile_walker(plan) if plan else None
        return w


def error_codes(response) -> dict[int, int]:
    """The non-zero error codes in a response message: {code: occurrences}."""
    counts: dict = {}
    w = _walker(type(response))
    if w is not None:
        w(response, 0, counts)
    return {code: n for (_k, code), n in counts.items()}


def _api_name(key: int) -> str:
    api = protocol.API.get(key)
    return api.name if api else str(key)


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return "UNKNOWN"


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kv) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}"


def _num(v) -> str:
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "+Inf" if v > 0 else "-Inf"
        return repr(v)
    return str(int(v))


class Metrics:
    """Counters of one broker. Single-threaded: only the broker's event loop touches them."""

    def __init__(self):
        self.started = time.time()
        self.requests: dict[tuple[int, int], int] = {}        # (api key, version) -> requests answered
        self.latency: dict[int, list] = {}                     # api key -> [bucket counts..., +Inf, sum]
        self.errors: dict[tuple[int, int], int] = {}           # (api key, error code) -> occurrences
        self.bytes_in = 0            # request frames read, size prefix included
        self.bytes_out = 0           # response frames written, size prefix included
        self.connections_total = 0   # connections served since start

    # ---------------------------------------------------------------- request path

    def observe(self, api_key: int, version: int, seconds: float) -> None:
        k = (api_key, version)
        requests = self.requests
        requests[k] = requests.get(k, 0) + 1
        h = self.latency.get(api_key)
        if h is None:
            h = self.latency[api_key] = [0] * (_NB + 1) + [0.0]
        h[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        h[-1] += seconds

    def responded(self, api_key: int, response, frames) -> None:
        self.bytes_out += _frame_size(frames[0]) + 4     # encode_response's first chunk: size, correlation id
        try:
            walk = _WALKERS[type(response)]
        except KeyError:
            walk = _walker(type(response))
        if walk is not None:
            walk(response, api_key, self.errors)

    # ---------------------------------------------------------------- exposition

    def render(self, broker) -> str:
        """Everything in Prometheus text exposition format 0.0.4."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str, samples) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for suffix, labels, value in samples:
                out.append(f"{name}{suffix}{labels} {_num(value)}")

        family("kafkapy_up", "gauge", "1 while the broker runs.", [("", "", 1)])
        family("kafkapy_uptime_seconds", "gauge", "Seconds since the broker started.",
               [("", "", round(time.time() - self.started, 3))])
        family("kafkapy_requests_total", "counter", "Requests answered, by api and version.",
               [("", _labels(api=_api_name(k), api_key=k, version=v), n)
                for (k, v), n in sorted(self.requests.items())])
        family("kafkapy_errors_total", "counter",
               "Non-zero error codes in responses (top-level, per topic, per partition ...), by api and error.",
               [("", _labels(api=_api_name(k), error=_error_name(c), code=c), n)
                for (k, c), n in sorted(self.errors.items())])
        hist = []
        for k, h in sorted(self.latency.items()):
            name = _api_name(k)
            cum = 0
            for i, le in enumerate(LATENCY_BUCKETS):
                cum += h[i]
                hist.append(("_bucket", _labels(api=name, le=repr(le)), cum))
            cum += h[_NB]
            hist.append(("_bucket", _labels(api=name, le="+Inf"), cum))
            hist.append(("_sum", _labels(api=name), float(h[-1])))
            hist.append(("_count", _labels(api=name), cum))
        family("kafkapy_request_latency_seconds", "histogram",
               "Time from a decoded request to its response (long-poll waits included), by api.", hist)
        family("kafkapy_bytes_in_total", "counter", "Bytes of request frames received.", [("", "", self.bytes_in)])
        family("kafkapy_bytes_out_total", "counter", "Bytes of response frames sent.", [("", "", self.bytes_out)])
        server = broker.server
        family("kafkapy_connections", "gauge", "Client connections open now.",
               [("", "", len(server.connections) if server else 0)])
        family("kafkapy_connections_total", "counter", "Client connections served since start.",
               [("", "", self.connections_total)])
        family("kafkapy_connections_rejected_total", "counter", "Connections closed by max.connections.per.ip.",
               [("", "", server.rejected_connections if server else 0)])

        parts = partition_stats(broker)
        family("kafkapy_topics", "gauge", "Topics.", [("", "", len(broker.topics))])
        for name, key, help_ in (("kafkapy_partition_log_start_offset", "log_start_offset", "Log start offset."),
                                 ("kafkapy_partition_high_watermark", "high_watermark", "High watermark."),
                                 ("kafkapy_partition_log_end_offset", "log_end_offset", "Log end offset."),
                                 ("kafkapy_partition_log_size_bytes", "size", "Bytes in the partition's log."),
                                 ("kafkapy_partition_log_segments", "segments", "Segments of the partition's log.")):
            family(name, "gauge", help_, [("", _labels(topic=p["topic"], partition=p["partition"]), p[key])
                                          for p in parts])
        groups = group_stats(broker)
        family("kafkapy_group_members", "gauge", "Members of a consumer group.",
               [("", _labels(group=g["group_id"], state=g["state"]), len(g["members"])) for g in groups])
        family("kafkapy_group_committed_offset", "gauge", "Committed offset of a group on a partition.",
               [("", _labels(group=g["group_id"], topic=o["topic"], partition=o["partition"]), o["offset"])
                for g in groups for o in g["offsets"]])
        family("kafkapy_group_lag", "gauge", "High watermark minus committed offset.",
               [("", _labels(group=g["group_id"], topic=o["topic"], partition=o["partition"]), o["lag"])
                for g in groups for o in g["offsets"] if o["lag"] is not None])
        family("kafkapy_group_lag_sum", "gauge", "Lag of a group summed over its partitions.",
               [("", _labels(group=g["group_id"]), g["lag"]) for g in groups])
        return "\n".join(out) + "\n"


# ------------------------------------------------------------------ broker state, shared with the console

def partition_stats(broker, topics=None) -> list[dict]:
    """Offsets and sizes of every partition (or of ``topics``), sorted by topic and partition."""
    out = []
    names = sorted(broker.topics) if topics is None else [t for t in topics if t in broker.topics]
    for name in names:
        t = broker.topics[name]
        for p in range(t.partitions):
            lg = broker.partition_log(name, p)
            if lg is None:
                continue
            out.append({"topic": name, "partition": p, "log_start_offset": lg.log_start_offset,
                        "high_watermark": lg.high_watermark, "log_end_offset": lg.log_end_offset,
                        "size": lg.size_in_bytes, "segments": len(lg.segments)})
    return out


def group_stats(broker, group_id: str | None = None, members: bool = False) -> list[dict]:
    """Consumer groups: state, members (with assignments when ``members``), committed offsets and lag."""
    c = broker.groups
    groups = c.list_groups() if group_id is None else [g for g in [c.describe_group(group_id)] if g is not None]
    out = []
    for g in sorted(groups, key=lambda g: g.group_id):
        offsets = []
        total = 0
        for (topic, partition), o in sorted(g.offsets.items()):
            lg = broker.partition_log(topic, partition)
            hw = None if lg is None else lg.high_watermark
            lag = None if hw is None else max(hw - o.offset, 0)
            total += lag or 0
            offsets.append({"topic": topic, "partition": partition, "offset": o.offset, "high_watermark": hw,
                            "lag": lag, "metadata": o.metadata, "leader_epoch": o.leader_epoch,
                            "commit_timestamp": o.commit_timestamp})
        entry = {"group_id": g.group_id, "state": g.state, "generation_id": g.generation_id,
                 "protocol_type": g.protocol_type, "protocol": g.protocol_name, "leader": g.leader_id,
                 "members": [], "offsets": offsets, "lag": total}
        for m in g.members.values():
            md = {"member_id": m.member_id, "group_instance_id": m.group_instance_id, "client_id": m.client_id,
                  "client_host": m.client_host}
            if members:
                md["assignment"] = decode_assignment(m.assignment) if g.protocol_type == "consumer" else None
                md["session_timeout_ms"] = m.session_timeout_ms
                md["rebalance_timeout_ms"] = m.rebalance_timeout_ms
            entry["members"].append(md)
        out.append(entry)
    return out


def decode_assignment(raw) -> dict | None:
    """A ConsumerProtocolAssignment (int16 version + struct) as {topic: [partitions]}; None if it does not parse."""
    if not raw:
        return {}
    try:
        mod = protocol.data_module("ConsumerProtocolAssignment")
        buf = bytes(raw)
        version = int.from_bytes(buf[:2], "big", signed=True)
        if version < 0:
            return None
        version = min(version, max(mod.DECODERS))    # newer versions start with the same fields
        msg, _ = protocol.decode(mod, version, buf, 2)
        return {tp.topic: sorted(tp.partitions) for tp in (msg.assigned_partitions or ())}
    except Exception:  # noqa: BLE001 - a client's bytes
        return None
