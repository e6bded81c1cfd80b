"""Web console and Prometheus metrics, served by the broker process on its own port (``kafkapy --console``).

A small HTTP/1.1 server on asyncio streams in the broker's own event loop (no thread, no dependency, no build
step, nothing fetched from the internet: the pages are rendered here, with inline CSS and a little inline JS).
Every handler is synchronous, read-only and bounded, so it holds the loop for a short time only: message
browsing decodes at most ``BROWSE_MAX_BYTES`` of stored batches and ``BROWSE_MAX_RECORDS`` records, a trace
poll returns at most ``TRACE_MAX_POLL`` events, the other pages walk the topics, partitions and groups once.
One request per connection (``Connection: close``), request heads up to 16 KiB, at most ``MAX_CLIENTS``
connections at a time, each with a read and write timeout.

Pages (HTML): ``/`` (broker, topics, groups), ``/topics/NAME``, ``/topics/NAME/PARTITION?offset=&limit=&format=``,
``/groups``, ``/groups/ID``, ``/trace`` (live protocol trace), ``/cluster`` (a broker in a cluster: brokers, and each
partition's leader, leader epoch, replicas' log end offsets, ISR, offline replicas, high watermark; the tables reload
every second). JSON: ``/api/cluster``, ``/api/overview``, ``/api/topics``,
``/api/topics/NAME``, ``/api/topics/NAME/PARTITION/messages?offset=&limit=``, ``/api/groups``,
``/api/groups/ID``, ``/api/trace?after=SEQ&limit=``. Prometheus: ``/metrics``.

:class:`ClusterConsole` is the console of a :class:`kafkapy.Cluster`, served by the cluster on its own loop (so it
outlives any broker) and reading every running broker; it alone answers the cluster page's POSTs
(``/api/cluster/brokers/N/stop|kill|restart``, with the header ``X-Kafkapy-Console: 1``), each bounded by
``ACTION_TIMEOUT``. A broker's own console is read-only.

The live trace: the console keeps the last ``TRACE_RING`` events of the broker's protocol trace in a ring
buffer. With ``--trace`` the console is fed by that tracer; otherwise it installs one that writes nothing
and only feeds the ring, and only while somebody watches: from the first poll of ``/api/trace`` (the trace
page polls every second) until ``TRACE_IDLE`` seconds after the last one. With nobody watching the broker
pays nothing for it (``broker.tracer`` stays None). ``Console(..., trace="always")`` keeps it on.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import html
import json
import logging
import time
import urllib.parse
from collections import deque

from kafkapy.metrics import group_stats, partition_stats
from kafkapy.trace import COMPRESSION_NAMES, Tracer
from wire import records as wire_records

log = logging.getLogger("kafkapy.console")

DEFAULT_PORT = 9080
MAX_CLIENTS = 32
HEAD_LIMIT = 16 * 1024
READ_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
BROWSE_MAX_RECORDS = 500
BROWSE_DEFAULT_RECORDS = 50
BROWSE_MAX_BYTES = 1 << 20           # stored batch bytes decoded per page (the first batch is read whole)
BROWSE_MAX_DECOMPRESSED = 8 << 20    # a compressed batch is not inflated beyond this
VALUE_SHOWN = 4096                   # bytes of a key/value shown in HTML (the JSON API gives them whole)
TRACE_RING = 1000
TRACE_MAX_POLL = 500
TRACE_IDLE = 120.0                   # seconds after the last trace poll before the console's tracer is removed
FORMATS = ("auto", "text", "json", "hex")
CLUSTER_MAX_PARTITIONS = 5000     # partitions shown on the cluster page
CLUSTER_POLLS = 1800               # the cluster page refreshes every second for at most this many polls
ACTION_TIMEOUT = 60.0              # seconds for a stop/kill/restart asked from the console
ACTION_HEADER = "x-kafkapy-console"  # a POST must carry it (a cross-site form cannot; a cross-site fetch is preflighted)


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


# ------------------------------------------------------------------ the trace ring buffer

class TraceRing:
    """The last ``size`` trace events, numbered from 1 (``seq``), for polling with ``after=seq``."""

    def __init__(self, size: int = TRACE_RING):
        self.events: deque = deque(maxlen=size)
        self.seq = 0

    def append(self, ev: dict) -> None:
        self.seq += 1
        self.events.append((self.seq, ev))

    def after(self, seq: int, limit: int = TRACE_MAX_POLL) -> list[dict]:
        out = []
        if not self.events or seq >= self.seq:
            return out
        first = self.events[0][0]
        start = max(seq + 1 - first, 0, len(self.events) - limit)   # the newest ``limit`` of what is new
        for i in range(start, len(self.events)):
            s, ev = self.events[i]
            out.append({"seq": s, **ev})
        return out


# ------------------------------------------------------------------ value rendering

def _ts(ms: int | None) -> str | None:
    if ms is None or ms < 0:
        return None
    try:
        return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (OverflowError, OSError, ValueError):
        return None


def _json_bytes(b) -> dict | None:
    """Key/value/header for the JSON API: {"text": ...} when valid UTF-8 else {"base64": ...}; with its size."""
    if b is None:
        return None
    raw = bytes(b)
    try:
        return {"text": raw.decode("utf-8"), "size": len(raw)}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode("ascii"), "size": len(raw)}


def hexdump(raw: bytes) -> str:
    lines = []
    for i in range(0, len(raw), 16):
        chunk = raw[i:i + 16]
        hx = " ".join(f"{c:02x}" for c in chunk)
        asc = "".join(chr(c) if 32 <= c < 127 else "." for c in chunk)
        lines.append(f"{i:08x}  {hx:<47}  {asc}")
    return "\n".join(lines)


def render_value(b, fmt: str) -> tuple[str, str]:
    """(text shown, rendering used) for a key/value/header value in one of FORMATS."""
    if b is None:
        return "null", "null"
    raw = bytes(b)
    cut = raw[:VALUE_SHOWN]
    more = f"\n… {len(raw)} bytes in all" if len(raw) > VALUE_SHOWN else ""
    if fmt == "hex":
        return hexdump(cut) + more, "hex"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        if fmt == "text":
            return cut.decode("utf-8", "replace") + more, "text"
        return hexdump(cut) + more, "hex"
    if fmt in ("json", "auto") and text[:1] in "{[\"" and text.strip():
        try:
            pretty = json.dumps(json.loads(text), indent=1, ensure_ascii=False)
            return pretty[:VALUE_SHOWN] + (more if len(pretty) > VALUE_SHOWN else ""), "json"
        except ValueError:
            pass
    return text[:VALUE_SHOWN] + more, "text"


# ------------------------------------------------------------------ reading broker state (all bounded)

def _int(query: dict, name: str, default: int | None, lo: int | None = None, hi: int | None = None) -> int | None:
    v = query.get(name)
    if v is None or v == "":
        return default
    try:
        n = int(v)
    except ValueError:
        raise HttpError(400, f"{name} must be an integer, got {v!r}") from None
    if lo is not None:
        n = max(n, lo)
    if hi is not None:
        n = min(n, hi)
    return n


def browse(broker, topic: str, partition: int, offset: int | None, limit: int) -> dict:
    """Records of a partition from ``offset`` (default: the last ``limit``) up to the high watermark."""
    lg = broker.partition_log(topic, partition)
    if lg is None:
        raise HttpError(404, f"no partition {topic}-{partition}")
    start, hw = lg.log_start_offset, lg.high_watermark
    limit = max(1, min(limit, BROWSE_MAX_RECORDS))
    if offset is None:
        offset = max(start, hw - limit)
    offset = min(max(offset, start), hw)
    out = {"topic": topic, "partition": partition, "log_start_offset": start, "high_watermark": hw,
           "offset": offset, "limit": limit, "records": [], "next_offset": offset}
    recs = out["records"]
    pos = offset                # the next offset to read
    budget = BROWSE_MAX_BYTES
    try:
        while len(recs) < limit and pos < hw and budget > 0:
            data = lg.read(pos, budget, max_offset=hw)
            if not data:
                break
            budget -= len(data)
            before = pos
            for at, h in wire_records.iter_batch_headers(data):
                if len(recs) >= limit:
                    break
                batch = wire_records.decode_batch(data, at, verify_crc=False,
                                                  max_decompressed_size=BROWSE_MAX_DECOMPRESSED)
                info = {"base_offset": h.base_offset, "last_offset": h.last_offset,
                        "compression": COMPRESSION_NAMES.get(h.compression, str(h.compression)),
                        "producer_id": h.producer_id, "transactional": h.is_transactional, "control": h.is_control}
                ts_type = "LogAppendTime" if h.log_append_time else "CreateTime"
                for r in batch.records:
                    if r.offset < offset:
                        continue
                    if len(recs) >= limit:
                        break
                    recs.append({"offset": r.offset, "timestamp": r.timestamp, "time": _ts(r.timestamp),
                                 "timestamp_type": ts_type, "key": r.key, "value": r.value,
                                 "headers": list(r.headers), "batch": info})
                pos = max(pos, h.last_offset + 1)
            del data
            if pos <= before:
                break
    except Exception as e:  # noqa: BLE001 - show what could be read, and why not the rest
        out["error"] = f"{type(e).__name__}: {e}"
    out["next_offset"] = recs[-1]["offset"] + 1 if len(recs) >= limit else pos
    return out


def _records_json(page: dict) -> dict:
    page = dict(page)
    page["records"] = [{**r, "key": _json_bytes(r["key"]), "value": _json_bytes(r["value"]),
                        "headers": [{"key": k, "value": _json_bytes(v)} for k, v in r["headers"]]}
                       for r in page["records"]]
    return page


def topic_summaries(broker) -> list[dict]:
    parts: dict[str, list] = {}
    for p in partition_stats(broker):
        parts.setdefault(p["topic"], []).append(p)
    out = []
    for name in sorted(broker.topics):
        t = broker.topics[name]
        ps = parts.get(name, [])
        out.append({"name": name, "topic_id": str(t.topic_id), "partitions": t.partitions, "internal": t.internal,
                    "messages": sum(p["high_watermark"] - p["log_start_offset"] for p in ps),
                    "size": sum(p["size"] for p in ps), "configs": dict(t.configs)})
    return out


def topic_detail(broker, name: str) -> dict:
    t = broker.topics.get(name)
    if t is None:
        raise HttpError(404, f"no topic {name}")
    effective = broker.effective_topic_configs(t)
    return {"name": name, "topic_id": str(t.topic_id), "partitions": partition_stats(broker, [name]),
            "internal": t.internal, "configs": dict(t.configs), "effective_configs": effective}


def overview(broker) -> dict:
    server = broker.server
    return {"cluster_id": broker.cluster_id, "node_id": broker.node_id,
            "listening": f"{server.host}:{server.port}" if server else None,
            "advertised": "%s:%s" % tuple(broker.config.advertised),
            "storage": "memory" if broker.memory else broker.config.data_dir,
            "uptime_seconds": round(time.time() - broker.started_at, 1),
            "topics": len(broker.topics), "connections": len(server.connections) if server else 0,
            "groups": len(group_stats(broker)), "tracing": broker.tracer is not None}


# ------------------------------------------------------------------ the cluster view (several brokers)

def cluster_view(image, cores: dict, *, served_by: int | None, nodes: dict | None = None,
                 controls: bool = False, stale: bool = False) -> dict:
    """Brokers and every partition's leader, leader epoch, replicas, ISR, offline replicas and high watermark.

    ``image``: a broker's :class:`~kafkapy.cluster.metadata.ClusterImage` (the metadata store as that broker last
    saw it); ``cores``: node id -> a running Broker whose local replicas may be read (a broker's own console: only
    itself; the console of a kafkapy.Cluster: every running broker); ``nodes``: node id -> {"address", "process"}
    for the brokers of a kafkapy.Cluster, down ones included. Each replica has its log end offset as the replica
    has it and as the leader last saw it (from the replica's fetches); None where that broker's state is not
    readable here. At most ``CLUSTER_MAX_PARTITIONS`` partitions (``truncated`` says when there are more)."""
    ids = set(image.brokers) | set(nodes or ())
    for t in image.topics.values():
        for replicas in t.assignment:
            ids.update(replicas)
    brokers = []
    for i in sorted(ids):
        info = image.brokers.get(i)
        node = (nodes or {}).get(i)
        process = node["process"] if node else None
        registered = info is not None
        if process is None:
            state = "alive" if registered else "down"
        elif process == "running":
            state = "alive" if registered else "not registered"
        elif process == "paused":
            state = "paused"
        else:
            state = "down, lease not expired" if registered else "down"
        address = f"{info.host}:{info.port}" if registered else (node["address"] if node else None)
        brokers.append({"id": i, "address": address, "alive": registered, "state": state, "process": process,
                        "controller": i == image.controller_id, "broker_epoch": info.epoch if registered else None,
                        "shutting_down": i in image.shutting_down})
    partitions = []
    truncated = False
    for name in sorted(image.topics):
        t = image.topics[name]
        for p, replicas in enumerate(t.assignment):
            if len(partitions) >= CLUSTER_MAX_PARTITIONS:
                truncated = True
                break
            s = image.states.get((name, p))
            leader = s.leader if s is not None else -1
            isr = sorted(s.isr) if s is not None else []
            lcore = cores.get(leader)
            lp = lcore.partition(name, p) if lcore is not None else None
            if lp is not None and not lp.is_leader:
                lp = None
            reps = []
            for r in replicas:
                rcore = cores.get(r)
                rp = rcore.partition(name, p) if rcore is not None else None
                seen = None
                if lp is not None:
                    if r == leader:
                        seen = lp.log.log_end_offset
                    elif r in lp.remote and lp.remote[r].log_end_offset >= 0:
                        seen = lp.remote[r].log_end_offset
                reps.append({"id": r, "leader": r == leader, "in_isr": r in isr, "alive": r in image.brokers,
                             "log_end_offset": rp.log.log_end_offset if rp is not None else None,
                             "high_watermark": rp.log.high_watermark if rp is not None else None,
                             "log_end_offset_at_leader": seen})
            partitions.append({"topic": name, "partition": p, "internal": t.internal, "leader": leader,
                               "leader_epoch": s.leader_epoch if s is not None else None, "replicas": reps,
                               "isr": isr, "offline_replicas": [r for r in replicas if r not in image.brokers],
                               "high_watermark": lp.log.high_watermark if lp is not None else None})
    return {"served_by": served_by, "controller": image.controller_id, "controller_epoch": image.controller_epoch,
            "revision": image.revision, "stale": stale, "controls": controls, "brokers": brokers,
            "partitions": partitions, "truncated": truncated}


# ------------------------------------------------------------------ HTML

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:center}
header a{color:#cfd8e8;text-decoration:none}header a:hover{color:#fff}header b{color:#fff;margin-right:1em}
main{padding:1em 1.5em}h1{font-size:1.3em;margin:.2em 0 .6em}h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0001;margin-bottom:1em}
th,td{border-bottom:1px solid #e4e7ec;padding:.3em .7em;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{margin:0;white-space:pre-wrap;word-break:break-all;font:12px/1.35 ui-monospace,monospace;max-width:60em}
.muted{color:#7a8394}.tag{display:inline-block;padding:0 .4em;border-radius:3px;background:#e4e7ec;font-size:12px}
.over{font-weight:600;color:#0b5cad}.err{color:#b42318}form{margin:.5em 0 1em}
input,select,button{font:inherit;padding:.15em .4em}
#trace details{background:#fff;border-bottom:1px solid #e4e7ec;padding:.2em .6em}
#trace summary{cursor:pointer;font:12px ui-monospace,monospace}.req{color:#0b5cad}.resp{color:#067647}
.ok{color:#067647}.warn{color:#b54708}.bad{color:#b42318;font-weight:600}.rep{white-space:nowrap}
.tag.ok{background:#dcfae6}.tag.warn{background:#fef0c7}.tag.bad{background:#fee4e2}.tag.ctl{background:#d1e9ff}
"""

_NAV = ('<header><b>kafkapy</b><a href="/">Overview</a><a href="/groups">Groups</a><a href="/trace">Trace</a>'
        '<a href="/metrics">Metrics</a></header>')
_NAV_CLUSTER = _NAV.replace('<a href="/groups">', '<a href="/cluster">Cluster</a><a href="/groups">', 1)

_REFRESH_JS = """<label class=muted style="float:right"><input type=checkbox id=ar> auto-refresh</label><script>
const ar=document.getElementById('ar');ar.checked=localStorage.getItem('kafkapy-ar')==='1';
ar.onchange=()=>{localStorage.setItem('kafkapy-ar',ar.checked?'1':'0');tick()};
function tick(){if(ar.checked)setTimeout(()=>{if(ar.checked)location.reload()},2000)}tick();</script>"""

_TRACE_JS = """
const box=document.getElementById('trace'),st=document.getElementById('st'),flt=document.getElementById('flt');
const pause=document.getElementById('pause');let after=0,shown=0;
function line(ev){const d=document.createElement('details');const s=document.createElement('summary');
 const req=ev.direction==='request';s.className=req?'req':'resp';
 s.textContent=`${ev.ts} ${req?'→':'←'} ${ev.api} v${ev.version} #${ev.correlation_id} ${ev.client_id??''} `+
  `${ev.peer??''}${ev.elapsed_ms!==undefined?' '+ev.elapsed_ms+' ms':''}`;
 const p=document.createElement('pre');d.dataset.api=ev.api.toLowerCase();
 d.addEventListener('toggle',()=>{if(d.open&&!p.textContent)p.textContent=JSON.stringify(ev.body,null,1)},{once:false});
 d.append(s,p);return d}
function visible(d){const f=flt.value.trim().toLowerCase();return !f||f.split(',').some(x=>d.dataset.api.includes(x.trim()))}
flt.oninput=()=>{for(const d of box.children)d.style.display=visible(d)?'':'none'};
async function poll(){try{if(!pause.checked){const r=await fetch('/api/trace?after='+after);const j=await r.json();
 for(const ev of j.events){after=ev.seq;const d=line(ev);d.style.display=visible(d)?'':'none';box.prepend(d);shown++}
 while(box.children.length>1000)box.lastChild.remove();
 st.textContent=`${j.recording?'recording':'not recording'} · last event #${j.seq} · ${shown} shown`}}
 catch(e){st.textContent='broker unreachable: '+e}setTimeout(poll,1000)}poll();
"""


def _e(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _q(v) -> str:
    return urllib.parse.quote(str(v), safe="")


def _page(title: str, body: str, refresh: bool = False) -> bytes:
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport "
            f"content='width=device-width,initial-scale=1'><title>{_e(title)} · kafkapy</title>"
            f"<style>{_CSS}</style></head><body>{_NAV}<main>{_REFRESH_JS if refresh else ''}"
            f"{body}</main></body></html>").encode("utf-8")


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), empty: str = "none") -> str:
    if not rows:
        return f"<p class=muted>{_e(empty)}</p>"
    th = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td class=n>{c}</td>" if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def html_overview(broker) -> bytes:
    o = overview(broker)
    info = _table(["cluster id", "node", "listening", "advertised", "storage", "uptime", "connections"],
                  [[_e(o["cluster_id"]), _e(o["node_id"]), _e(o["listening"]), _e(o["advertised"]), _e(o["storage"]),
                    f"{o['uptime_seconds']:.0f} s", _e(o["connections"])]])
    rows = [[f'<a href="/topics/{_q(t["name"])}">{_e(t["name"])}</a>'
             + (' <span class=tag>internal</span>' if t["internal"] else ""),
             _e(t["partitions"]), _e(t["messages"]), _e(_size(t["size"])),
             _e(", ".join(f"{k}={v}" for k, v in sorted(t["configs"].items())))] for t in topic_summaries(broker)]
    topics = _table(["topic", "partitions", "messages", "size", "config overrides"], rows, {1, 2, 3},
                    "no topics yet")
    groups = _groups_table(broker)
    return _page("Overview", f"<h1>Broker</h1>{info}<h2>Topics</h2>{topics}<h2>Consumer groups</h2>{groups}",
                 refresh=True)


