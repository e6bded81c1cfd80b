"""Record batches (magic v2), as Kafka writes them on the wire and on disk.

Batch header layout (61 bytes), big-endian:
  0 baseOffset int64 | 8 batchLength int32 | 12 partitionLeaderEpoch int32 | 16 magic int8 |
  17 crc uint32 (CRC32C of bytes 21..end) | 21 attributes int16 | 23 lastOffsetDelta int32 |
  27 baseTimestamp int64 | 35 maxTimestamp int64 | 43 producerId int64 | 51 producerEpoch int16 |
  53 baseSequence int32 | 57 recordCount int32 | 61 records...
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from crc32c import crc32c

from wire.errors import DecodeError

BATCH_OVERHEAD = 61          # full v2 header
LOG_OVERHEAD = 12            # baseOffset + batchLength: batchLength counts the bytes after these
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21

# attributes bits
COMPRESSION_MASK = 0x07      # 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd
TIMESTAMP_TYPE_MASK = 0x08   # 0 CreateTime, 1 LogAppendTime
TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20
DELETE_HORIZON_FLAG = 0x40

NO_PRODUCER_ID = -1
NO_SEQUENCE = -1

_HEADER = struct.Struct(">qiibIhiqqqhii")


class BatchHeader(NamedTuple):
    base_offset: int
    batch_length: int            # bytes after the first 12 (so the batch is batch_length + 12 bytes)
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_FLAG)

    @property
    def log_append_time(self) -> bool:
        return bool(self.attributes & TIMESTAMP_TYPE_MASK)


def read_batch_header(buf, pos: int = 0) -> BatchHeader:
    """Parse the 61-byte v2 header at ``pos``. Checks only that the bytes are there and magic is 2."""
    if len(buf) - pos < BATCH_OVERHEAD:
        raise DecodeError(f"record batch header needs {BATCH_OVERHEAD} bytes, {len(buf) - pos} left", "RecordBatch")
    h = BatchHeader._make(_HEADER.unpack_from(buf, pos))
    if h.magic != 2:
        raise DecodeError(f"unsupported magic {h.magic}", "RecordBatch.magic")
    if h.batch_length < BATCH_OVERHEAD - LOG_OVERHEAD:
        raise DecodeError(f"batch length {h.batch_length} shorter than the header", "RecordBatch.batchLength")
    return h


def batch_crc_ok(buf, pos: int, size: int) -> bool:
    """True when the stored CRC32C matches bytes ``attributes..end`` of the batch at ``pos``."""
    (stored,) = struct.unpack_from(">I", buf, pos + CRC_OFFSET)
    return crc32c(memoryview(buf)[pos + ATTRIBUTES_OFFSET:pos + size]) == stored


def set_base_offset(buf: bytearray | memoryview, pos: int, base_offset: int) -> None:
    """Patch baseOffset in place; the CRC does not cover it."""
    struct.pack_into(">q", buf, pos, base_offset)


def set_partition_leader_epoch(buf: bytearray | memoryview, pos: int, epoch: int) -> None:
    struct.pack_into(">i", buf, pos + 12, epoch)
