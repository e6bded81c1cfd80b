"""The web console's Cluster page: ``kafkapy.Cluster(console=True)`` serves it from the cluster's own loop, so it
keeps answering whichever broker dies. Over HTTP: the JSON view (brokers, leader, leader epoch, replicas' log end
offsets, ISR, offline replicas, high watermark) shows the leader move after a kill asked through the POST endpoint
and the ISR come back after a restart through it; a controlled stop moves leaderships first; the actions need the
console's header; values are escaped in the HTML; a broker's own console shows its view and has no actions;
``kafkapy cluster --console`` prints the console's URL. Every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import kafkapy
from kafkapy.console import Console, cluster_fragment, html_cluster

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10
TOPIC = "watched"
RECORDS = 20

pytestmark = pytest.mark.timeout(240)


def _req(base: str, path: str, method: str = "GET", headers: dict | None = None, timeout: float = TIMEOUT):
    req = urllib.request.Request(base.rstrip("/") + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode("utf-8")


def _view(base: str) -> dict:
    status, ctype, body = _req(base, "/api/cluster")
    assert status == 200 and ctype.startswith("application/json"), (status, body)
    return json.loads(body)


def _action(base: str, node: int, action: str) -> dict:
    status, _, body = _req(base, f"/api/cluster/brokers/{node}/{action}", "POST", {"X-Kafkapy-Console": "1"},
                           timeout=90)
    assert status == 200, (status, body)
    return json.loads(body)


def _part(view: dict, topic: str = TOPIC, p: int = 0) -> dict:
    return next(x for x in view["partitions"] if x["topic"] == topic and x["partition"] == p)


def _until(base: str, cond, what: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        v = _view(base)
        if cond(v):
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}; last view {json.dumps(_part(v))}")
        time.sleep(0.1)


def _synced(v: dict, n: int, isr: list[int]) -> bool:
    """The partition's ISR is ``isr``, its high watermark ``n``, and every ISR member has ``n`` (as it has it and
    as the leader sees it)."""
    p = _part(v)
    return p["isr"] == isr and p["high_watermark"] == n and all(
        r["log_end_offset"] == n and r["log_end_offset_at_leader"] == n for r in p["replicas"] if r["id"] in isr)


@pytest.fixture(scope="module")
def cluster():
    with kafkapy.Cluster(3, console=True) as c:
        c.create_topic(TOPIC, 1, 3, config={"min.insync.replicas": 2})
        from confluent_kafka import Producer

        prod = Producer({"bootstrap.servers": c.bootstrap_servers, "acks": "all", "linger.ms": 5})
        for i in range(RECORDS):
            prod.produce(TOPIC, f"record-{i}".encode(), partition=0)
        assert prod.flush(20) == 0
        yield c


def test_view_kill_through_the_console_then_restart(cluster):
    base = cluster.console_url
    v = _until(base, lambda v: _synced(v, RECORDS, [1, 2, 3]), "all three replicas in sync")
    assert [b["id"] for b in v["brokers"]] == [1, 2, 3]
    assert all(b["alive"] and b["state"] == "alive" and b["broker_epoch"] > 0 for b in v["brokers"])
    assert [b["id"] for b in v["brokers"] if b["controller"]] == [v["controller"]]
    assert v["controls"] is True and v["stale"] is False and v["truncated"] is False
    p = _part(v)
    leader, epoch = p["leader"], p["leader_epoch"]
    assert leader in (1, 2, 3) and p["offline_replicas"] == [] and sorted(r["id"] for r in p["replicas"]) == [1, 2, 3]
    assert [r["id"] for r in p["replicas"] if r["leader"]] == [leader]

    t0 = time.monotonic()
    old_epoch = next(b["broker_epoch"] for b in v["brokers"] if b["id"] == leader)
    done = _action(base, leader, "kill")
    assert done["broker"] == leader and done["action"] == "kill" and done["took_ms"] >= 0
    v = _view(base)                                                  # the console outlived the broker it killed
    dead = next(b for b in v["brokers"] if b["id"] == leader)
    assert dead["process"] == "down" and dead["state"] in ("down, lease not expired", "down")
    v = _until(base, lambda v: _part(v)["leader"] not in (leader, -1), "a new leader elected")
    took = time.monotonic() - t0
    p = _part(v)
    assert p["leader_epoch"] == epoch + 1
    assert leader not in p["isr"] and p["offline_replicas"] == [leader] and len(p["isr"]) == 2
    dead = next(b for b in v["brokers"] if b["id"] == leader)
    assert dead == {**dead, "alive": False, "state": "down", "broker_epoch": None}
    gone = next(r for r in p["replicas"] if r["id"] == leader)
    assert gone["log_end_offset"] is None and gone["alive"] is False and gone["in_isr"] is False
    assert p["high_watermark"] == RECORDS                            # nothing acknowledged was lost
    assert took < 15, took

    new_leader = p["leader"]
    _action(base, leader, "restart")
    v = _until(base, lambda v: _synced(v, RECORDS, [1, 2, 3]), "the restarted broker back in the ISR")
    p = _part(v)
    assert p["leader"] == new_leader and p["leader_epoch"] == epoch + 1 and p["offline_replicas"] == []
    back = next(b for b in v["brokers"] if b["id"] == leader)
    assert back["alive"] and back["state"] == "alive" and back["broker_epoch"] > old_epoch    # registered again


def test_controlled_stop_moves_leadership_first(cluster):
    base = cluster.console_url
    v = _until(base, lambda v: len(_part(v)["isr"]) == 3, "a full ISR")
    leader = _part(v)["leader"]
    _action(base, leader, "stop")
    v = _until(base, lambda v: _part(v)["leader"] not in (leader, -1), "leadership moved", timeout=5)
    assert leader not in _part(v)["isr"]
    _action(base, leader, "restart")
    _until(base, lambda v: _synced(v, RECORDS, [1, 2, 3]), "back in the ISR after a controlled stop")


def test_actions_need_the_header_and_a_known_broker(cluster):
    base = cluster.console_url
    st, ctype, body = _req(base, "/api/cluster/brokers/1/kill", "POST")
    assert st == 403 and ctype == "application/json" and "x-kafkapy-console" in json.loads(body)["error"]
    assert _req(base, "/api/cluster/brokers/9/kill", "POST", {"X-Kafkapy-Console": "1"})[0] == 404
    assert _req(base, "/api/cluster/brokers/x/kill", "POST", {"X-Kafkapy-Console": "1"})[0] == 404
    assert _req(base, "/api/cluster/brokers/1/explode", "POST", {"X-Kafkapy-Console": "1"})[0] == 404
    assert _req(base, "/api/topics", "POST", {"X-Kafkapy-Console": "1"})[0] == 405
    assert _req(base, "/api/cluster/brokers/1/kill")[0] == 404          # a GET does nothing
    assert all(b["process"] == "running" for b in _view(base)["brokers"])


def test_cluster_page_html(cluster):
    base = cluster.console_url
    st, ctype, page = _req(base, "/cluster")
    assert st == 200 and ctype.startswith("text/html") and page.startswith("<!doctype html>")
    assert '<a href="/cluster">Cluster</a>' in page and "<h2>Brokers</h2>" in page and "<h2>Partitions</h2>" in page
    assert "data-act=kill data-node=1" in page and "data-act=restart data-node=3" in page
    assert "/api/cluster/brokers/" in page and "setTimeout(poll,1000)" in page
    assert "http://" not in page and "https://" not in page              # nothing fetched from elsewhere
    assert f'href="/topics/{TOPIC}"' in page
    st, _, frag = _req(base, "/cluster?fragment=1")
    assert st == 200 and frag.startswith("<p class=muted>controller ") and "<html" not in frag
    # the other pages are served through a running broker, with the Cluster link
    st, _, overview = _req(base, "/")
    assert st == 200 and '<a href="/cluster">Cluster</a>' in overview and TOPIC in overview


def test_html_escapes_the_view():
    evil = "<script>alert(1)</script>"
    rep = {"id": 1, "leader": True, "in_isr": True, "alive": True, "log_end_offset": 3, "high_watermark": 3,
           "log_end_offset_at_leader": 3}
    view = {"served_by": 1, "controller": 1, "controller_epoch": 1, "revision": 9, "stale": False, "controls": True,
            "truncated": False,
            "brokers": [{"id": 1, "address": f"'\"><img src=x onerror=alert(1)>{evil}", "alive": True,
                         "state": "alive", "process": "running", "controller": True, "broker_epoch": 2,
                         "shutting_down": False}],
            "partitions": [{"topic": evil, "partition": 0, "internal": False, "leader": 1, "leader_epoch": 0,
                            "replicas": [rep], "isr": [1], "offline_replicas": [], "high_watermark": 3}]}
    internal = {**view["partitions"][0], "topic": "__consumer_offsets", "internal": True}
    view["partitions"].append(internal)
    assert "__consumer_offsets" not in cluster_fragment(view, False) and "?internal=1" in cluster_fragment(view, False)
    assert "__consumer_offsets" in cluster_fragment(view, True)
    for out in (cluster_fragment(view, False), html_cluster(view, False).decode()):
        assert evil not in out and "<img" not in out
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out and "&lt;img src=x onerror=alert(1)&gt;" in out
        assert "/topics/%3Cscript%3Ealert%281%29%3C%2Fscript%3E" in out


def test_a_brokers_own_console_in_a_cluster_has_the_view_but_no_actions(cluster):
    async def start(c):
        console = Console(c.core(2), "127.0.0.1", 0)
        await console.start()
        return console
    console = cluster.call(start)
    try:
        base = console.url
        v = _view(base)
        assert v["served_by"] == 2 and v["controls"] is False
        assert [b["id"] for b in v["brokers"]] == [1, 2, 3]
        p = _part(v)
        mine = next(r for r in p["replicas"] if r["id"] == 2)
        assert mine["log_end_offset"] == RECORDS
        others = [r for r in p["replicas"] if r["id"] != 2]
        assert all(r["log_end_offset"] is None for r in others)       # another broker's log is not readable here
        page = _req(base, "/cluster")[2]
        assert "data-act=" not in page and "kafkapy cluster --console" in page
        st, _, body = _req(base, "/api/cluster/brokers/1/kill", "POST", {"X-Kafkapy-Console": "1"})
        assert st == 405 and "kafkapy.Cluster" in json.loads(body)["error"]
    finally:
        cluster.call(lambda c: console.stop())


def test_single_broker_console_has_no_cluster_page():
    with kafkapy.Broker(console=True) as b:
        assert _req(b.console_url, "/api/cluster")[0] == 404
        assert '<a href="/cluster">' not in _req(b.console_url, "/")[2]


def test_all_brokers_down_the_view_stays_marked_stale():
    with kafkapy.Cluster(1, console=True) as c:
        base = c.console_url
        assert _view(base)["stale"] is False
        _action(base, 1, "kill")
        v = _view(base)
        assert v["stale"] is True and v["brokers"][0]["process"] == "down"
        assert "no broker running" in _req(base, "/cluster")[2]
        st, _, body = _req(base, "/")
        assert st == 503 and "/cluster" in body
        _action(base, 1, "restart")
        assert _view(base)["stale"] is False and _req(base, "/")[0] == 200


def test_cli_cluster_console_prints_its_url():
    p = subprocess.Popen([sys.executable, "-m", "kafkapy", "cluster", "--brokers", "2", "--port", "0", "--console",
                          "--console-port", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ))
    try:
        assert p.stdout.readline().startswith("kafkapy cluster ready at ")
        line = p.stdout.readline()
        assert line.startswith("kafkapy cluster console at http://127.0.0.1:") and line.rstrip().endswith("/cluster")
        url = line.split(" at ", 1)[1].strip()
        st, _, page = _req(url, "")
        assert st == 200 and "data-act=kill data-node=2" in page
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