def _groups_table(broker) -> str:
    rows = [[f'<a href="/groups/{_q(g["group_id"])}">{_e(g["group_id"])}</a>', _e(g["state"]),
             _e(g["protocol_type"]), _e(g["protocol"]), _e(len(g["members"])), _e(g["generation_id"]),
             _e(g["lag"])] for g in group_stats(broker)]
    return _table(["group", "state", "protocol type", "assignor", "members", "generation", "lag"], rows, {4, 5, 6},
                  "no consumer groups")


def html_topic(broker, name: str) -> bytes:
    d = topic_detail(broker, name)
    rows = [[_e(p["partition"]), _e(p["log_start_offset"]), _e(p["high_watermark"]), _e(p["log_end_offset"]),
             _e(p["high_watermark"] - p["log_start_offset"]), _e(_size(p["size"])), _e(p["segments"]),
             f'<a href="/topics/{_q(name)}/{p["partition"]}">browse</a>'] for p in d["partitions"]]
    parts = _table(["partition", "log start offset", "high watermark", "log end offset", "messages", "size",
                    "segments", ""], rows, {0, 1, 2, 3, 4, 5, 6})
    crow = [[_e(k), f'<span class=over>{_e(v)}</span>' if k in d["configs"] else _e(v),
             "topic override" if k in d["configs"] else '<span class=muted>default</span>']
            for k, v in sorted(d["effective_configs"].items())]
    configs = _table(["config", "value", "source"], crow)
    body = (f"<h1>Topic {_e(name)}</h1><p class=muted>id {_e(d['topic_id'])}"
            f"{' · internal' if d['internal'] else ''}</p><h2>Partitions</h2>{parts}<h2>Configs</h2>{configs}")
    return _page(f"Topic {name}", body, refresh=True)


