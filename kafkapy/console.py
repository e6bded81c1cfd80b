"""Web console and Prometheus metrics, served by the broker process on its own port (``kafkapy --console``).

A small HTTP/1.1 server on asyncio streams in the broker's own event loop (no thread, no dependency, no build
step, nothing fetched from the internet: the pages are rendered here, with inline CSS and a little inline JS).
Every handler is synchronous, read-only and bounded, so it holds the loop for a short time only: message
browsing decodes at most ``BROWSE_MAX_BYTES`` of stored batches and ``BROWSE_MAX_RECORDS`` records, a trace
poll returns at most ``TRACE_MAX_POLL`` events, the other pages walk the topics, partitions and groups once.
One request per connection (``Connection: close``), request heads up to 16 KiB, at most ``MAX_CLIENTS``
connections at a time, each with a read and write timeout.

Pages (HTML): ``/`` (broker, topics, groups), ``/topics/NAME``, ``/topics/NAME/PARTITION?offset=&limit=&format=``,
``/groups``, ``/groups/ID``, ``/trace`` (live protocol trace). JSON: ``/api/overview``, ``/api/topics``,
``/api/topics/NAME``, ``/api/topics/NAME/PARTITION/messages?offset=&limit=``, ``/api/groups``,
``/api/groups/ID``, ``/api/trace?after=SEQ&limit=``. Prometheus: ``/metrics``.

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


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
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
"""

_NAV = ('<header><b>kafkapy</b><a href="/">Overview</a><a href="/groups">Groups</a><a href="/trace">Trace</a>'
        '<a href="/metrics">Metrics</a></header>')

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
                raise HttpError(405, "the console is read-only: GET and HEAD only")
            url = urllib.parse.urlsplit(target)
            path = urllib.parse.unquote(url.path)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            status, ctype, body = self.route(path, query)
            return method, status, ctype, body
        except HttpError as e:
            if method != "HEAD" and "/api/" in head[:64].decode("latin-1", "replace"):
                return method, e.status, "application/json", _json({"error": e.message})
            return method, e.status, "text/plain; charset=utf-8", (e.message + "\n").encode("utf-8")
        except Exception as e:  # noqa: BLE001
            log.exception("console request failed")
            return method, 500, "text/plain; charset=utf-8", f"{type(e).__name__}: {e}\n".encode("utf-8")

    def route(self, path: str, query: dict) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``; synchronous and bounded."""
        b = self.broker
        seg = [s for s in path.split("/") if s]
        html_type = "text/html; charset=utf-8"
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


def _partition(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise HttpError(404, f"no partition {s!r}") from None


def _json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8")
