#!/usr/bin/env python3
"""Restart benchmark: the first idempotent produce after a broker restart on a partition log of >= 1 GiB.

    .venv/bin/python scripts/bench_restart.py [--size-mib 1536] [--batch-bytes 16384] [--repeats 3]
        [--kafkapy-src DIR ...] [--modes clean,unclean] [--data-dir DIR] [--reuse] [--keep]

    # the code before producer-state snapshots (e386382) against this tree, on the same data dir:
    git worktree add /work/wt-old e386382
    .venv/bin/python scripts/bench_restart.py --kafkapy-src /work/wt-old --kafkapy-src .

Builds (or, with --reuse, reuses) a disk data dir holding topic ``bench`` (one partition, Kafka's default
segment.bytes of 1 GiB unless --segment-mib) filled with --size-mib of uncompressed idempotent batches of about
--batch-bytes each (default 16 KiB, Java's batch.size; --batch-bytes 1024 for small batches) of --record-bytes
values, from --producers producer ids in turn, plus a 1-record topic ``warm``. The topics are created by a
``kafkapy.Broker(storage="disk")`` started in-process and stopped cleanly; the batches are then appended through
the storage layer of this tree (storage.manager.LogManager, the broker's own append path, fsync off) and the
manager is closed cleanly (clean-shutdown marker, recovery point, producer snapshot), so the broker opens it as
after a normal restart.

Then, for each --kafkapy-src tree (default: this one) and mode, --repeats times: ``python -m kafkapy --storage
disk --data-dir DIR --port 0`` is spawned from that tree (cwd and PYTHONPATH set to it; the kafkapy it imports is
printed once), and timed:

* spawn -> ready: from Popen to the ``kafkapy ready at`` line (log recovery happens here);
* setup: a confluent-kafka Producer (enable.idempotence=true, acks=all, linger.ms=0) created after the ready line,
  producing one record to ``warm`` (connect, ApiVersions, Metadata, InitProducerId, one Produce) and then fetching
  the metadata of ``bench``: the client's own cost, reported apart and not counted below;
* first produce: one record to bench-0, from produce() to the delivery callback: the first use of that
  partition's producer state (old code: rebuilt by re-reading every batch header of the log; new code: the latest
  ``.snapshot`` plus the batch headers after it);
* next produce: a second record the same way, the steady-state round trip, for comparison.

The broker is then stopped with SIGTERM (a clean stop; the new code writes a snapshot at the log end).
Mode ``clean``: the restart follows that clean stop. Mode ``unclean``: before each timed start the broker is started
(untimed), one idempotent record is produced to bench-0 and the process is killed with SIGKILL, so the timed start
finds no clean-shutdown marker and re-checks (CRC, indexes) every segment from the one holding the recovery point.
Before runs of a tree without storage/producer_state.py (the old code, which ignores them) every ``.snapshot`` file
is deleted; before runs of a tree with it, if no snapshot sits at the log end, one untimed clean start/produce/stop
writes it, as a normal restart leaves it. The runs are interleaved (repeat 1 of every tree and mode, then repeat
2, ...) so that a change of machine load hits every row alike; medians are reported. Not a test: the figures depend
on the machine (its load; the page cache: the data dir is in memory after it is built, no cold reads); compare the
rows of one run.
The data dir (default /tmp/kafkapy-bench-restart-<size>m-<batch>b) is removed at the end unless --keep or --reuse.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from crc32c import crc32c

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOPIC, WARM = "bench", "warm"
INFO_FILE = "bench-restart.json"        # what the data dir was built with (for --reuse)
BASE_PID = 10**12                        # far above the ids the broker hands out (kafkapy-producer-ids.json)
SEQ_OFFSET, CRC_OFFSET, ATTRIBUTES_OFFSET = 53, 17, 21
MODES = ("clean", "unclean")


# ------------------------------------------------------------------------------------------------ building the data

def build_params(args) -> dict:
    return {"size_mib": args.size_mib, "batch_bytes": args.batch_bytes, "record_bytes": args.record_bytes,
            "producers": args.producers, "segment_mib": args.segment_mib}


def template_batch(pid: int, batch_bytes: int, record_bytes: int) -> bytearray:
    """One idempotent batch of about ``batch_bytes`` (producer ``pid``, epoch 0, sequence 0)."""
    from wire.records import build_batch

    value = b"x" * record_bytes
    one = len(build_batch([(None, value)] * 2)) - len(build_batch([(None, value)]))
    n = max(1, (batch_bytes - 61) // one)
    return bytearray(build_batch([(None, value)] * n, producer_id=pid, producer_epoch=0, base_sequence=0))


def build_data_dir(d: str, args) -> dict:
    """Create the topics through a broker, append the batches through the storage layer, close cleanly."""
    import kafkapy
    from storage.config import LogConfig
    from storage.manager import LogManager

    t0 = time.perf_counter()
    topic_config = {"segment.bytes": str(args.segment_mib << 20)} if args.segment_mib != 1024 else None
    with kafkapy.Broker(storage="disk", data_dir=d) as b:
        b.create_topic(TOPIC, 1, config=topic_config)
        b.create_topic(WARM, 1)
    cfg = LogConfig(segment_bytes=args.segment_mib << 20)
    mgr = LogManager(d, config_for=lambda t: cfg if t == TOPIC else None, fsync=False)
    plog = mgr.get(TOPIC, 0)
    templates = [template_batch(BASE_PID + i, args.batch_bytes, args.record_bytes) for i in range(args.producers)]
    size = len(templates[0])
    records = struct.unpack_from(">i", templates[0], 57)[0]
    total = args.size_mib << 20
    n_batches = -(-total // size)
    group = max(1, (256 << 10) // size)       # consecutive batches of one producer per append call
    seqs = [0] * args.producers
    done, p, next_report = 0, 0, time.perf_counter() + 5
    while done < n_batches:
        k = min(group, n_batches - done)
        t = templates[p]
        chunk = bytearray()
        for _ in range(k):
            struct.pack_into(">i", t, SEQ_OFFSET, seqs[p])
            struct.pack_into(">I", t, CRC_OFFSET, crc32c(memoryview(t)[ATTRIBUTES_OFFSET:]))
            chunk += t
            seqs[p] += records
        plog.append(chunk, leader_epoch=0)
        done += k
        p = (p + 1) % args.producers
        if time.perf_counter() > next_report:
            next_report += 5
            print(f"  building: {done * size >> 20} of {args.size_mib} MiB", file=sys.stderr, flush=True)
    mgr.close()
    info = {**build_params(args), "batches": n_batches, "batch_size": size, "records_per_batch": records,
            "bytes": n_batches * size, "build_s": round(time.perf_counter() - t0, 1), "complete": True}
    with open(os.path.join(d, INFO_FILE), "w") as f:
        json.dump(info, f)
    return info


def partition_dir(d: str) -> str:
    return os.path.join(d, f"{TOPIC}-0")


def layout(d: str) -> str:
    sizes = [os.path.getsize(p) for p in sorted(glob.glob(os.path.join(partition_dir(d), "*.log")))]
    return f"{len(sizes)} segments, active {sizes[-1] / 2**20:.0f} MiB"


def snapshot_offsets(d: str) -> list[int]:
    return sorted(int(os.path.basename(p).split(".")[0]) for p in glob.glob(os.path.join(partition_dir(d),
                                                                                         "*.snapshot")))


def recovery_point(d: str) -> int | None:
    """bench-0's line of recovery-point-offset-checkpoint (after a clean stop: the log end offset)."""
    try:
        with open(os.path.join(d, "recovery-point-offset-checkpoint")) as f:
            for line in f.read().splitlines()[2:]:
                parts = line.split()
                if len(parts) == 3 and parts[0] == TOPIC and parts[1] == "0":
                    return int(parts[2])
    except OSError:
        pass
    return None