def html_messages(broker, name: str, partition: int, query: dict) -> bytes:
    fmt = query.get("format", "auto")
    if fmt not in FORMATS:
        raise HttpError(400, f"format must be one of {', '.join(FORMATS)}")
    limit = _int(query, "limit", BROWSE_DEFAULT_RECORDS, 1, BROWSE_MAX_RECORDS)
    page = browse(broker, name, partition, _int(query, "offset", None), limit)
    rows = []
    for r in page["records"]:
        key, _ = render_value(r["key"], fmt)
        value, used = render_value(r["value"], fmt)
        hdrs = "".join(f"<div><b>{_e(k)}</b>: <pre style='display:inline'>{_e(render_value(v, fmt)[0])}</pre></div>"
                       for k, v in r["headers"])
        b = r["batch"]
        flags = " ".join(f"<span class=tag>{x}</span>" for x, on in (("txn", b["transactional"]),
                                                                      ("control", b["control"]),
                                                                      (b["compression"], b["compression"] != "none"))
                         if on)
        when = f"{r['time']} UTC" if r["time"] else r["timestamp"]       # a timestamp out of range: its number
        rows.append([_e(r["offset"]), f"{_e(when)}<div class=muted>{_e(r['timestamp_type'])}</div>",
                     f"<pre>{_e(key)}</pre>", f"<pre>{_e(value)}</pre><span class=muted>{used}</span>",
                     hdrs, flags])
    sel = "".join(f"<option{' selected' if f == fmt else ''}>{f}</option>" for f in FORMATS)
    form = (f"<form>offset <input name=offset type=number value='{page['offset']}' style='width:8em'> "
            f"limit <input name=limit type=number value='{limit}' style='width:5em'> "
            f"render <select name=format>{sel}</select> <button>show</button></form>")
    base = f"/topics/{_q(name)}/{partition}?limit={limit}&format={fmt}"
    nav = (f"<p><a href='{base}&offset={max(page['offset'] - limit, page['log_start_offset'])}'>← previous</a> · "
           f"<a href='{base}&offset={page['next_offset']}'>next →</a> · <a href='{base}'>latest</a> · "
           f"<a href='{base}&offset={page['log_start_offset']}'>beginning</a></p>")
    err = f"<p class=err>{_e(page['error'])}</p>" if page.get("error") else ""
    table = _table(["offset", "timestamp", "key", "value", "headers", ""], rows, {0}, "no messages in this range")
    body = (f"<h1><a href='/topics/{_q(name)}'>{_e(name)}</a> / partition {partition}</h1>"
            f"<p class=muted>log start offset {page['log_start_offset']} · high watermark {page['high_watermark']}"
            f" · showing offsets from {page['offset']}</p>{form}{nav}{err}{table}{nav}")
    return _page(f"{name}-{partition}", body)


