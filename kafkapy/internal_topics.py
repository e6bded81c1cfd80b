"""What the coordinators share about Kafka's internal topics (``__consumer_offsets``, ``__transaction_state``):
their names (defined here only), which partition a key lives in, and reading a whole partition back on start."""

from __future__ import annotations

from collections.abc import Iterator

from wire.records import RecordBatch, decode_batches

OFFSETS_TOPIC = "__consumer_offsets"              # Kafka's Topic.GROUP_METADATA_TOPIC_NAME
TRANSACTION_STATE_TOPIC = "__transaction_state"   # Kafka's Topic.TRANSACTION_STATE_TOPIC_NAME
INTERNAL_TOPICS = (OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC)


def java_string_hash(s: str) -> int:
    """Java's String.hashCode: s[0]*31^(n-1) + ... over UTF-16 code units, in 32-bit two's complement."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def java_abs(n: int) -> int:
    """Kafka's Utils.abs: Integer.MIN_VALUE maps to 0."""
    return 0 if n == -(1 << 31) else abs(n)


def partition_for(key: str, partitions: int) -> int:
    """The internal-topic partition of a group id or transactional id: Utils.abs(key.hashCode) % partitions."""
    return java_abs(java_string_hash(key)) % partitions


def iter_batches(log, chunk: int = 1 << 20) -> Iterator[RecordBatch]:
    """Every batch of a partition log from its log start offset to its end, decoded (CRC-checked)."""
    pos = log.log_start_offset
    end = log.log_end_offset
    while pos < end:
        data = log.read(pos, chunk)
        if not data:
            return
        batches = decode_batches(bytes(data))
        if not batches:
            return
        yield from batches
        pos = batches[-1].next_offset
