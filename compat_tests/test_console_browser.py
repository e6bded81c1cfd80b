"""The web console in a real headless browser (Debian's chromium): a broker with the console on, real confluent-kafka
clients, and the pages as Chromium renders them (``--dump-dom`` after the page's scripts ran, ``--screenshot``).

- a produced message with a distinctive key and value shows in the rendered message page of its partition;
- a consumer group's committed offsets and lag show on its page, and after the consumer consumes more and
  commits, the page loaded again shows the new offset and lag;
- the live trace page, whose rows exist only once its script has polled ``/api/trace``, lists the producer's
  requests;
- screenshots of those pages are saved (under the test's tmp dir, and copied to ``$KAFKAPY_ARTIFACTS`` when
  set) and checked to be real pictures of the page: valid PNGs of the window size, many colours, the dark
  header bar above the light page background.

Skips only when no Chromium binary exists (``scripts/test`` installs Debian's ``chromium`` when run as root);
``KAFKAPY_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

import kafkapy

WIDTH, HEIGHT = 1280, 900
BROWSER_TIMEOUT = 60          # seconds for one Chromium run (a run takes about a second here)
HEADER_RGB = (0x1D, 0x23, 0x30)   # the console's header bar (#1d2330)
PAGE_RGB = (0xF6, 0xF7, 0xF9)     # its page background (#f6f7f9)

pytestmark = pytest.mark.timeout(300)


def chromium_binary() -> str | None:
    env = os.environ.get("KAFKAPY_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless Chromium run per page, each with a new empty profile (flags as Debian's chromium needs
    them in a closed network, as root)."""

    def __init__(self, binary: str, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        self.runs = 0

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        self.runs += 1
        profile = self.workdir / f"profile{self.runs}"
        profile.mkdir(parents=True)
        flags = ["--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
                 f"--user-data-dir={profile}"]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")
        try:
            r = subprocess.run([self.binary, *flags, *args], capture_output=True, text=True,
                               timeout=BROWSER_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"chromium did not finish within {BROWSER_TIMEOUT} s: {args}") from e
        assert r.returncode == 0, f"chromium exited {r.returncode}: {r.stderr[-3000:]}"
        return r

    def dom(self, url: str, budget_ms: int = 3000) -> str:
        """The DOM after the page loaded and its scripts ran for ``budget_ms`` of virtual time."""
        out = self._run(f"--virtual-time-budget={budget_ms}", "--dump-dom", url).stdout
        assert out.lstrip().lower().startswith("<!doctype html>") or "<html" in out[:200].lower(), out[:500]
        return out

    def screenshot(self, url: str, path: Path, budget_ms: int = 2000) -> Path:
        self._run(f"--window-size={WIDTH},{HEIGHT}", f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", url)
        assert path.exists(), f"chromium wrote no screenshot to {path}"
        return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary (chromium, chromium-browser, google-chrome) on PATH and KAFKAPY_CHROMIUM "
                    "unset: install Debian's chromium (scripts/test does when run as root)")
    return Chromium(binary, tmp_path_factory.mktemp("chromium"))


@pytest.fixture(scope="module")
def broker():
    # trace=callable: the console's live trace ring is fed from the start, not only from the first viewer on
    with kafkapy.Broker(console=True, trace=lambda ev: None) as b:
        yield b


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Where screenshots go: the test's tmp dir, and a copy in $KAFKAPY_ARTIFACTS when set."""
    local = tmp_path_factory.mktemp("screenshots")
    extra = os.environ.get("KAFKAPY_ARTIFACTS")
    saved: list[Path] = []

    def save(shot: Path) -> Path:
        saved.append(shot)
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy2(shot, Path(extra) / shot.name)
        return shot

    save.dir = local
    save.saved = saved
    return save


# ------------------------------------------------------------------ reading what the browser rendered

class _Tables(html.parser.HTMLParser):
    """Every <table> of a document as a list of rows of cell texts; plus the whole visible text."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self.summaries: list[str] = []      # the trace page's <summary> lines
        self._cell: list[str] | None = None
        self._summary: list[str] | None = None
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "summary":
            self._summary = []

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        elif tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "summary" and self._summary is not None:
            self.summaries.append(" ".join("".join(self._summary).split()))
            self._summary = None

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._summary is not None:
            self._summary.append(data)


def parse(dom: str) -> _Tables:
    p = _Tables()
    p.feed(dom)
    p.close()
    return p


def table_with(doc: _Tables, *headers: str) -> list[dict]:
    """The rows (as {header: cell}) of the first table whose header row holds all of ``headers``."""
    for t in doc.tables:
        if t and all(h in t[0] for h in headers):
            return [dict(zip(t[0], row)) for row in t[1:]]
    raise AssertionError(f"no table with columns {headers} in {[t[0] for t in doc.tables if t]}")


# ------------------------------------------------------------------ PNG checks (zlib only)

def decode_png(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    """(width, height, rows of RGB pixels) of an 8-bit RGB/RGBA non-interlaced PNG, chunk CRCs checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    else:
        raise AssertionError("PNG without IEND")
    assert ihdr is not None and idat, "PNG without IHDR or IDAT"
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, f"unexpected PNG format {ihdr}"
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = w * bpp
    assert len(raw) == h * (stride + 1), "PNG data size does not match its header"
    prev = bytearray(stride)
    rows = []
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 255
        elif f == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        else:
            assert f == 0, f"bad PNG filter type {f}"
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, bpp)])
        prev = line
    return w, h, rows