def html_groups(broker) -> bytes:
    return _page("Consumer groups", f"<h1>Consumer groups</h1>{_groups_table(broker)}", refresh=True)


def html_group(broker, group_id: str) -> bytes:
    gs = group_stats(broker, group_id, members=True)
    if not gs:
        raise HttpError(404, f"no group {group_id}")
    g = gs[0]
    info = _table(["state", "generation", "protocol type", "assignor", "leader", "lag"],
                  [[_e(g["state"]), _e(g["generation_id"]), _e(g["protocol_type"]), _e(g["protocol"]),
                    _e(g["leader"]), _e(g["lag"])]])
    mrows = []
    for m in g["members"]:
        a = m.get("assignment")
        shown = "<span class=muted>not decoded</span>" if a is None else _e(
            "; ".join(f"{t}: {', '.join(map(str, ps))}" for t, ps in sorted(a.items())) or "nothing")
        mrows.append([_e(m["member_id"]), _e(m["group_instance_id"]), _e(m["client_id"]), _e(m["client_host"]), shown])
    members = _table(["member id", "instance id", "client id", "host", "assignment"], mrows, empty="no members")
    orows = [[f'<a href="/topics/{_q(o["topic"])}">{_e(o["topic"])}</a>', _e(o["partition"]), _e(o["offset"]),
              _e(o["high_watermark"]), _e(o["lag"]), _e(o["metadata"])] for o in g["offsets"]]
    offsets = _table(["topic", "partition", "committed offset", "high watermark", "lag", "metadata"], orows,
                     {1, 2, 3, 4}, "no committed offsets")
    body = (f"<h1>Group {_e(group_id)}</h1>{info}<h2>Members</h2>{members}<h2>Committed offsets and lag</h2>"
            f"{offsets}")
    return _page(f"Group {group_id}", body, refresh=True)


