"""``kafkapy produce TOPIC``: one record per line of stdin, sent in batches; a summary on stderr."""

from __future__ import annotations

import argparse
import os
import random
import select
import sys
import time

from kafkapy.tools import UsageError, add_common, client_from, parse_kv
from kafkapy.tools.client import Client, KafkaError, ToolError, check, partition_for_key
from wire import protocol as P
from wire.compression import CODEC_IDS
from wire.messages.error_codes import ErrorCode
from wire.records import Record, build_batch

ACKS = {"all": -1, "-1": -1, "1": 1, "0": 0}
RETRIABLE_LEADER_ERRORS = (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.LEADER_NOT_AVAILABLE,
                           ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.REQUEST_TIMED_OUT,
                           ErrorCode.NOT_ENOUGH_REPLICAS, ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kafkapy produce",
        description="Send each line of stdin as one record. Lines are batched (up to --batch-size records, or "
                    "what arrived within --linger-ms); with --key-separator the text before the first separator "
                    "is the key (a line without it has a null key). Keyed records go to the partition Kafka's "
                    "Java client would pick (murmur2); others fill one partition per batch.")
    add_common(p)
    p.add_argument("topic")
    p.add_argument("--partition", type=int, default=None, help="send every record to this partition")
    p.add_argument("--key-separator", default=None, metavar="SEP", help="split each line into KEY SEP VALUE")
    p.add_argument("--header", action="append", default=[], metavar="KEY=VALUE",
                   help="a header added to every record (repeatable)")
    p.add_argument("--compression", choices=sorted(CODEC_IDS, key=CODEC_IDS.get), default="none")
    p.add_argument("--acks", choices=("all", "-1", "1", "0"), default="all",
                   help="all (default): wait for the write; 1: the leader's write; 0: no answer at all")
    p.add_argument("--batch-size", type=int, default=500, metavar="N", help="most records per batch (500)")
    p.add_argument("--max-batch-bytes", type=int, default=512 * 1024, metavar="BYTES",
                   help="most uncompressed bytes per batch (512 KiB)")
    p.add_argument("--linger-ms", type=int, default=50, metavar="MS",
                   help="how long to wait for more lines before sending a partial batch (50)")
    return p


