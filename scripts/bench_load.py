#!/usr/bin/env python3
"""Load benchmark: N concurrent client connections (default 200) with a mix of Produce, Fetch, Metadata and
consumer-group traffic (JoinGroup, SyncGroup, Heartbeat) in raw wire.protocol requests over asyncio sockets,
for a bounded time. Reports p50/p99/max latency per api, throughput, errors and the broker's RSS.

    .venv/bin/python scripts/bench_load.py [--connections 200] [--duration 30] [--storage disk|memory]
    .venv/bin/python scripts/bench_load.py --bootstrap HOST:PORT   # against a running broker (no RSS)

Mix by connection index: 40% producers (Produce v9, acks=all, one 10-record batch of 100-byte values per
request), 30% fetchers (Fetch v12 reading behind the producers, max_wait_ms 100), 15% Metadata v12, 15%
group members (each in its own group: FindCoordinator, JoinGroup twice (KIP-394 member id), SyncGroup, then a
Heartbeat every 100 ms). Every connection sends its next request when the previous answer arrived (as
Kafka clients do per connection, except that they pipeline up to 5 produces).

compat_tests/test_load.py runs this with a short duration and asserts on the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "compat_tests"))

from wire import protocol  # noqa: E402
from wire.messages import fetch_request as FQ  # noqa: E402
from wire.messages import join_group_request as JQ  # noqa: E402
from wire.messages import produce_request as PQ  # noqa: E402
from wire.messages import sync_group_request as SQ  # noqa: E402
from wire.records import build_batch  # noqa: E402

TOPIC = "load"
PARTITIONS = 8
REQUEST_TIMEOUT = 30.0          # Kafka clients' request.timeout.ms default
MEMBER_ID_REQUIRED = 79
REBALANCE_IN_PROGRESS = 27


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    records_produced: int = 0
    records_fetched_bytes: int = 0

    def add(self, api: str, seconds: float) -> None:
        self.latencies.setdefault(api, []).append(seconds)

    def summary(self, elapsed: float) -> dict:
        out = {"elapsed_s": round(elapsed, 2), "errors": len(self.errors), "first_errors": self.errors[:5],
               "records_produced": self.records_produced,
               "produce_records_per_s": round(self.records_produced / elapsed),
               "fetched_MB": round(self.records_fetched_bytes / 1e6, 2), "apis": {}}
        every = []
        for api, xs in sorted(self.latencies.items()):
            every.extend(xs)
            out["apis"][api] = _percentiles(xs, elapsed)
        out["all"] = _percentiles(every, elapsed)
        return out


def _percentiles(xs: list[float], elapsed: float) -> dict:
    if not xs:
        return {"count": 0}
    s = sorted(xs)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"count": len(s), "per_s": round(len(s) / elapsed), "p50_ms": round(pick(0.50) * 1000, 2),
            "p99_ms": round(pick(0.99) * 1000, 2), "max_ms": round(s[-1] * 1000, 2)}


class Conn:
    def __init__(self, reader, writer, stats: Stats, client_id: str):
        self.reader, self.writer, self.stats, self.client_id = reader, writer, stats, client_id
        self.corr = 0

    @classmethod
    async def open(cls, host, port, stats, client_id):
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), REQUEST_TIMEOUT)
        return cls(reader, writer, stats, client_id)

    async def call(self, key: int, version: int, body, api: str | None = None):
        self.corr += 1
        frame = protocol.encode_request(key, version, self.corr, self.client_id, body)
        started = time.monotonic()
        self.writer.write(frame)

        async def answer():
            await self.writer.drain()
            size = struct.unpack(">i", await self.reader.readexactly(4))[0]
            return await self.reader.readexactly(size)

        data = await asyncio.wait_for(answer(), REQUEST_TIMEOUT)
        self.stats.add(api or protocol.API[key].name, time.monotonic() - started)
        corr, resp = protocol.decode_response(key, version, data)
        if corr != self.corr:
            raise AssertionError(f"correlation id {corr}, expected {self.corr}")
        return resp

    def close(self):
        self.writer.close()


def _check(stats: Stats, what: str, code: int) -> None:
    if code:
        stats.errors.append(f"{what}: error {code}")


async def producer(conn: Conn, partition: int, stop: float, value: bytes):
    while time.monotonic() < stop:
        batch = build_batch([(None, value)] * 10)
        body = PQ.ProduceRequest(transactional_id=None, acks=-1, timeout_ms=30000, topic_data=[
            PQ.TopicProduceData(name=TOPIC, partition_data=[PQ.PartitionProduceData(index=partition, records=batch)])])
        r = await conn.call(0, 9, body)
        _check(conn.stats, "produce", r.responses[0].partition_responses[0].error_code)
        conn.stats.records_produced += 10


async def fetcher(conn: Conn, partition: int, stop: float):
    offset = 0
    while time.monotonic() < stop:
        body = FQ.FetchRequest(replica_id=-1, max_wait_ms=100, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
                               session_id=0, session_epoch=-1, topics=[FQ.FetchTopic(topic=TOPIC, partitions=[
                                   FQ.FetchPartition(partition=partition, current_leader_epoch=-1, fetch_offset=offset,
                                                     log_start_offset=-1, partition_max_bytes=256 * 1024)])],
                               forgotten_topics_data=[], rack_id="")
        r = await conn.call(1, 12, body)
        _check(conn.stats, "fetch", r.error_code)
        pd = r.responses[0].partitions[0]
        _check(conn.stats, "fetch partition", pd.error_code)
        data = pd.records
        if data:
            n = len(data)
            conn.stats.records_fetched_bytes += n
            # next offset: after the last whole batch
            pos, last = 0, None
            while pos + 61 <= n:
                base = struct.unpack_from(">q", data, pos)[0]
                length = struct.unpack_from(">i", data, pos + 8)[0]
                if pos + 12 + length > n:
                    break
                last = base + struct.unpack_from(">i", data, pos + 23)[0]
                pos += 12 + length
            if last is not None:
                offset = last + 1


async def metadata(conn: Conn, stop: float):
    mod = protocol.API[3].request
    while time.monotonic() < stop:
        r = await conn.call(3, 12, mod.MESSAGE(topics=[mod.MetadataRequestTopic(name=TOPIC)],
                                               allow_auto_topic_creation=False))
        _check(conn.stats, "metadata", r.topics[0].error_code)
        await asyncio.sleep(0.01)


async def group_member(conn: Conn, group: str, stop: float):
    fc = protocol.API[10].request.MESSAGE(key_type=0, coordinator_keys=[group])
    r = await conn.call(10, 4, fc)
    _check(conn.stats, "find coordinator", r.coordinators[0].error_code)
    member_id = ""
    join = None
    for _ in range(3):
        join = await conn.call(11, 7, JQ.JoinGroupRequest(
            group_id=group, session_timeout_ms=10000, rebalance_timeout_ms=10000, member_id=member_id,
            protocol_type="consumer", protocols=[JQ.JoinGroupRequestProtocol(name="range", metadata=b"")]))
        if join.error_code == MEMBER_ID_REQUIRED:
            member_id = join.member_id
            continue
        break
    _check(conn.stats, "join group", join.error_code)
    member_id, generation = join.member_id, join.generation_id
    sync = await conn.call(14, 5, SQ.SyncGroupRequest(
        group_id=group, generation_id=generation, member_id=member_id, protocol_type="consumer",
        protocol_name=join.protocol_name,
        assignments=[SQ.SyncGroupRequestAssignment(member_id=member_id, assignment=b"")]))
    _check(conn.stats, "sync group", sync.error_code)
    hb = protocol.API[12].request.MESSAGE(group_id=group, generation_id=generation, member_id=member_id)
    while time.monotonic() < stop:
        r = await conn.call(12, 4, hb)
        _check(conn.stats, "heartbeat", r.error_code)
        await asyncio.sleep(0.1)
    r = await conn.call(13, 4, protocol.API[13].request.MESSAGE(
        group_id=group, members=[protocol.API[13].request.MemberIdentity(member_id=member_id)]))
    _check(conn.stats, "leave group", r.error_code)


async def create_topic(host, port, stats):
    conn = await Conn.open(host, port, stats, "bench-admin")
    mod = protocol.API[19].request
    try:
        r = await conn.call(19, 7, mod.MESSAGE(topics=[mod.CreatableTopic(
            name=TOPIC, num_partitions=PARTITIONS, replication_factor=1)], timeout_ms=10000))
        if r.topics[0].error_code not in (0, 36):     # 36: TOPIC_ALREADY_EXISTS
            raise RuntimeError(f"cannot create {TOPIC}: error {r.topics[0].error_code}")
    finally:
        conn.close()
    stats.latencies.clear()


async def run_load(bootstrap: str, connections: int = 200, duration: float = 15.0, rss_of=None) -> dict:
    """Run the mix for ``duration`` seconds; ``rss_of()`` (optional) gives the broker's RSS in bytes."""
    host, port = bootstrap.rsplit(":", 1)
    port = int(port)
    stats = Stats()
    await create_topic(host, port, stats)
    value = os.urandom(100)
    conns = await asyncio.gather(*(Conn.open(host, port, stats, f"load-{i}") for i in range(connections)))
    started = time.monotonic()
    stop = started + duration
    rss = []

    async def sample_rss():
        while time.monotonic() < stop:
            rss.append((round(time.monotonic() - started, 1), rss_of()))
            await asyncio.sleep(max(duration / 20, 0.2))

    jobs = []
    for i, c in enumerate(conns):
        slot = i % 20
        if slot < 8:
            jobs.append(producer(c, i % PARTITIONS, stop, value))
        elif slot < 14:
            jobs.append(fetcher(c, i % PARTITIONS, stop))
        elif slot < 17:
            jobs.append(metadata(c, stop))
        else:
            jobs.append(group_member(c, f"load-group-{i}", stop))
    if rss_of is not None:
        jobs.append(sample_rss())
    results = await asyncio.gather(*jobs, return_exceptions=True)
    elapsed = time.monotonic() - started
    for r in results:
        if isinstance(r, BaseException):
            stats.errors.append(f"{type(r).__name__}: {r}")
    for c in conns:
        c.close()
    out = stats.summary(elapsed)
    out["connections"] = connections
    if rss:
        out["broker_rss_MB"] = [(t, round(b / 1e6, 1)) for t, b in rss]
    return out