_CLUSTER_JS = """
const box=document.getElementById('cv'),st=document.getElementById('st'),act=document.getElementById('act');
let polls=0;
async function poll(){if(polls++>=%(polls)d){st.textContent='auto-refresh stopped after %(polls)d polls: reload the page';return}
 const ac=new AbortController(),t=setTimeout(()=>ac.abort(),3000);
 try{const r=await fetch(location.pathname+'?fragment=1'+(location.search?'&'+location.search.slice(1):''),
  {signal:ac.signal});if(r.ok){box.innerHTML=await r.text();st.textContent='live · '+new Date().toLocaleTimeString()}
  else st.textContent='console answered '+r.status}
 catch(e){st.textContent='console unreachable: '+e}finally{clearTimeout(t)}setTimeout(poll,1000)}
document.addEventListener('click',async ev=>{const b=ev.target.closest('button[data-act]');if(!b)return;
 const what=b.dataset.act+' broker '+b.dataset.node;b.disabled=true;act.textContent=what+' …';
 try{const r=await fetch('/api/cluster/brokers/'+b.dataset.node+'/'+b.dataset.act,
  {method:'POST',headers:{'X-Kafkapy-Console':'1'}});const j=await r.json();
  act.textContent=what+(j.error?': '+j.error:': done ('+j.took_ms+' ms)')}
 catch(e){act.textContent=what+' failed: '+e}finally{b.disabled=false}});
setTimeout(poll,1000);
"""


def _replica_cell(r: dict) -> str:
    cls = "bad" if not r["alive"] else ("ok" if r["in_isr"] else "warn")
    if r["log_end_offset"] is not None:
        leo = f"LEO {r['log_end_offset']}"
    else:
        leo = "LEO ?" if r["alive"] else "offline"     # ?: that broker's log is not readable from here
    seen = "" if r["log_end_offset_at_leader"] is None or r["leader"] else \
        f" <span class=muted>leader sees {_e(r['log_end_offset_at_leader'])}</span>"
    title = ("leader" if r["leader"] else "in sync" if r["in_isr"] else "out of sync") + \
        ("" if r["alive"] else ", offline")
    return (f"<div class='rep {cls}' title='{_e(title)}'><b>{_e(r['id'])}</b>{' ★' if r['leader'] else ''}"
            f" {_e(leo)}{seen}</div>")