def check_screenshot(path: Path) -> None:
    """A real picture of a console page: window-sized, many colours, the dark header above the light page."""
    data = path.read_bytes()
    assert len(data) > 10_000, f"{path} is only {len(data)} bytes"
    w, h, rows = decode_png(data)
    assert (w, h) == (WIDTH, HEIGHT)
    colours = {px for row in rows for px in row}
    assert len(colours) > 16, f"{path}: only {len(colours)} colours, a blank page?"
    assert rows[5][w - 5] == HEADER_RGB, f"header bar not drawn: {rows[5][w - 5]}"
    assert rows[h - 5][w - 5] == PAGE_RGB, f"page background not drawn: {rows[h - 5][w - 5]}"
    text_rows = sum(1 for row in rows[60:] if len(set(row)) > 2)     # rows below the header that hold text
    assert text_rows > 20, f"{path}: almost nothing drawn below the header ({text_rows} rows)"


# ------------------------------------------------------------------ the tests

def _produce(bootstrap: str, topic: str, items, client_id: str) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 5})
    for key, value in items:
        p.produce(topic, value=value, key=key, partition=0, headers=[("source", b"browser-test")])
    assert p.flush(10) == 0


def test_produced_message_in_the_browser(broker, browser, artifacts):
    broker.create_topic("browser-topic", partitions=1)
    value = f"browser-visible-{time.time_ns()}"
    _produce(broker.bootstrap_servers, "browser-topic", [(b"filler", b"first")] * 3 + [(b"the-key", value.encode())],
             client_id="browser-producer")
    url = broker.console_url + "topics/browser-topic/0?offset=0"

    doc = parse(browser.dom(url))
    rows = table_with(doc, "offset", "key", "value", "headers")
    assert [r["offset"] for r in rows] == ["0", "1", "2", "3"]
    last = rows[-1]
    assert last["key"] == "the-key" and last["value"].startswith(value), last
    assert "source: browser-test" in last["headers"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC ?CreateTime", last["timestamp"]), last
    assert "high watermark 4" in "".join(doc.text)

    # the overview lists the topic with its message count
    topics = table_with(parse(browser.dom(broker.console_url)), "topic", "partitions", "messages")
    assert {"topic": "browser-topic", "partitions": "1", "messages": "4"}.items() <= \
        next(r for r in topics if r["topic"] == "browser-topic").items()

    shot = artifacts(browser.screenshot(url, artifacts.dir / "console-messages.png"))
    check_screenshot(shot)


def _consume(consumer, n: int, timeout: float = 20) -> list:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = consumer.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m)
    assert len(got) == n, f"consumed {len(got)} of {n}"
    return got