def rss_of_pid(pid: int):
    def rss() -> int:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0
    return rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--storage", choices=("disk", "memory"), default="disk")
    ap.add_argument("--bootstrap", help="use a running broker instead of starting one")
    ap.add_argument("-o", "--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a broker setting for the broker this script starts, e.g. -o log.flush.interval.messages=1")
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = ap.parse_args()
    if args.bootstrap:
        result = asyncio.run(run_load(args.bootstrap, args.connections, args.duration))
    else:
        from harness import BrokerProcess
        with tempfile.TemporaryDirectory() as tmp:
            extra = [a for kv in args.set for a in ("-o", kv)]
            broker = BrokerProcess(storage=args.storage, extra_args=extra).start(Path(tmp) / "data")
            try:
                result = asyncio.run(run_load(broker.bootstrap, args.connections, args.duration,
                                              rss_of_pid(broker.pid)))
            finally:
                broker.stop()
    if args.json:
        print(json.dumps(result, indent=1))
        return 0 if not result["errors"] else 1
    print(f"{result['connections']} connections for {result['elapsed_s']} s: {result['errors']} errors"
          + (f" (e.g. {result['first_errors']})" if result["errors"] else ""))
    print(f"produced {result['records_produced']} records ({result['produce_records_per_s']}/s, 100-byte values, "
          f"10 per request, acks=all); fetched {result['fetched_MB']} MB")
    print(f"{'api':<14}{'requests':>10}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for api, p in list(result["apis"].items()) + [("all", result["all"])]:
        if p.get("count"):
            print(f"{api:<14}{p['count']:>10}{p['per_s']:>8}{p['p50_ms']:>9}{p['p99_ms']:>9}{p['max_ms']:>9}")
    if "broker_rss_MB" in result:
        print("broker RSS MB over time:", " ".join(f"{t}s:{m}" for t, m in result["broker_rss_MB"]))
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