def cluster_fragment(view: dict, internal: bool) -> str:
    """The cluster page's tables (the part the page's script reloads every second)."""
    ctl = view["controller"]
    head = (f"<p class=muted>controller {_e(ctl if ctl is not None else 'none')} (epoch {_e(view['controller_epoch'])})"
            f" · metadata revision {_e(view['revision'])} · as broker {_e(view['served_by'])} sees it"
            f"{' · <span class=bad>no broker running: the last view seen</span>' if view['stale'] else ''}</p>")
    rows = []
    for b in view["brokers"]:
        st = b["state"]
        cls = "ok" if st == "alive" else "bad" if st == "down" else "warn"
        tags = f"<span class='tag {cls}'>{_e(st)}</span>"
        if b["controller"]:
            tags += " <span class='tag ctl'>controller</span>"
        if b["shutting_down"]:
            tags += " <span class='tag warn'>shutting down</span>"
        row = [_e(b["id"]), _e(b["address"]), tags, _e(b["broker_epoch"])]
        if view["controls"]:
            n = _e(b["id"])
            up = b["process"] in ("running", "paused")
            row.append((f"<button data-act=stop data-node={n} title='controlled shutdown: leaderships move first'>"
                        f"stop</button> <button data-act=kill data-node={n} title='a crash'>kill</button> "
                        if up else "") + f"<button data-act=restart data-node={n}>restart</button>")
        rows.append(row)
    brokers = _table(["broker", "address", "state", "broker epoch"] + (["actions"] if view["controls"] else []),
                     rows, {3}, "no brokers")
    prow = []
    hidden = 0
    for p in view["partitions"]:
        if p["internal"] and not internal:
            hidden += 1
            continue
        leader = p["leader"]
        lead = "<span class=bad>offline</span>" if leader < 0 else _e(leader)
        off = ", ".join(map(str, p["offline_replicas"]))
        under = len(p["isr"]) < len(p["replicas"])
        prow.append([f'<a href="/topics/{_q(p["topic"])}">{_e(p["topic"])}</a>', _e(p["partition"]), lead,
                     _e(p["leader_epoch"]), "".join(_replica_cell(r) for r in p["replicas"]),
                     f"<span class={'warn' if under else 'ok'}>{_e(', '.join(map(str, p['isr'])))}</span>",
                     f"<span class=bad>{_e(off)}</span>" if off else "",
                     _e("?" if p["high_watermark"] is None else p["high_watermark"])])
    parts = _table(["topic", "partition", "leader", "leader epoch", "replicas: log end offset", "ISR",
                    "offline", "high watermark"], prow, {1, 3, 7}, "no topics yet")
    more = (f"<p class=muted>{hidden} partitions of internal topics hidden: <a href='?internal=1'>show them</a></p>"
            if hidden else "")
    if view["truncated"]:
        more += f"<p class=muted>only the first {CLUSTER_MAX_PARTITIONS} partitions are shown</p>"
    return f"{head}<h2>Brokers</h2>{brokers}<h2>Partitions</h2>{parts}{more}"


def html_cluster(view: dict, internal: bool) -> bytes:
    legend = ("<p class=muted>Each replica: its id (★ the leader), its log end offset (LEO) as it has it, and as the "
              "leader last saw it from the replica's fetches; <span class=ok>in sync</span>, "
              "<span class=warn>out of the ISR</span>, <span class=bad>offline</span>. The high watermark is the "
              "leader's: the smallest LEO of the ISR. To watch a failover, kill the leader of a partition and "
              "watch the controller elect another in-sync replica (leader epoch + 1) once the killed broker's lease "
              "expires; restart it and watch it catch up and rejoin the ISR.</p>")
    controls = ("<p><span id=act class=muted></span></p>" if view["controls"] else
                "<p class=muted>Stopping and restarting brokers needs the console of a kafkapy.Cluster "
                "(<code>kafkapy cluster --console</code>).</p>")
    body = (f"<h1>Cluster <span id=st class='muted' style='font-size:12px;font-weight:normal'></span></h1>{controls}"
            f"<div id=cv>{cluster_fragment(view, internal)}</div>{legend}"
            f"<script>{_CLUSTER_JS % {'polls': CLUSTER_POLLS}}</script>")
    return _page("Cluster", body)


def html_trace() -> bytes:
    body = ("<h1>Protocol trace</h1><p>filter apis <input id=flt placeholder='produce,fetch'> "
            "<label><input type=checkbox id=pause> pause</label> <span id=st class=muted></span></p>"
            "<p class=muted>Newest first; click a line for its decoded fields.</p>"
            f"<div id=trace></div><script>{_TRACE_JS}</script>")
    return _page("Trace", body)


# ------------------------------------------------------------------ the server

