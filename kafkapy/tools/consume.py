"""``kafkapy consume TOPIC``: print records (long-poll Fetch, batches decoded with wire.records)."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import heapq
import json
import sys
import time

from kafkapy.tools import UsageError, add_common, client_from
from kafkapy.tools.client import Client, KafkaError, ToolError, commit_offsets, fetch_committed
from wire import protocol as P
from wire.errors import DecodeError
from wire.messages.error_codes import ErrorCode
from wire.records import CONTROL_ABORT, decode_batches, parse_control_record

ISOLATION = {"read_uncommitted": 0, "read_committed": 1}
REFRESH_ERRORS = (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.LEADER_NOT_AVAILABLE,
                  ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.FENCED_LEADER_EPOCH,
                  ErrorCode.UNKNOWN_LEADER_EPOCH, ErrorCode.UNKNOWN_TOPIC_ID, ErrorCode.OFFSET_NOT_AVAILABLE)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kafkapy consume",
        description="Print the records of a topic, one per line. Without --from-beginning, --offset or "
                    "--from-timestamp it starts at the end (or, with --group, at the group's committed offset).")
    add_common(p)
    p.add_argument("topic")
    p.add_argument("--partition", type=int, action="append", default=None, metavar="P",
                   help="read only this partition (repeatable; default: all)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the earliest offset")
    start.add_argument("--offset", default=None, metavar="N",
                       help="start at offset N (or earliest / latest; a negative N counts back from the end)")
    start.add_argument("--from-timestamp", default=None, metavar="MS|ISO",
                       help="start at the first record at or after this time (epoch ms or ISO 8601)")
    p.add_argument("--group", default=None, metavar="G",
                   help="start at G's committed offsets and commit the progress (assigned partitions, no join)")
    p.add_argument("--max-messages", type=int, default=None, metavar="N", help="exit after N records")
    p.add_argument("--timeout-ms", type=int, default=None, metavar="T",
                   help="exit when no record arrived for T ms (default: wait forever)")
    p.add_argument("--format", choices=("text", "json", "hex"), default="text",
                   help="text: the value as is; json: one object per record with every field; hex: hex bytes")
    p.add_argument("--print-key", action="store_true", help="text/hex: print the key before the value")
    p.add_argument("--print-headers", action="store_true", help="text/hex: print headers (k:v,k:v)")
    p.add_argument("--print-offset", action="store_true", help="text/hex: print partition and offset")
    p.add_argument("--print-timestamp", action="store_true", help="text/hex: print the timestamp")
    p.add_argument("--separator", default="\t", metavar="SEP",
                   help="text/hex: between the printed fields (default tab)")
    p.add_argument("--isolation", choices=tuple(ISOLATION), default="read_uncommitted",
                   help="read_committed: only committed transactional records, up to the last stable offset")
    p.add_argument("--max-wait-ms", type=int, default=500, metavar="MS", help="Fetch long-poll time (500)")
    p.add_argument("--fetch-max-bytes", type=int, default=1 << 20, metavar="BYTES",
                   help="most bytes per partition per Fetch (1 MiB; a bigger batch still comes whole)")
    return p


def parse_timestamp(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--from-timestamp: {text!r} is neither epoch milliseconds nor an ISO 8601 time") \
            from None
    if t.tzinfo is None:
        t = t.astimezone()      # local time, like a shell user means it
    return int(t.timestamp() * 1000)


# ---------------------------------------------------------------- output

def _json_bytes(b: bytes | None):
    if b is None:
        return None
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(b).decode()}


class Printer:
    def __init__(self, args, out):
        self.args = args
        self.out = out
        self.sep = args.separator.encode()
        self.fmt = args.format

    def _b(self, b: bytes | None) -> bytes:
        if b is None:
            return b"null"
        return b.hex().encode() if self.fmt == "hex" else b

    def line(self, topic: str, partition: int, batch, rec) -> bytes:
        if self.fmt == "json":
            return json.dumps({
                "topic": topic, "partition": partition, "offset": rec.offset, "timestamp": rec.timestamp,
                "timestamp_type": "LogAppendTime" if batch.timestamp_type else "CreateTime",
                "key": _json_bytes(rec.key), "value": _json_bytes(rec.value),
                "headers": [[k if isinstance(k, str) else _json_bytes(k), _json_bytes(v)] for k, v in rec.headers],
            }, ensure_ascii=False).encode() + b"\n"
        a = self.args
        parts = []
        if a.print_timestamp:
            parts.append(f"{'LogAppendTime' if batch.timestamp_type else 'CreateTime'}:{rec.timestamp}".encode())
        if a.print_offset:
            parts.append(f"Partition:{partition}".encode())
            parts.append(f"Offset:{rec.offset}".encode())
        if a.print_headers:
            if rec.headers:
                parts.append(b",".join((k.encode() if isinstance(k, str) else k) + b":" + self._b(v)
                                       for k, v in rec.headers))
            else:
                parts.append(b"NO_HEADERS")
        if a.print_key:
            parts.append(self._b(rec.key))
        parts.append(self._b(rec.value))
        return self.sep.join(parts) + b"\n"


# ---------------------------------------------------------------- consuming

def committed_records(batches, aborted: list, isolation: int):
    """Yield (batch, record) of data batches, dropping aborted transactional batches under read_committed
    (Kafka's consumer: aborted transactions by first offset, until that producer's ABORT marker)."""
    heap = [(a.first_offset, a.producer_id) for a in (aborted or ())] if isolation else []
    heapq.heapify(heap)
    aborting: set[int] = set()
    for batch in batches:
        if isolation:
            while heap and heap[0][0] <= batch.last_offset:
                aborting.add(heapq.heappop(heap)[1])
        if batch.is_control:
            if isolation and batch.records:
                try:
                    ctype, _ = parse_control_record(batch.records[0])
                except DecodeError:
                    continue
                if ctype == CONTROL_ABORT:
                    aborting.discard(batch.producer_id)
            continue
        if isolation and batch.is_transactional and batch.producer_id in aborting:
            continue
        for rec in batch.records:
            yield batch, rec


class Consumer:
    def __init__(self, client: Client, args):
        self.client = client
        self.args = args
        self.topic = args.topic
        self.isolation = ISOLATION[args.isolation]
        self.meta = client.topic(self.topic)
        all_parts = sorted(p.partition_index for p in self.meta.partitions)
        if args.partition:
            for p in args.partition:
                if p not in all_parts:
                    raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                     f"Partition {p} of topic '{self.topic}' does not exist "
                                     f"(it has {len(all_parts)}).")
            self.partitions = sorted(set(args.partition))
        else:
            self.partitions = all_parts
        self.positions: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        self.coordinator = client.coordinator(args.group) if args.group else None
        self.count = 0

    # -- where to start

    def start_positions(self) -> None:
        a = self.args
        tps = {self.topic: self.partitions}
        explicit = a.from_beginning or a.offset is not None or a.from_timestamp is not None
        if a.group:
            committed = fetch_committed(self.client, a.group, tps, self.coordinator)
            self.committed = {p: off for (t, p), off in committed.items() if t == self.topic}
            if not explicit:
                self.positions.update(self.committed)
        missing = [p for p in self.partitions if p not in self.positions]
        if not missing:
            return
        tps = {self.topic: missing}
        if a.from_timestamp is not None:
            ts = parse_timestamp(a.from_timestamp)
            found = self.client.list_offsets(tps, ts, self.isolation)
            latest = self.client.list_offsets(tps, -1, self.isolation)
            for p in missing:
                off = found[(self.topic, p)]
                self.positions[p] = off if off >= 0 else latest[(self.topic, p)]
        elif a.offset is not None:
            self._explicit_offset(missing, a.offset)
        else:
            where = -2 if a.from_beginning else -1
            for (_, p), off in self.client.list_offsets(tps, where, self.isolation).items():
                self.positions[p] = off

    def _explicit_offset(self, parts: list[int], text: str) -> None:
        tps = {self.topic: parts}
        if text in ("earliest", "beginning"):
            offs = self.client.list_offsets(tps, -2)
            self.positions.update({p: offs[(self.topic, p)] for p in parts})
            return
        if text in ("latest", "end"):
            offs = self.client.list_offsets(tps, -1, self.isolation)
            self.positions.update({p: offs[(self.topic, p)] for p in parts})
            return
        try:
            n = int(text)
        except ValueError:
            raise UsageError(f"--offset expects a number, earliest or latest, got {text!r}") from None
        earliest = self.client.list_offsets(tps, -2)
        latest = self.client.list_offsets(tps, -1, self.isolation)
        for p in parts:
            lo, hi = earliest[(self.topic, p)], latest[(self.topic, p)]
            off = hi + n if n < 0 else n
            self.positions[p] = min(max(off, lo), hi)

    def _reset(self, p: int) -> None:
        """OFFSET_OUT_OF_RANGE: back to the earliest offset (--from-beginning) or the latest, like
        auto.offset.reset."""
        where = -2 if self.args.from_beginning else -1
        self.positions[p] = self.client.list_offsets({self.topic: [p]}, where, self.isolation)[(self.topic, p)]
        print(f"kafkapy consume: offset out of range on {self.topic}-{p}, reset to {self.positions[p]}",
              file=sys.stderr)

    # -- fetching

    def fetch_once(self, max_wait_ms: int, printer: Printer, limit: int | None) -> int:
        """One Fetch per leader; prints records; returns how many were printed."""
        by_leader: dict[int, list[int]] = {}
        for p in self.partitions:
            by_leader.setdefault(self.client.leader(self.topic, p), []).append(p)
        printed = 0
        F = P.module("fetch_request")
        for node, parts in by_leader.items():
            topic_id = self.meta.topic_id

            def build(v, parts=parts, topic_id=topic_id):
                if v >= 13 and not topic_id.int:
                    raise ToolError("the broker's Fetch needs topic ids its Metadata does not give")
                return F.FetchRequest(
                    replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=50 * 1024 * 1024,
                    isolation_level=self.isolation, session_id=0, session_epoch=-1,
                    topics=[F.FetchTopic(topic=self.topic, topic_id=topic_id, partitions=[
                        F.FetchPartition(partition=p, fetch_offset=self.positions[p], log_start_offset=-1,
                                         partition_max_bytes=self.args.fetch_max_bytes) for p in parts])],
                    forgotten_topics_data=[], rack_id="")

            resp, v = self.client.call("Fetch", build, node, timeout=self.client.timeout + max_wait_ms / 1000)
            if v >= 7 and resp.error_code:
                raise KafkaError(resp.error_code, None, "Fetch")
            refresh = False
            for t in resp.responses:
                for pd in t.partitions:
                    p = pd.partition_index
                    if pd.error_code == ErrorCode.OFFSET_OUT_OF_RANGE:
                        self._reset(p)
                        continue
                    if pd.error_code in REFRESH_ERRORS:
                        refresh = True
                        continue
                    if pd.error_code:
                        raise KafkaError(pd.error_code, None, f"Fetch {self.topic}-{p}")
                    n = self._consume_partition(p, pd, printer, None if limit is None else limit - printed)
                    printed += n
                    if limit is not None and printed >= limit:
                        return printed
            if refresh:
                time.sleep(0.1)
                self.meta = self.client.topic(self.topic)
        return printed

    def _consume_partition(self, p: int, pd, printer: Printer, limit: int | None) -> int:
        data = pd.records
        if not data:
            return 0
        try:
            batches = decode_batches(bytes(data))
        except DecodeError as e:
            raise ToolError(f"corrupt record batch in {self.topic}-{p} at offset {self.positions[p]}: {e}") \
                from None
        fetch_offset = self.positions[p]
        n = 0
        out = []
        new_position = fetch_offset
        for batch in batches:
            if batch.next_offset > new_position:
                new_position = batch.next_offset
        for batch, rec in committed_records(batches, getattr(pd, "aborted_transactions", None), self.isolation):
            if rec.offset < fetch_offset:
                continue
            if limit is not None and n >= limit:
                new_position = rec.offset
                break
            out.append(printer.line(self.topic, p, batch, rec))
            n += 1
        if out:
            printer.out.write(b"".join(out))
            printer.out.flush()
        self.positions[p] = new_position
        return n

    def commit(self) -> None:
        if not self.args.group:
            return
        changed = {(self.topic, p): off for p, off in self.positions.items() if self.committed.get(p) != off}
        if changed:
            commit_offsets(self.client, self.args.group, changed, coordinator=self.coordinator)
            for (_, p), off in changed.items():
                self.committed[p] = off


def run(args) -> int:
    if args.max_messages is not None and args.max_messages < 0:
        raise UsageError("--max-messages must not be negative")
    out = sys.stdout.buffer
    printer = Printer(args, out)
    with client_from(args) as client:
        consumer = Consumer(client, args)
        consumer.start_positions()
        idle_since = time.monotonic()
        try:
            while args.max_messages is None or consumer.count < args.max_messages:
                wait = args.max_wait_ms
                if args.timeout_ms is not None:
                    left = args.timeout_ms - (time.monotonic() - idle_since) * 1000
                    if left <= 0:
                        break
                    wait = max(0, min(wait, int(left)))
                limit = None if args.max_messages is None else args.max_messages - consumer.count
                n = consumer.fetch_once(wait, printer, limit)
                consumer.count += n
                if n:
                    idle_since = time.monotonic()
                    consumer.commit()
        except KeyboardInterrupt:
            pass
        finally:
            try:
                consumer.commit()
            finally:
                print(f"Processed a total of {consumer.count} messages", file=sys.stderr)
    return 0
