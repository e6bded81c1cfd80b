#!/usr/bin/env python3
"""Failover benchmark: an in-process ``kafkapy.Cluster`` (3 brokers, memory storage), confluent-kafka clients.

    .venv/bin/python scripts/bench_failover.py [--kills 5] [--messages 200000] [--session-ms 3000]

1. Failover time: an idempotent acks=all producer writes to a topic with one partition, replication factor 3 and
   min.insync.replicas=2, one record every millisecond. The partition's leader is killed (``Cluster.kill``: no word
   to the cluster, its lease expires after ``broker.session.timeout.ms``); the time from the kill to the
   acknowledgement of the first record produced after it is the failover time. The broker is restarted and the ISR
   waited for between kills; medians and extremes of --kills kills. Target (issue 12): under the lease time + 1 s.
2. Throughput at replication factor 3 against 1, in the same run and cluster: N x 100-byte records produced with
   acks=all, linger.ms=5 to a 3-partition topic of each replication factor (RF 3 with min.insync.replicas=2), msgs/s;
   then consumed back (read_committed), msgs/s. Alternating rounds (--rounds), medians.
Not a test: the figures depend on the machine (all brokers, the clients and the benchmark share its cores); compare
the ratios of one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

import kafkapy  # noqa: E402


def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def failover_times(cluster, kills: int) -> list[float]:
    cluster.create_topic("failover", 1, 3, {"min.insync.replicas": 2})
    p = Producer({"bootstrap.servers": cluster.bootstrap_servers, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 0, "retry.backoff.ms": 20, "retry.backoff.max.ms": 100,
                  "topic.metadata.refresh.interval.ms": 100})
    acked: list[tuple[float, int]] = []        # (ack time, sequence number)
    stop = threading.Event()
    next_seq = [0]                              # the sequence number of the next record the thread produces

    def run():
        i = 0
        while not stop.is_set():
            next_seq[0] = i
            p.produce("failover", b"%d" % i, on_delivery=lambda err, msg, i=i: err is None and
                      acked.append((time.monotonic(), i)))
            i += 1
            p.poll(0.001)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    out = []
    try:
        wait_until(lambda: len(acked) > 100, 30)
        for _ in range(kills):
            victim = cluster.leader_for("failover")
            killed_at = time.monotonic()
            first_after = next_seq[0] + 1             # records from this one on are produced after the kill
            cluster.kill(victim)
            wait_until(lambda first_after=first_after: any(i >= first_after for _t, i in acked[-50:]), 60)
            out.append(min(t for t, i in acked if i >= first_after) - killed_at)
            cluster.restart(victim)
            wait_until(lambda: len(cluster.isr_for("failover")) == 3, 30)
            time.sleep(0.5)
    finally:
        stop.set()
        t.join(5)
        p.flush(30)
    return out


def produce(bootstrap: str, topic: str, n: int) -> float:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True,
                  "queue.buffering.max.messages": 1000000})
    value = b"x" * 100
    done = [0]

    def cb(err, _msg):
        if err is None:
            done[0] += 1
    start = time.monotonic()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value, partition=i % 3, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.001)
    p.flush(120)
    elapsed = time.monotonic() - start
    if done[0] != n:
        raise RuntimeError(f"{n - done[0]} records not acknowledged")
    return n / elapsed


def consume(bootstrap: str, topic: str, n: int) -> float:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "isolation.level": "read_committed", "fetch.queue.backoff.ms": 10})
    c.assign([TopicPartition(topic, p, 0) for p in range(3)])
    got = 0
    start = time.monotonic()
    deadline = start + 120
    while got < n and time.monotonic() < deadline:
        got += len(c.consume(10000, 0.5))
    elapsed = time.monotonic() - start
    c.close()
    return got / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--session-ms", type=int, default=3000, help="broker.session.timeout.ms (the lease time)")
    args = ap.parse_args()
    config = {"broker.session.timeout.ms": args.session_ms,
              "broker.heartbeat.interval.ms": max(args.session_ms // 6, 100)}
    with kafkapy.Cluster(3, config=config) as c:
        times = failover_times(c, args.kills) if args.kills else []
        rates: dict[str, list[float]] = {"rf1 produce": [], "rf3 produce": [], "rf1 consume": [],
                                         "rf3 consume": []}
        for r in range(args.rounds):
            for rf in (1, 3):
                topic = f"tp-rf{rf}-{r}"
                c.create_topic(topic, 3, rf, {"min.insync.replicas": min(rf, 2)})
                rates[f"rf{rf} produce"].append(produce(c.bootstrap_servers, topic, args.messages))
                rates[f"rf{rf} consume"].append(consume(c.bootstrap_servers, topic, args.messages))
    if times:
        print(f"failover (kill the leader -> first acknowledged record produced after the kill), lease "
              f"{args.session_ms} ms, {len(times)} kills: median {statistics.median(times):.2f} s, min "
              f"{min(times):.2f} s, max {max(times):.2f} s")
    print(f"| measure ({args.messages} x 100 B, acks=all, median of {args.rounds}) | RF 1 | RF 3 | RF 3 / RF 1 |")
    print("|---|---|---|---|")
    for what in ("produce", "consume"):
        a, b = statistics.median(rates[f"rf1 {what}"]), statistics.median(rates[f"rf3 {what}"])
        print(f"| {what} msgs/s | {a:,.0f} | {b:,.0f} | {b / a:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
