#!/usr/bin/env python3
"""Java producer benchmark for idempotent and transactional producing (issue 5), against kafkapy --storage memory.

    .venv/bin/python scripts/bench_txn.py [--records 200000] [--size 100] [--repeats 3]

One broker, one run, three modes of the official Java client (kafka-clients 3.9.1, compat_tests/java/TxnClient.java
``bench``): the default producer config (idempotence on, acks=all), the same with enable.idempotence=false, and
transactions of 100 records each (initTransactions / beginTransaction / 100 x send / commitTransaction). Each mode
produces to its own 1-partition topic; timing is inside the JVM (first send of the timed part to the last
acknowledgement), after an untimed 2,000-record warm-up, so JVM start-up and the first metadata round trips are
not counted. The median of ``--repeats`` runs is reported, with ratios against the non-idempotent producer.
Not a test: the figures depend on the machine; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bench_broker import Running, free_port  # noqa: E402

MODES = ("plain", "idempotent", "txn100")


def java_classpath() -> str:
    spec = importlib.util.spec_from_file_location("kafkapy_java_client", ROOT / "scripts" / "java_client.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ensure_compiled()


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)


def run_mode(cp: str, bootstrap: str, topic: str, mode: str, n: int, size: int) -> float:
    java = shutil.which("java") or "java"
    proc = subprocess.run([java, "-cp", cp, "TxnClient", bootstrap, "bench", topic, mode, str(n), str(size)],
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("bench ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"TxnClient bench {mode} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-3000:]}")
    _, m, count, ms = lines[-1].split()
    assert m == mode and int(count) == n
    return int(ms) / 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=100, help="value size in bytes")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cp = java_classpath()
    port = free_port()
    b = Running("kafkapy (memory)", [sys.executable, "-m", "kafkapy", "--host", "127.0.0.1", "--port", str(port),
                                     "--storage", "memory", "--log-level", "WARNING"], port)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    try:
        for r in range(args.repeats):
            for mode in MODES:
                topic = f"bench-{mode}-{r}-{int(time.time() * 1000)}"
                create_topic(b.bootstrap, topic)
                secs = run_mode(cp, b.bootstrap, topic, mode, args.records, args.size)
                times[mode].append(secs)
                print(f"  run {r + 1} {mode:10} {args.records / secs:>10.0f} records/s", file=sys.stderr, flush=True)
    finally:
        b.stop()
    med = {m: statistics.median(v) for m, v in times.items()}
    rate = {m: args.records / med[m] for m in MODES}
    print(f"Java kafka-clients producer -> kafkapy --storage memory; {args.records} x {args.size}-byte records per "
          f"run, median of {args.repeats}, timed inside the JVM after a 2,000-record warm-up")
    print(f"{'mode':44}{'records/s':>12}{'MB/s':>9}{'vs plain':>10}")
    labels = {"plain": "enable.idempotence=false (acks=all)",
              "idempotent": "default config (idempotent, acks=all)",
              "txn100": "transactional, 100 records per transaction"}
    for m in MODES:
        print(f"{labels[m]:44}{rate[m]:>12.0f}{rate[m] * args.size / 1e6:>9.2f}{rate[m] / rate['plain']:>10.2f}")
    print(f"idempotent/plain = {rate['idempotent'] / rate['plain']:.2f}, "
          f"txn100/idempotent = {rate['txn100'] / rate['idempotent']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