def test_group_lag_in_the_browser_changes_after_commit(broker, browser, artifacts):
    from confluent_kafka import Consumer

    broker.create_topic("browser-lag", partitions=1)
    _produce(broker.bootstrap_servers, "browser-lag", [(None, b"m%d" % i) for i in range(10)],
             client_id="browser-producer")
    url = broker.console_url + "groups/browser-group"
    c = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "browser-group",
                  "client.id": "browser-consumer", "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "max.poll.interval.ms": 300000, "session.timeout.ms": 45000})
    try:
        c.subscribe(["browser-lag"])
        got = _consume(c, 3)
        c.commit(message=got[-1], asynchronous=False)            # committed 3 of 10: lag 7

        doc = parse(browser.dom(url))
        [info] = table_with(doc, "state", "generation", "lag")
        assert info["state"] == "Stable" and info["lag"] == "7", info
        [member] = table_with(doc, "member id", "client id", "assignment")
        assert member["client id"] == "browser-consumer" and member["assignment"] == "browser-lag: 0", member
        [off] = table_with(doc, "topic", "committed offset", "lag")
        assert (off["topic"], off["partition"], off["committed offset"], off["high watermark"], off["lag"]) == \
            ("browser-lag", "0", "3", "10", "7"), off
        groups = table_with(parse(browser.dom(broker.console_url + "groups")), "group", "state", "lag")
        assert next(g for g in groups if g["group"] == "browser-group")["lag"] == "7"
        before = artifacts(browser.screenshot(url, artifacts.dir / "console-group-lag7.png"))

        got = _consume(c, 5)                                     # the consumer moves on and commits: lag 2
        c.commit(message=got[-1], asynchronous=False)

        doc = parse(browser.dom(url))                            # the page loaded again
        [info] = table_with(doc, "state", "generation", "lag")
        assert info["lag"] == "2", info
        [off] = table_with(doc, "topic", "committed offset", "lag")
        assert (off["committed offset"], off["high watermark"], off["lag"]) == ("8", "10", "2"), off
        after = artifacts(browser.screenshot(url, artifacts.dir / "console-group-lag2.png"))
    finally:
        c.close()
    check_screenshot(before)
    check_screenshot(after)
    assert before.read_bytes() != after.read_bytes()


def test_live_trace_page_runs_its_script(broker, browser, artifacts):
    broker.create_topic("browser-trace", partitions=1)
    _produce(broker.bootstrap_servers, "browser-trace", [(b"k", b"traced")], client_id="browser-tracer")
    url = broker.console_url + "trace"
    doc = parse(browser.dom(url))
    text = " ".join("".join(doc.text).split())
    assert "recording · last event #" in text, text[:2000]          # the status line the page's poll() writes
    # one line per request and response, "TIME → API vN #CORRELATION CLIENT PEER [ELAPSED ms]", newest first
    mine = [s.split(" ", 1)[1] for s in doc.summaries if " browser-tracer " in s]
    assert any(s.startswith("→ Produce v") for s in mine), doc.summaries
    assert any(s.startswith("← Produce v") and s.endswith(" ms") for s in mine), doc.summaries
    check_screenshot(artifacts(browser.screenshot(url, artifacts.dir / "console-trace.png")))


def test_cluster_page_after_a_failover(browser, artifacts):
    """The Cluster page of a kafkapy.Cluster's console after its leader was killed: the page's script polled its
    tables again (status line), the killed broker shows down, the partition has a new leader and a smaller ISR."""
    with kafkapy.Cluster(3, console=True) as c:
        c.create_topic("browser-failover", 1, 3)
        _produce(c.bootstrap_servers, "browser-failover", [(b"k", b"v")] * 5, client_id="browser-cluster")
        victim = c.leader_for("browser-failover", 0)
        c.kill(victim)
        c.wait_for(lambda cl: cl._any_core().cluster.image.leader_of("browser-failover", 0) not in (victim, -1))
        url = c.console_url + "cluster"
        doc = parse(browser.dom(url))
        text = " ".join("".join(doc.text).split())
        assert "live · " in text, text[:2000]                  # written by the page's poll() after a refresh
        brokers = {r["broker"]: r for r in table_with(doc, "broker", "address", "state", "actions")}
        assert brokers[str(victim)]["state"] == "down" and brokers[str(victim)]["actions"] == "restart"
        assert all(r["state"].startswith("alive") for b, r in brokers.items() if b != str(victim))
        part = next(r for r in table_with(doc, "topic", "leader", "ISR", "high watermark")
                    if r["topic"] == "browser-failover")
        assert part["leader"] not in (str(victim), "offline") and part["high watermark"] == "5", part
        assert str(victim) not in part["ISR"].split(", ") and part["offline"] == str(victim), part
        check_screenshot(artifacts(browser.screenshot(url, artifacts.dir / "console-cluster-failover.png")))
