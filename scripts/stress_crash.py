#!/usr/bin/env python3
"""Crash stress: SIGKILL the broker at random moments while an idempotent producer (acks=all) and a consumer
group (manual commits) run against it, restart it on the same data dir each time, and check at the end:

- every acknowledged record is in its partition's log exactly once, and acknowledged records are in the order
  they were produced (read from the .log files themselves);
- the group's committed offsets never went backwards (read after every restart, compared with every commit
  the broker acknowledged before);
- every .log file in the data dir passes a full scan: whole batches end to end, CRC32C checked
  (wire.records.decode_batches), no torn tail after recovery.

    .venv/bin/python scripts/stress_crash.py [--kills 20] [--max-seconds 300] [--partitions 3] [--seed N]

compat_tests/test_crash_stress.py runs a short version (3 kills) in CI.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "compat_tests"))

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from harness import BrokerProcess  # noqa: E402
from wire.records import decode_batches, iter_batch_headers  # noqa: E402

TOPIC = "stress"
GROUP = "stress-group"


class ProducerLoop(threading.Thread):
    """Produces "p:seq" values round-robin over the partitions; records which were acknowledged."""

    def __init__(self, bootstrap: str, partitions: int):
        super().__init__(daemon=True, name="stress-producer")
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.acked: dict[int, list[int]] = defaultdict(list)
        self.failed = 0
        self.fatal = 0
        self.producers = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def _new(self):
        self.producers += 1
        self._fatal_seen = threading.Event()

        def on_error(err):
            if err.fatal():
                self._fatal_seen.set()

        return Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5, "message.timeout.ms": 15000, "reconnect.backoff.ms": 50,
                         "reconnect.backoff.max.ms": 300, "socket.connection.setup.timeout.ms": 2000,
                         "error_cb": on_error})

    def _cb(self, err, msg):
        if err is None:
            p, seq = msg.value().decode().split(":")
            with self.lock:
                self.acked[int(p)].append(int(seq))
        else:
            self.failed += 1

    def run(self):
        p = self._new()
        seq = 0
        while not self.stop.is_set():
            if self._fatal_seen.is_set():
                # a fatal idempotence error: start over with a new producer id (unacknowledged records may or may
                # not be in the log; only acknowledged ones are checked)
                self.fatal += 1
                p.flush(5)
                p = self._new()
            part = seq % self.partitions
            try:
                p.produce(TOPIC, value=f"{part}:{seq}".encode(), partition=part, on_delivery=self._cb)
                seq += 1
            except BufferError:
                p.poll(0.05)
            p.poll(0)
            if seq % 20 == 0:
                time.sleep(0.002)
        p.flush(20)


class ConsumerLoop(threading.Thread):
    """A group member that commits (synchronously) every few messages; records every acknowledged commit."""

    def __init__(self, bootstrap: str, partitions: int):
        super().__init__(daemon=True, name="stress-consumer")
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.acked_commits: dict[int, int] = {}
        self.commits = 0
        self.commit_errors = 0
        self.consumed = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": GROUP, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                      "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 300})
        c.subscribe([TOPIC])
        since_commit = 0
        while not self.stop.is_set():
            m = c.poll(0.1)
            if m is None or m.error() is not None:
                continue
            self.consumed += 1
            since_commit += 1
            if since_commit >= 50:
                since_commit = 0
                try:
                    done = c.commit(asynchronous=False)
                except KafkaException:
                    self.commit_errors += 1
                    continue
                with self.lock:
                    self.commits += 1
                    for tp in done or []:
                        if tp.error is None and tp.offset >= 0:
                            self.acked_commits[tp.partition] = max(self.acked_commits.get(tp.partition, -1),
                                                                   tp.offset)
        try:
            c.close()
        except KafkaException:
            pass


def committed_now(bootstrap: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(TOPIC, p) for p in range(partitions)], timeout=15)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def scan_logs(data_dir: Path) -> dict:
    """Full scan of every .log file: whole batches to the end of the file, CRC32C of each checked."""
    files = batches = records = 0
    problems = []
    for log in sorted(data_dir.glob("*-*/*.log")):
        data = log.read_bytes()
        files += 1
        end = 0
        for pos, h in iter_batch_headers(data):
            end = pos + h.size
        if end != len(data):
            problems.append(f"{log}: {len(data) - end} bytes after the last whole batch")
        try:
            decoded = decode_batches(data)
        except Exception as e:  # noqa: BLE001 - reported
            problems.append(f"{log}: {type(e).__name__}: {e}")
            continue
        batches += len(decoded)
        records += sum(len(b.records) for b in decoded)
    return {"files": files, "batches": batches, "records": records, "problems": problems}


def stored_values(data_dir: Path, partitions: int) -> dict[int, list[int]]:
    out = {}
    for p in range(partitions):
        seqs = []
        for log in sorted((data_dir / f"{TOPIC}-{p}").glob("*.log")):
            for b in decode_batches(log.read_bytes()):
                for r in b.records:
                    seqs.append(int(r.value.decode().split(":")[1]))
        out[p] = seqs
    return out


def run_stress(kills: int = 20, max_seconds: float = 300, partitions: int = 3, seed: int | None = None,
               data_dir: Path | None = None, min_gap: float = 0.5, max_gap: float = 3.0, log=print) -> dict:
    rnd = random.Random(seed)
    own_tmp = None
    if data_dir is None:
        own_tmp = tempfile.TemporaryDirectory()
        data_dir = Path(own_tmp.name) / "data"
    started = time.monotonic()
    deadline = started + max_seconds
    broker = BrokerProcess(storage="disk").start(data_dir)
    result: dict = {"kills": 0, "seed": seed}
    commit_history: dict[int, list[int]] = defaultdict(list)
    backwards = []
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(TOPIC, partitions, 1)])[TOPIC].result(15)
        prod = ProducerLoop(broker.bootstrap, partitions)
        cons = ConsumerLoop(broker.bootstrap, partitions)
        prod.start()
        cons.start()
        restart_s = []
        while result["kills"] < kills and time.monotonic() < deadline:
            time.sleep(rnd.uniform(min_gap, max_gap))
            with cons.lock:
                acked_before = dict(cons.acked_commits)
            t0 = time.monotonic()
            broker.restart(kill=True)
            restart_s.append(time.monotonic() - t0)
            result["kills"] += 1
            now = committed_now(broker.bootstrap, partitions)
            for p, off in now.items():
                hist = commit_history[p]
                if (p in acked_before and off < acked_before[p]) or (hist and off < hist[-1]):
                    backwards.append((result["kills"], p, off, acked_before.get(p), hist[-1:]))
                hist.append(off)
            log(f"kill {result['kills']}: restarted in {restart_s[-1]:.2f}s; acked "
                f"{sum(map(len, prod.acked.values()))} records, consumed {cons.consumed}, {cons.commits} commits, "
                f"committed {now}")
        time.sleep(3.0)      # let the consumer rejoin and commit after the last restart
        prod.stop.set()
        cons.stop.set()
        prod.join(40)
        cons.join(30)
        final_commits = committed_now(broker.bootstrap, partitions)
        for p, off in final_commits.items():
            if p in cons.acked_commits and off < cons.acked_commits[p]:
                backwards.append(("final", p, off, cons.acked_commits.get(p), None))
    finally:
        broker.stop()
    # the data check reads the files a clean restart would serve
    broker = BrokerProcess(storage="disk").start(data_dir)
    broker.stop()
    scan = scan_logs(data_dir)
    stored = stored_values(data_dir, partitions)
    lost, dup, disorder = [], [], []
    for p in range(partitions):
        acked = prod.acked.get(p, [])
        counts: dict[int, int] = defaultdict(int)
        for s in stored[p]:
            counts[s] += 1
        lost += [(p, s) for s in acked if counts[s] == 0]
        dup += [(p, s) for s in acked if counts[s] > 1]
        acked_set = set(acked)
        order = [s for s in stored[p] if s in acked_set]
        if order != sorted(order):
            disorder.append(p)
    result.update({
        "seconds": round(time.monotonic() - started, 1),
        "restart_s_max": round(max(restart_s), 2) if restart_s else None,
        "records_acked": sum(len(v) for v in prod.acked.values()),
        "records_stored": sum(len(v) for v in stored.values()),
        "records_failed_delivery": prod.failed, "producers_recreated_after_fatal_error": prod.fatal,
        "consumed": cons.consumed, "commits_acked": cons.commits, "commit_errors": cons.commit_errors,
        "committed_final": final_commits, "commit_checks": sum(len(h) for h in commit_history.values()),
        "lost": lost[:10], "lost_count": len(lost), "duplicated": dup[:10], "duplicated_count": len(dup),
        "out_of_order_partitions": disorder, "commits_backwards": backwards[:10],
        "log_scan": scan,
    })
    result["ok"] = not (lost or dup or disorder or backwards or scan["problems"]) and result["records_acked"] > 0
    if own_tmp is not None:
        own_tmp.cleanup()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--min-gap", type=float, default=0.5, help="seconds between a restart and the next kill, at least")
    ap.add_argument("--max-gap", type=float, default=3.0, help="... and at most")
    ap.add_argument("--data-dir", type=Path, default=None, help="keep the data here (default: a temp dir)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    r = run_stress(args.kills, args.max_seconds, args.partitions, seed, args.data_dir, args.min_gap, args.max_gap)
    print(json.dumps(r, indent=1, default=str))
    print(("OK" if r["ok"] else "FAILED") + f": {r['kills']} kills in {r['seconds']} s, {r['records_acked']} "
          f"acknowledged records all present exactly once and in order, {r['commits_acked']} commits, "
          f"{r['commit_checks']} committed-offset checks, {r['log_scan']['files']} log files / "
          f"{r['log_scan']['batches']} batches CRC-checked (seed {seed})")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
