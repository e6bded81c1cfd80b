"""The web console and /metrics: a broker with the console on, real confluent-kafka clients, and the pages and JSON
endpoints fetched over HTTP (topics with offsets and configs, browsed messages, a group's members and lag, the live
trace, Prometheus text that parses and holds the expected series and values)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import kafkapy
from kafkapy.console import BROWSE_MAX_RECORDS, TraceRing
from kafkapy.metrics import Metrics, error_codes
from kafkapy.trace import Tracer

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10


def _get(base: str, path: str, method: str = "GET") -> tuple[int, str, str]:
    req = urllib.request.Request(base.rstrip("/") + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode("utf-8")


def _json(base: str, path: str):
    status, ctype, body = _get(base, path)
    assert status == 200, (path, status, body)
    assert ctype.startswith("application/json")
    return json.loads(body)


def _html(base: str, path: str) -> str:
    status, ctype, body = _get(base, path)
    assert status == 200, (path, status, body)
    assert ctype.startswith("text/html") and body.startswith("<!doctype html>")
    return body


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> tuple[dict, dict]:
    """Strict enough parser of the text format: ({(name, frozenset(labels)): value}, {family: type})."""
    samples: dict = {}
    types: dict = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, f"family {name} declared twice"
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or family in types, f"sample {name} without a TYPE"
        key = (name, frozenset(_LABEL.findall(labels)))
        assert key not in samples, f"duplicate sample {line}"
        samples[key] = float(value)
    return samples, types


def _value(samples: dict, name: str, **labels) -> float | None:
    want = {(k, str(v)) for k, v in labels.items()}
    found = [v for (n, ls), v in samples.items() if n == name and want <= ls]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def _produce(bootstrap: str, topic: str, items, client_id: str = "console-test"):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 5})
    for partition, key, value, headers in items:
        p.produce(topic, value=value, key=key, partition=partition, headers=headers)
    assert p.flush(10) == 0


@pytest.fixture(scope="module")
def broker():
    with kafkapy.Broker(console=True, config={"auto.create.topics.enable": "false"}) as b:
        yield b


def test_console_off_by_default():
    with kafkapy.Broker() as b:
        assert b.console_url is None
        assert b.call(lambda core: (core.console, core.tracer)) == (None, None)


def test_topics_partitions_offsets_configs(broker):
    base = broker.console_url
    assert base.startswith("http://127.0.0.1:")
    broker.create_topic("orders", partitions=2, config={"retention.ms": "3600000"})
    _produce(broker.bootstrap_servers, "orders", [(0, f"k{i}".encode(), f"v{i}".encode(), None) for i in range(5)]
             + [(1, b"x", b"y", None)])
    topics = {t["name"]: t for t in _json(base, "/api/topics")["topics"]}
    assert topics["orders"]["partitions"] == 2 and topics["orders"]["messages"] == 6
    assert topics["orders"]["configs"] == {"retention.ms": "3600000"}
    assert topics["orders"]["size"] > 0
    d = _json(base, "/api/topics/orders")
    p0, p1 = d["partitions"]
    assert (p0["partition"], p0["log_start_offset"], p0["high_watermark"], p0["log_end_offset"]) == (0, 0, 5, 5)
    assert (p1["partition"], p1["high_watermark"]) == (1, 1)
    assert p0["size"] > 0 and p0["segments"] >= 1
    assert d["effective_configs"]["retention.ms"] == "3600000"
    assert d["effective_configs"]["cleanup.policy"] == "delete"

    page = _html(base, "/")
    assert '<a href="/topics/orders">orders</a>' in page and "retention.ms=3600000" in page
    page = _html(base, "/topics/orders")
    row = re.search(r"<tr><td class=n>0</td>(.*?)</tr>", page).group(1)
    assert re.findall(r"<td class=n>(\d+)</td>", row)[:4] == ["0", "5", "5", "5"]   # start, hw, leo, messages
    assert "topic override" in page and '/topics/orders/0">browse</a>' in page
    assert _get(base, "/topics/nope")[0] == 404
    assert _get(base, "/api/topics/nope")[0] == 404


def test_browse_messages(broker):
    base = broker.console_url
    broker.create_topic("browse")
    items = [(0, b"key-0", json.dumps({"n": 0, "name": "zero"}).encode(), [("trace-id", b"abc"), ("bin", b"\x00\xff")]),
             (0, None, b"plain text value", None),
             (0, b"\xde\xad\xbe\xef", b"\x00\x01\x02binary", [("h", None)])]
    _produce(broker.bootstrap_servers, "browse", items)
    page = _json(base, "/api/topics/browse/0/messages?offset=0&limit=10")
    assert (page["log_start_offset"], page["high_watermark"], page["next_offset"]) == (0, 3, 3)
    r0, r1, r2 = page["records"]
    assert r0["offset"] == 0 and r0["key"] == {"text": "key-0", "size": 5}
    assert json.loads(r0["value"]["text"]) == {"n": 0, "name": "zero"}
    assert r0["headers"] == [{"key": "trace-id", "value": {"text": "abc", "size": 3}},
                             {"key": "bin", "value": {"base64": "AP8=", "size": 2}}]
    assert r0["timestamp_type"] == "CreateTime" and abs(r0["timestamp"] / 1000 - time.time()) < 120
    assert r1["key"] is None and r1["value"]["text"] == "plain text value" and r1["headers"] == []
    assert r2["key"] == {"base64": "3q2+7w==", "size": 4} and r2["headers"] == [{"key": "h", "value": None}]
    assert r0["batch"]["compression"] == "none" and not r0["batch"]["transactional"]

    # paging: from an offset, a limit, next_offset; the default is the newest records
    page = _json(base, "/api/topics/browse/0/messages?offset=1&limit=1")
    assert [r["offset"] for r in page["records"]] == [1] and page["next_offset"] == 2
    page = _json(base, "/api/topics/browse/0/messages?limit=2")
    assert [r["offset"] for r in page["records"]] == [1, 2]
    page = _json(base, "/api/topics/browse/0/messages?offset=99")       # clamped to the high watermark
    assert page["offset"] == 3 and page["records"] == []
    assert _get(base, "/api/topics/browse/0/messages?offset=x")[0] == 400
    assert _get(base, "/api/topics/browse/7/messages")[0] == 404

    html = _html(base, "/topics/browse/0?offset=0")
    assert "key-0" in html and "plain text value" in html and "trace-id" in html
    assert "&quot;name&quot;: &quot;zero&quot;" in html          # JSON pretty-printed (auto)
    assert "de ad be ef" in html                                  # not UTF-8: shown as hex
    html = _html(base, "/topics/browse/0?offset=0&format=hex")
    assert "6b 65 79 2d 30" in html                               # "key-0" in hex
    html = _html(base, "/topics/browse/0?offset=0&format=text")
    assert "{&quot;n&quot;: 0, &quot;name&quot;: &quot;zero&quot;}" in html
    assert _get(base, "/topics/browse/0?format=yaml")[0] == 400


def test_browse_is_bounded(broker):
    base = broker.console_url
    broker.create_topic("many")
    _produce(broker.bootstrap_servers, "many", [(0, None, b"m%d" % i, None) for i in range(BROWSE_MAX_RECORDS + 100)])
    page = _json(base, f"/api/topics/many/0/messages?offset=0&limit={BROWSE_MAX_RECORDS * 10}")
    assert len(page["records"]) == BROWSE_MAX_RECORDS and page["limit"] == BROWSE_MAX_RECORDS
    assert [r["offset"] for r in page["records"]] == list(range(BROWSE_MAX_RECORDS))
    assert page["next_offset"] == BROWSE_MAX_RECORDS
    page = _json(base, f"/api/topics/many/0/messages?offset={page['next_offset']}&limit=500")
    assert [r["offset"] for r in page["records"]] == list(range(BROWSE_MAX_RECORDS, BROWSE_MAX_RECORDS + 100))


def _group(base: str, gid: str) -> dict:
    return _json(base, f"/api/groups/{gid}")


def _wait(fn, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.1)


def test_group_members_assignment_and_lag(broker):
    from confluent_kafka import Consumer, TopicPartition

    base = broker.console_url
    broker.create_topic("lagged", partitions=2)
    _produce(broker.bootstrap_servers, "lagged", [(0, None, b"a%d" % i, None) for i in range(6)]
             + [(1, None, b"b%d" % i, None) for i in range(2)])
    c = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "console-g", "client.id": "lag-client",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        c.subscribe(["lagged"])
        assert _wait(lambda: c.poll(0.2) is not None or c.assignment())
        g = _wait(lambda: (lambda g: g if g["state"] == "Stable" and g["members"] else None)(_group(base, "console-g")))
        assert g, _group(base, "console-g")
        [m] = g["members"]
        assert m["client_id"] == "lag-client" and m["assignment"] == {"lagged": [0, 1]}
        assert g["protocol_type"] == "consumer" and g["leader"] == m["member_id"]

        c.commit(offsets=[TopicPartition("lagged", 0, 2), TopicPartition("lagged", 1, 2)], asynchronous=False)
        g = _group(base, "console-g")
        offs = {(o["topic"], o["partition"]): (o["offset"], o["high_watermark"], o["lag"]) for o in g["offsets"]}
        assert offs == {("lagged", 0): (2, 6, 4), ("lagged", 1): (2, 2, 0)} and g["lag"] == 4
        html = _html(base, "/groups/console-g")
        assert "lag-client" in html and "lagged: 0, 1" in html and "Stable" in html
        assert re.search(r">lagged</a></td><td class=n>0</td><td class=n>2</td><td class=n>6</td><td class=n>4</td>",
                         html), html
        samples, _ = parse_prometheus(_get(base, "/metrics")[2])
        assert _value(samples, "kafkapy_group_lag", group="console-g", topic="lagged", partition=0) == 4
        assert _value(samples, "kafkapy_group_lag_sum", group="console-g") == 4
        assert _value(samples, "kafkapy_group_committed_offset", group="console-g", topic="lagged", partition=0) == 2
        assert _value(samples, "kafkapy_group_members", group="console-g") == 1

        c.commit(offsets=[TopicPartition("lagged", 0, 6)], asynchronous=False)      # the consumer catches up
        assert _group(base, "console-g")["lag"] == 0
        assert "console-g" in _html(base, "/groups") and "console-g" in _json(base, "/api/groups")["groups"][0]["group_id"]
    finally:
        c.close()
    g = _wait(lambda: (lambda g: g if g["state"] == "Empty" else None)(_group(base, "console-g")))
    assert g and g["members"] == [] and g["lag"] == 0
    assert _get(base, "/groups/none-such")[0] == 404


def test_live_trace(broker):
    base = broker.console_url
    broker.create_topic("traced")
    first = _json(base, "/api/trace")          # a viewer: the console records from now on
    assert first["recording"] is True
    assert broker.call(lambda core: core.tracer) is not None
    _produce(broker.bootstrap_servers, "traced", [(0, b"k", b"traced-value", None)], client_id="trace-client")
    events = _json(base, f"/api/trace?after={first['seq']}")["events"]
    mine = [e for e in events if e["client_id"] == "trace-client"]
    produce = [e for e in mine if e["api"] == "Produce"]
    assert [e["direction"] for e in produce] == ["request", "response"], [(e["api"], e["direction"]) for e in mine]
    req, resp = produce
    assert req["body"]["topic_data"][0]["name"] == "traced"
    assert req["body"]["topic_data"][0]["partition_data"][0]["records"]["count"] == 1
    assert resp["correlation_id"] == req["correlation_id"] and "elapsed_ms" in resp
    assert resp["body"]["responses"][0]["partition_responses"][0]["error_code"] == 0
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and seqs[0] > first["seq"]
    again = _json(base, f"/api/trace?after={seqs[-1]}")
    assert all(e["seq"] > seqs[-1] for e in again["events"])
    page = _html(base, "/trace")
    assert "/api/trace?after=" in page and "<script>" in page


def test_trace_ring_bounded():
    ring = TraceRing(size=5)
    for i in range(12):
        ring.append({"i": i})
    assert [e["i"] for e in ring.after(0)] == [7, 8, 9, 10, 11]
    assert [e["seq"] for e in ring.after(10)] == [11, 12]
    assert ring.after(12) == [] and ring.after(99) == []
    assert [e["i"] for e in ring.after(0, limit=2)] == [10, 11]


def test_console_feeds_from_an_existing_tracer():
    events = []
    with kafkapy.Broker(console=True, trace=Tracer(callback=events.append, write=False)) as b:
        b.create_topic("both")
        _produce(b.bootstrap_servers, "both", [(0, None, b"v", None)], client_id="both-client")
        ring = _json(b.console_url, "/api/trace")
        assert ring["recording"]
        assert any(e["api"] == "Produce" and e["client_id"] == "both-client" for e in ring["events"])
        assert any(e["api"] == "Produce" and e["client_id"] == "both-client" for e in events)


def test_metrics_prometheus_text(broker):
    from confluent_kafka import Consumer

    base = broker.console_url
    broker.create_topic("metered")
    _produce(broker.bootstrap_servers, "metered", [(0, b"k", b"v" * 100, None) for _ in range(3)])
    c = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "metrics-g"})
    try:
        md = c.list_topics(topic="no-such-topic", timeout=10)     # auto-create is off: UNKNOWN_TOPIC_OR_PARTITION
        assert md.topics["no-such-topic"].error is not None
    finally:
        c.close()
    status, ctype, text = _get(base, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    samples, types = parse_prometheus(text)
    assert types["kafkapy_requests_total"] == "counter" and types["kafkapy_request_latency_seconds"] == "histogram"
    assert types["kafkapy_partition_high_watermark"] == "gauge"
    produced = sum(v for (n, ls), v in samples.items() if n == "kafkapy_requests_total" and ("api", "Produce") in ls)
    assert produced >= 1
    assert _value(samples, "kafkapy_errors_total", api="Metadata", error="UNKNOWN_TOPIC_OR_PARTITION") >= 1
    assert _value(samples, "kafkapy_partition_high_watermark", topic="metered", partition=0) == 3
    assert _value(samples, "kafkapy_partition_log_start_offset", topic="metered", partition=0) == 0
    assert _value(samples, "kafkapy_partition_log_size_bytes", topic="metered", partition=0) > 300
    assert _value(samples, "kafkapy_bytes_in_total") > 300 and _value(samples, "kafkapy_bytes_out_total") > 0
    assert _value(samples, "kafkapy_connections_total") >= 1 and _value(samples, "kafkapy_connections") >= 0
    # histogram: cumulative buckets ending in +Inf == _count, for every api seen
    for (n, ls), count in samples.items():
        if n != "kafkapy_request_latency_seconds_count":
            continue
        api = dict(ls)["api"]
        buckets = sorted(((float(dict(bl)["le"]), v) for (bn, bl), v in samples.items()
                          if bn == "kafkapy_request_latency_seconds_bucket" and ("api", api) in bl))
        values = [v for _, v in buckets]
        assert values == sorted(values) and buckets[-1] == (float("inf"), count)
        assert _value(samples, "kafkapy_request_latency_seconds_sum", api=api) >= 0
    produce_count = _value(samples, "kafkapy_request_latency_seconds_count", api="Produce")
    assert produce_count == produced


def test_metrics_counting_unit():
    from wire.messages import metadata_response as MR
    from wire.messages import produce_response as PR

    m = Metrics()
    for s in (0.00005, 0.0003, 0.0003, 2.0, 100.0):
        m.observe(0, 9, s)
    h = m.latency[0]
    assert sum(h[:-1]) == 5 and h[0] == 1 and h[-2] == 1 and abs(h[-1] - 102.00065) < 1e-9
    assert m.requests == {(0, 9): 5}
    resp = MR.MESSAGE(topics=[MR.MetadataResponseTopic(name="a", error_code=3),
                              MR.MetadataResponseTopic(name="b", partitions=[
                                  MR.MetadataResponsePartition(partition_index=0, error_code=9),
                                  MR.MetadataResponsePartition(partition_index=1, error_code=9)])])
    assert error_codes(resp) == {3: 1, 9: 2}
    pr = PR.MESSAGE(responses=[PR.TopicProduceResponse(name="t", partition_responses=[
        PR.PartitionProduceResponse(index=0, error_code=0)])])
    assert error_codes(pr) == {}
    from wire import protocol

    m.responded(3, resp, protocol.encode_response(3, 12, 7, resp))
    assert m.errors == {(3, 3): 1, (3, 9): 2}
    assert m.bytes_out == sum(map(len, protocol.encode_response(3, 12, 7, resp)))


def test_http_edges(broker):
    base = broker.console_url
    assert _get(base, "/nothing-here")[0] == 404
    assert _get(base, "/api/nothing")[0] == 404 and "error" in json.loads(_get(base, "/api/nothing")[2])
    assert _get(base, "/", method="POST")[0] == 405
    status, ctype, body = _get(base, "/metrics", method="HEAD")
    assert status == 200 and body == ""
    host, port = base[len("http://"):].rstrip("/").split(":")
    # a client that sends nothing does not hold up the broker; garbage gets a 400
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as idle:
        t0 = time.monotonic()
        assert _json(base, "/api/overview")["topics"] >= 1
        from confluent_kafka.admin import AdminClient

        assert "orders" in AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=10).topics
        assert time.monotonic() - t0 < 5
        idle.sendall(b"\r\n\r\n")
        assert idle.recv(100).startswith(b"HTTP/1.1 400")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as big:
        big.sendall(b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 20000 + b"\r\n\r\n")
        assert big.recv(100).startswith(b"HTTP/1.1 431")


def test_cli_console_and_port_in_use(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "kafkapy", "--host", "127.0.0.1", "--port", "0", "--storage",
                             "memory", "--console", "--console-port", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("kafkapy ready at 127.0.0.1:"), line
        url = None
        deadline = time.monotonic() + TIMEOUT
        while url is None and time.monotonic() < deadline:
            m = re.search(r"console at (http://\S+/)", proc.stderr.readline())
            url = m and m.group(1)
        assert url, "no 'console at' log line"
        samples, _ = parse_prometheus(_get(url, "/metrics")[2])
        assert _value(samples, "kafkapy_up") == 1
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        second = subprocess.run([sys.executable, "-m", "kafkapy", "--host", "127.0.0.1", "--port", "0", "--storage",
                                 "memory", "--console", "--console-port", str(port)], cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 2 and "console: cannot listen" in second.stderr
        assert "ready" not in second.stdout
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_embedded_subprocess_console():
    with kafkapy.Broker(mode="subprocess", console=True) as b:
        assert b.console_url and b.console_url.startswith("http://127.0.0.1:")
        b.create_topic("sub-topic")
        topics = [t["name"] for t in _json(b.console_url, "/api/topics")["topics"]]
        assert "sub-topic" in topics