# ------------------------------------------------------------------------------------------------ one broker run

class Spawned:
    """``python -m kafkapy`` from source tree ``src`` on data dir ``d``; ``ready_s`` is spawn -> ready line."""

    def __init__(self, src: str, d: str, log_path: str):
        env = {**os.environ, "PYTHONPATH": src}
        self.log = open(log_path, "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "kafkapy", "--storage", "disk", "--data-dir", d,
                                      "--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING"],
                                     cwd=src, env=env, stdout=subprocess.PIPE, stderr=self.log)
        line = self._ready_line(600)
        self.ready_s = time.perf_counter() - t0
        if not line.startswith("kafkapy ready at "):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"broker from {src} did not start ({line!r}); see {log_path}")
        self.bootstrap = line.rsplit(" ", 1)[1]

    def _ready_line(self, timeout: float) -> str:
        out: list[str] = []
        t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline().decode().strip()), daemon=True)
        t.start()
        t.join(timeout)
        return out[0] if out else ""

    def stop(self, kill: bool = False) -> float:
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        rc = self.proc.wait(300)
        self.log.close()
        if not kill and rc != 0:
            raise RuntimeError(f"broker exited with {rc}")
        return time.perf_counter() - t0


def produce_one(producer, topic: str, timeout: float = 600) -> float:
    """One record to partition 0 of ``topic``: seconds from produce() to the delivery callback."""
    got: list = []
    t0 = time.perf_counter()
    producer.produce(topic, b"restart-bench", partition=0,
                     on_delivery=lambda err, msg: got.append((time.perf_counter(), err)))
    while not got:
        producer.poll(0.0005)
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"no delivery report for {topic} within {timeout} s")
    if got[0][1] is not None:
        raise RuntimeError(f"produce to {topic} failed: {got[0][1]}")
    return got[0][0] - t0