class Console:
    """The console's HTTP server; the broker starts it after its own listener and stops it first."""

    def __init__(self, broker, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, trace: str = "watch"):
        if trace not in ("watch", "always"):
            raise ValueError("trace must be 'watch' or 'always'")
        self.broker = broker
        self.host = host
        self.port = port
        self.trace_mode = trace
        self.ring = TraceRing()
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[asyncio.Task] = set()
        self._own_tracer: Tracer | None = None    # the ring-only tracer, installed while watched
        self._chained = None                      # (tracer, its previous callback) when feeding from --trace
        self._watched_until = 0.0
        self._idle_handle = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> tuple[str, int]:
        try:
            self._server = await asyncio.start_server(self._client, self.host, self.port, limit=HEAD_LIMIT,
                                                      reuse_address=True)
        except OSError as e:
            raise OSError(f"console: cannot listen on {self.host}:{self.port}: {e.strerror or e}") from None
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        tracer = self.broker.tracer
        if tracer is not None:       # --trace / trace=...: feed the ring from it too
            prev = tracer.callback
            self._chained = (tracer, prev)
            ring_append = self.ring.append

            def both(ev, prev=prev):
                ring_append(ev)
                if prev is not None:
                    prev(ev)
            tracer.callback = both
        elif self.trace_mode == "always":
            self._install_tracer()
        log.info("console at %s (metrics at %smetrics)", self.url, self.url)
        return self.host, self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._clients):
            t.cancel()
        if self._clients:
            await asyncio.wait(self._clients, timeout=5)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - stopping regardless
                pass
            self._server = None
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        self._remove_tracer()
        if self._chained is not None:
            tracer, prev = self._chained
            tracer.callback = prev
            self._chained = None

    # trace ring feeding

    @property
    def recording(self) -> bool:
        return self._chained is not None or self._own_tracer is not None

    def _install_tracer(self) -> None:
        if self._own_tracer is None and self.broker.tracer is None:
            self._own_tracer = Tracer(callback=self.ring.append, write=False)
            self.broker.tracer = self._own_tracer

    def _remove_tracer(self) -> None:
        if self._own_tracer is not None:
            if self.broker.tracer is self._own_tracer:
                self.broker.tracer = None
            self._own_tracer = None

    def _watched(self) -> None:
        """A trace poll: record from now on, until TRACE_IDLE seconds after the last poll."""
        if self._chained is not None or self.trace_mode == "always":
            return
        self._watched_until = time.monotonic() + TRACE_IDLE
        self._install_tracer()
        if self._idle_handle is None:
            self._idle_handle = asyncio.get_running_loop().call_later(TRACE_IDLE, self._idle_check)

    def _idle_check(self) -> None:
        left = self._watched_until - time.monotonic()
        if left > 0:
            self._idle_handle = asyncio.get_running_loop().call_later(left, self._idle_check)
            return
        self._idle_handle = None
        self._remove_tracer()

    # HTTP

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._clients.add(task)
        try:
            if len(self._clients) > MAX_CLIENTS:
                await self._respond(writer, 503, "text/plain; charset=utf-8", b"too many console connections\n")
                return
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except asyncio.LimitOverrunError:
                await self._respond(writer, 431, "text/plain; charset=utf-8", b"request head too large\n")
                return
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            if head[:5].upper() == b"POST ":
                method, status, ctype, body = await self._handle_post(head, reader)
            else:
                method, status, ctype, body = self._handle(head)
            await self._respond(writer, status, ctype, b"" if method == "HEAD" else body, len(body))
        except (ConnectionError, asyncio.TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - one console request must not touch the broker
            log.exception("console request failed")
        finally:
            self._clients.discard(task)
            writer.close()

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes,
                       length: int | None = None) -> None:
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body) if length is None else length}\r\nCache-Control: no-store\r\n"
                "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n")
        writer.write(head.encode("latin-1") + body)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)

    def _handle(self, head: bytes) -> tuple[str, int, str, bytes]:
        method = "GET"
        try:
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                raise HttpError(400, "not an HTTP/1.x request line")
            method, target = parts[0], parts[1]
            if method not in ("GET", "HEAD"):
                raise HttpError(405, "the console is read-only: GET and HEAD (and the cluster page's POSTs)")
            url = urllib.parse.urlsplit(target)
            path = urllib.parse.unquote(url.path)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            status, ctype, body = self.route(path, query)
            if ctype.startswith("text/html") and body.startswith(b"<!doctype") and self.in_cluster:
                body = body.replace(_NAV.encode(), _NAV_CLUSTER.encode(), 1)
            return method, status, ctype, body
        except HttpError as e:
            if method != "HEAD" and "/api/" in head[:64].decode("latin-1", "replace"):
                return method, e.status, "application/json", _json({"error": e.message})
            return method, e.status, "text/plain; charset=utf-8", (e.message + "\n").encode("utf-8")
        except Exception as e:  # noqa: BLE001
            log.exception("console request failed")
            return method, 500, "text/plain; charset=utf-8", f"{type(e).__name__}: {e}\n".encode("utf-8")

    async def _handle_post(self, head: bytes, reader: asyncio.StreamReader) -> tuple[str, int, str, bytes]:
        """A POST: the cluster page's stop/kill/restart (``/api/cluster/brokers/N/ACTION``), answered in JSON."""
        try:
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                raise HttpError(400, "not an HTTP/1.x request line")
            headers = {}
            for h in lines[1:]:
                k, sep, v = h.partition(":")
                if sep:
                    headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length") or 0)
            if length < 0 or length > 1024:
                raise HttpError(400, "a console POST has no body to speak of")
            if length:
                await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT)
            path = urllib.parse.unquote(urllib.parse.urlsplit(parts[1]).path)
            seg = [x for x in path.split("/") if x]
            if len(seg) != 5 or seg[:3] != ["api", "cluster", "brokers"]:
                raise HttpError(405, "the console is read-only except for the cluster page's broker actions")
            if headers.get(ACTION_HEADER) != "1":
                raise HttpError(403, f"a broker action needs the header {ACTION_HEADER}: 1 (sent by the console's page)")
            try:
                node = int(seg[3])
            except ValueError:
                raise HttpError(404, f"no broker {seg[3]!r}") from None
            if seg[4] not in ("stop", "kill", "restart"):
                raise HttpError(404, f"no action {seg[4]!r}: stop, kill or restart")
            t0 = time.monotonic()
            await self.broker_action(node, seg[4])
            return "POST", 200, "application/json", _json({"broker": node, "action": seg[4],
                                                           "took_ms": round((time.monotonic() - t0) * 1000)})
        except HttpError as e:
            return "POST", e.status, "application/json", _json({"error": e.message})
        except (ValueError, RuntimeError) as e:
            return "POST", 400, "application/json", _json({"error": str(e)})
        except asyncio.TimeoutError:
            return "POST", 500, "application/json", _json({"error": "timed out"})

    async def broker_action(self, node: int, action: str) -> None:
        """Stop (controlled), kill or restart a broker: only the console of a kafkapy.Cluster can."""
        raise HttpError(405, "stopping and restarting brokers needs the console of a kafkapy.Cluster "
                             "(kafkapy cluster --console): a broker cannot restart itself")

    def cluster_view(self, query: dict) -> dict:
        """The Cluster page's data as this broker sees it: its metadata image and its own replicas."""
        b = self.broker
        if b.cluster is None:
            raise HttpError(404, "this broker runs alone, not in a cluster")
        return cluster_view(b.cluster.image, {b.node_id: b}, served_by=b.node_id)

    @property
    def in_cluster(self) -> bool:
        return self.broker.cluster is not None

    def route(self, path: str, query: dict) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``; synchronous and bounded."""
        seg = [s for s in path.split("/") if s]
        html_type = "text/html; charset=utf-8"
        if seg == ["cluster"]:          # before any broker is looked up: a cluster's console shows it with all down
            internal = query.get("internal") == "1"
            view = self.cluster_view(query)
            if query.get("fragment") == "1":
                return 200, html_type, cluster_fragment(view, internal).encode("utf-8")
            return 200, html_type, html_cluster(view, internal)
        if seg == ["api", "cluster"]:
            return 200, "application/json", _json(self.cluster_view(query))
        b = self.broker
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", b.metrics.render(b).encode("utf-8")
        if seg and seg[0] == "api":
            return 200, "application/json", _json(self.api(seg[1:], query))
        if not seg:
            return 200, html_type, html_overview(b)
        if seg == ["trace"]:
            return 200, html_type, html_trace()
        if seg == ["groups"]:
            return 200, html_type, html_groups(b)
        if seg[0] == "groups" and len(seg) == 2:
            return 200, html_type, html_group(b, seg[1])
        if seg[0] == "topics" and len(seg) == 2:
            return 200, html_type, html_topic(b, seg[1])
        if seg[0] == "topics" and len(seg) == 3:
            return 200, html_type, html_messages(b, seg[1], _partition(seg[2]), query)
        if seg == ["favicon.ico"]:
            return 204, "image/x-icon", b""
        raise HttpError(404, f"nothing at {path}")

    def api(self, seg: list[str], query: dict):
        b = self.broker
        if seg == ["overview"]:
            return overview(b)
        if seg == ["topics"]:
            return {"topics": topic_summaries(b)}
        if len(seg) == 2 and seg[0] == "topics":
            return topic_detail(b, seg[1])
        if len(seg) == 4 and seg[0] == "topics" and seg[3] == "messages":
            limit = _int(query, "limit", BROWSE_DEFAULT_RECORDS, 1, BROWSE_MAX_RECORDS)
            return _records_json(browse(b, seg[1], _partition(seg[2]), _int(query, "offset", None), limit))
        if seg == ["groups"]:
            return {"groups": group_stats(b)}
        if len(seg) == 2 and seg[0] == "groups":
            gs = group_stats(b, seg[1], members=True)
            if not gs:
                raise HttpError(404, f"no group {seg[1]}")
            return gs[0]
        if seg == ["trace"]:
            self._watched()
            after = _int(query, "after", 0, 0)
            limit = _int(query, "limit", TRACE_MAX_POLL, 1, TRACE_MAX_POLL)
            return {"seq": self.ring.seq, "recording": self.recording, "events": self.ring.after(after, limit)}
        raise HttpError(404, "no such api endpoint")


class ClusterConsole(Console):
    """The console of a :class:`kafkapy.Cluster`, served by the cluster itself on its event loop, so that it keeps
    answering whichever broker is killed. The Cluster page reads every running broker (each replica's log end offset
    as it has it, the leaders' view of their followers) and has stop/kill/restart buttons; the other pages show the
    first running broker (``node`` on the overview); the live trace records every running broker while watched."""

    def __init__(self, cluster, host: str = "127.0.0.1", port: int = DEFAULT_PORT):
        super().__init__(None, host, port)
        self.cluster = cluster
        self._last: tuple | None = None          # (image, node id) of the last view: shown, marked, when all are down

    @property
    def broker(self):
        for n in self.cluster.nodes.values():
            if n.core is not None and n.core.paused is None:
                return n.core
        raise HttpError(503, "no broker of the cluster is running; the Cluster page (/cluster) still answers")

    @broker.setter
    def broker(self, _value) -> None:      # Console.__init__ assigns it; the running broker is looked up instead
        pass

    @property
    def in_cluster(self) -> bool:
        return True

    def cluster_view(self, query: dict) -> dict:
        c = self.cluster
        cores, nodes, best = {}, {}, None
        for i, n in c.nodes.items():
            core = n.core
            process = "down" if core is None else "paused" if core.paused is not None else "running"
            nodes[i] = {"address": f"{c.host}:{n.port}" if n.port else None, "process": process}
            if core is None:
                continue
            cores[i] = core
            if process == "running" and core.cluster is not None and \
                    (best is None or core.cluster.image.revision > best.cluster.image.revision):
                best = core
        stale = best is None
        if best is not None:
            self._last = (best.cluster.image, best.node_id)
        elif self._last is None:
            raise HttpError(503, "no broker of the cluster is running")
        image, served_by = self._last
        return cluster_view(image, cores, served_by=served_by, nodes=nodes, controls=True, stale=stale)

    async def broker_action(self, node: int, action: str) -> None:
        c = self.cluster
        if node not in c.nodes:
            raise HttpError(404, f"no broker {node} in this cluster")
        lever = {"stop": c.astop_broker, "kill": c.akill, "restart": c.arestart}[action]
        await asyncio.wait_for(lever(node), ACTION_TIMEOUT)

    # the live trace: one ring-only tracer on every running broker while watched (a restarted one gets it at the
    # next poll)

    def _running(self) -> list:
        return [n.core for n in self.cluster.nodes.values() if n.core is not None]

    def _install_tracer(self) -> None:
        if self._own_tracer is None:
            self._own_tracer = Tracer(callback=self.ring.append, write=False)
        for core in self._running():
            if core.tracer is None:
                core.tracer = self._own_tracer

    def _remove_tracer(self) -> None:
        if self._own_tracer is not None:
            for core in self._running():
                if core.tracer is self._own_tracer:
                    core.tracer = None
            self._own_tracer = None


def _partition(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise HttpError(404, f"no partition {s!r}") from None


def _json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8")