class Producer:
    def __init__(self, client: Client, topic: str, args):
        self.client = client
        self.topic = topic
        self.args = args
        self.acks = ACKS[args.acks]
        self.compression = CODEC_IDS[args.compression]
        self.headers = [(k, v.encode()) for k, v in parse_kv(args.header, "--header")]
        self.sep = args.key_separator.encode() if args.key_separator else None
        self.meta = self._topic_metadata()
        self.num_partitions = len(self.meta.partitions)
        if args.partition is not None and not 0 <= args.partition < self.num_partitions:
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             f"Partition {args.partition} of topic '{topic}' does not exist "
                             f"(it has {self.num_partitions}).")
        self.sticky = random.randrange(self.num_partitions)
        self.sent = 0
        self.offsets: dict[int, list[int]] = {}     # partition -> [first, last]

    def _topic_metadata(self):
        """The topic's metadata, creating it when the broker auto-creates topics (like Kafka's producers)."""
        deadline = time.monotonic() + self.client.timeout
        while True:
            resp = self.client.metadata([self.topic], allow_auto_create=True)
            t = next((t for t in resp.topics if t.name == self.topic), None)
            code = t.error_code if t is not None else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            if code == 0 and t.partitions and all(p.leader_id >= 0 for p in t.partitions):
                return t
            if code in (0, ErrorCode.LEADER_NOT_AVAILABLE) and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            if code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                raise KafkaError(code, f"Topic '{self.topic}' does not exist (and the broker does not "
                                       f"auto-create topics).")
            check(code, None, self.topic)
            raise ToolError(f"topic {self.topic} has no leader for some partitions")

    def record(self, line: bytes, ts: int) -> tuple[int, Record]:
        key = None
        value = line
        if self.sep is not None:
            k, s, v = line.partition(self.sep)
            if s:
                key, value = k, v
        if self.args.partition is not None:
            part = self.args.partition
        elif key is not None:
            part = partition_for_key(key, self.num_partitions)
        else:
            part = self.sticky
        return part, Record(None, ts, key, value, self.headers)

    def send(self, records: list[tuple[int, Record]]) -> None:
        if not records:
            return
        by_partition: dict[int, list[Record]] = {}
        for part, rec in records:
            by_partition.setdefault(part, []).append(rec)
        self.sticky = (self.sticky + 1) % self.num_partitions
        batches = {p: build_batch(recs, compression=self.compression) for p, recs in by_partition.items()}
        counts = {p: len(recs) for p, recs in by_partition.items()}
        pending = dict(batches)
        for attempt in range(5):
            by_leader: dict[int, dict[int, bytes]] = {}
            for p, batch in pending.items():
                by_leader.setdefault(self.client.leader(self.topic, p), {})[p] = batch
            retry: dict[int, bytes] = {}
            for node, parts in by_leader.items():
                retry.update(self._produce(node, parts, counts, last=attempt == 4))
            if not retry:
                return
            pending = retry
            time.sleep(0.1 * (attempt + 1))
            self.client.metadata([self.topic])
        raise ToolError("gave up after 5 attempts")

    def _produce(self, node: int, parts: dict[int, bytes], counts: dict[int, int], last: bool) -> dict[int, bytes]:
        R = P.module("produce_request")
        timeout_ms = int(self.client.timeout * 1000)

        def build(v):
            return R.ProduceRequest(transactional_id=None, acks=self.acks, timeout_ms=timeout_ms, topic_data=[
                R.TopicProduceData(name=self.topic, partition_data=[
                    R.PartitionProduceData(index=p, records=b) for p, b in parts.items()])])

        resp, _ = self.client.call("Produce", build, node, timeout=self.client.timeout + 5,
                                   expect_response=self.acks != 0)
        if resp is None:      # acks=0: the broker sends nothing back
            self.sent += sum(counts[p] for p in parts)
            return {}
        retry = {}
        for t in resp.responses:
            for pr in t.partition_responses:
                if pr.error_code in RETRIABLE_LEADER_ERRORS and not last:
                    retry[pr.index] = parts[pr.index]
                    continue
                msg = pr.error_message if getattr(pr, "error_message", None) else None
                check(pr.error_code, msg, f"{self.topic}-{pr.index}")
                n = counts[pr.index]
                self.sent += n
                first, lastoff = pr.base_offset, pr.base_offset + n - 1
                span = self.offsets.get(pr.index)
                self.offsets[pr.index] = [first if span is None else span[0], lastoff]
        return retry

    def summary(self) -> str:
        noun = "record" if self.sent == 1 else "records"
        if self.acks == 0:
            return f"{self.sent} {noun} sent to {self.topic} (acks=0: offsets unknown)"
        spans = "; ".join(f"partition {p}: offsets {a}-{b}" if a != b else f"partition {p}: offset {a}"
                          for p, (a, b) in sorted(self.offsets.items()))
        return f"{self.sent} {noun} written to {self.topic}" + (f" ({spans})" if spans else "")


def read_lines(fd: int, linger: float, max_records: int, max_bytes: int):
    """Yield lists of lines (bytes, newline removed): whatever arrived, at most ``max_records`` /
    ``max_bytes`` per list, flushed when no more input came within ``linger`` seconds or at end of input."""
    buf = b""
    lines: list[bytes] = []
    size = 0
    eof = False
    while not eof:
        try:
            ready = select.select([fd], [], [], linger)[0] if lines else [fd]
        except (OSError, ValueError):
            ready = [fd]
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                eof = True
                if buf:
                    lines.append(buf[:-1] if buf.endswith(b"\r") else buf)
                    buf = b""
            else:
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for line in complete:
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    lines.append(line)
                    size += len(line)
                    if len(lines) >= max_records or size >= max_bytes:
                        yield lines
                        lines, size = [], 0
                continue
        if lines:
            yield lines
            lines, size = [], 0
    if lines:
        yield lines


def run(args) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.key_separator == "":
        raise UsageError("--key-separator must not be empty")
    with client_from(args) as client:
        producer = Producer(client, args.topic, args)
        try:
            for lines in read_lines(sys.stdin.fileno(), args.linger_ms / 1000, args.batch_size,
                                    args.max_batch_bytes):
                now = int(time.time() * 1000)
                producer.send([producer.record(line, now) for line in lines])
        except BaseException:
            if producer.sent:      # say what did get written before the error
                print(f"kafkapy produce: {producer.summary()}", file=sys.stderr)
            raise
        print(f"kafkapy produce: {producer.summary()}", file=sys.stderr)
    return 0