def new_producer(bootstrap: str):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 0,
                     "message.timeout.ms": 600_000, "request.timeout.ms": 600_000})


def timed_run(src: str, d: str, log_path: str) -> dict:
    b = Spawned(src, d, log_path)
    try:
        t0 = time.perf_counter()
        producer = new_producer(b.bootstrap)
        produce_one(producer, WARM)
        warm = time.perf_counter() - t0
        producer.list_topics(TOPIC, timeout=30)
        setup = time.perf_counter() - t0
        first = produce_one(producer, TOPIC)
        second = produce_one(producer, TOPIC)
        producer.flush(30)
        del producer
    except BaseException:
        b.stop(kill=True)
        raise
    stop = b.stop()
    return {"ready": b.ready_s, "setup": setup, "warm": warm, "first": first, "next": second, "stop": stop}


def crash(src: str, d: str, log_path: str) -> None:
    """Start, produce one idempotent record to bench-0, kill -9: the next start is unclean."""
    b = Spawned(src, d, log_path)
    try:
        producer = new_producer(b.bootstrap)
        produce_one(producer, TOPIC)
        producer.flush(30)
        del producer
    finally:
        b.stop(kill=True)


def has_snapshots(src: str) -> bool:
    return os.path.exists(os.path.join(src, "storage", "producer_state.py"))


def prepare(src: str, d: str, log_path: str) -> None:
    """Old code: no .snapshot files. New code: a snapshot at the log end, as a clean stop leaves it."""
    if not has_snapshots(src):
        for p in glob.glob(os.path.join(partition_dir(d), "*.snapshot")):
            os.unlink(p)
        return
    rp = recovery_point(d)
    if os.path.exists(os.path.join(d, ".kafka_cleanshutdown")) and rp is not None and rp in snapshot_offsets(d):
        return
    print("  (untimed clean start/produce/stop to write the producer snapshot)", file=sys.stderr, flush=True)
    timed_run(src, d, log_path)


def show_import(src: str) -> str:
    r = subprocess.run([sys.executable, "-c", "import kafkapy, storage, wire; "
                        "print(kafkapy.__file__, storage.__file__, wire.__file__)"],
                       cwd=src, env={**os.environ, "PYTHONPATH": src}, capture_output=True, text=True, check=True)
    return r.stdout.strip()


def label(src: str) -> str:
    # the last commit that changed the broker's code (not this script's)
    r = subprocess.run(["git", "-C", src, "log", "-1", "--format=%h", "--", "kafkapy", "storage", "wire"],
                       capture_output=True, text=True)
    return f"{r.stdout.strip() or os.path.basename(src)} ({'snapshots' if has_snapshots(src) else 'rescan'})"


# ------------------------------------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kafkapy-src", action="append", metavar="DIR",
                    help="source tree whose broker is spawned (repeatable; default: this tree)")
    ap.add_argument("--data-dir", help="data dir to build or reuse (default /tmp/kafkapy-bench-restart-...)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse --data-dir if it was built with the same parameters (and keep it)")
    ap.add_argument("--keep", action="store_true", help="do not remove the data dir at the end")
    ap.add_argument("--size-mib", type=int, default=1536, help="bytes of batches in bench-0 (default 1536 MiB)")
    ap.add_argument("--batch-bytes", type=int, default=16384, help="batch size (Java's batch.size: 16384)")
    ap.add_argument("--record-bytes", type=int, default=100, help="record value size")
    ap.add_argument("--producers", type=int, default=8, help="producer ids writing in turn")
    ap.add_argument("--segment-mib", type=int, default=1024, help="segment.bytes of the topic (Kafka's 1024 MiB)")
    ap.add_argument("--modes", default="clean,unclean", help="clean, unclean or both (default)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        ap.error(f"--modes: {', '.join(MODES)}")
    srcs = [str(Path(s).resolve()) for s in (args.kafkapy_src or [str(ROOT)])]
    d = args.data_dir or os.path.join(tempfile.gettempdir(),
                                      f"kafkapy-bench-restart-{args.size_mib}m-{args.batch_bytes}b")
    info = None
    if args.reuse and os.path.exists(os.path.join(d, INFO_FILE)):
        with open(os.path.join(d, INFO_FILE)) as f:
            info = json.load(f)
        if not info.get("complete") or any(info.get(k) != v for k, v in build_params(args).items()):
            ap.error(f"{d} was built with other parameters: {info}")
        print(f"reusing {d}", file=sys.stderr)
    elif os.path.exists(d) and os.listdir(d):
        ap.error(f"{d} exists and is not empty (--reuse to use a data dir this script built)")
    log_path = d.rstrip("/") + ".broker.log"
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        if info is None:
            print(f"building {d}: {args.size_mib} MiB of ~{args.batch_bytes}-byte idempotent batches",
                  file=sys.stderr, flush=True)
            info = build_data_dir(d, args)
            print(f"  built in {info['build_s']} s", file=sys.stderr, flush=True)
        for src in srcs:
            print(f"{label(src)}: {show_import(src)}", file=sys.stderr, flush=True)
        results = {(src, mode): [] for src in srcs for mode in modes}
        for r in range(args.repeats):        # interleaved, so a change of machine load hits every row alike
            for mode in modes:
                for src in srcs:
                    runs = results[(src, mode)]
                    prepare(src, d, log_path)
                    if mode == "unclean":
                        crash(src, d, log_path)
                    res = timed_run(src, d, log_path)
                    runs.append(res)
                    print(f"  {label(src)} {mode} run {r + 1}: " + ", ".join(f"{k} {v * 1000:.0f} ms"
                                                                              for k, v in res.items()),
                          file=sys.stderr, flush=True)
        lay = layout(d)
    finally:
        if not (args.keep or args.reuse):
            shutil.rmtree(d, ignore_errors=True)
            if os.path.exists(log_path):
                os.unlink(log_path)

    print(f"first idempotent produce after a restart: bench-0 holds {info['bytes'] / 2**30:.2f} GiB in "
          f"{info['batches']} idempotent batches of {info['batch_size']} bytes ({info['records_per_batch']} x "
          f"{args.record_bytes}-byte records, {args.producers} producer ids; {lay}); median of {args.repeats}, ms")
    print(f"{'code':24}{'mode':>9}{'spawn->ready':>14}{'first produce':>15}{'next produce':>14}{'client setup':>14}")
    med = statistics.median
    for (src, mode), runs in results.items():
        print(f"{label(src):24}{mode:>9}{med(r['ready'] for r in runs) * 1000:>14.0f}"
              f"{med(r['first'] for r in runs) * 1000:>15.1f}{med(r['next'] for r in runs) * 1000:>14.1f}"
              f"{med(r['setup'] for r in runs) * 1000:>14.0f}")
    print("first produce: produce() to delivery callback of one record to bench-0 (its producer state loaded on "
          "first use); next produce: a second one; client setup: producer creation, a produce to 'warm', Metadata "
          "of 'bench', after the ready line, not counted in the others")
    return 0


if __name__ == "__main__":
    sys.exit(main())
