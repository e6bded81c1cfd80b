"""Record batches (magic v2), as Kafka writes them on the wire and on disk.

Batch header layout (61 bytes), big-endian:
  0 baseOffset int64 | 8 batchLength int32 | 12 partitionLeaderEpoch int32 | 16 magic int8 |
  17 crc uint32 (CRC32C of bytes 21..end) | 21 attributes int16 | 23 lastOffsetDelta int32 |
  27 baseTimestamp int64 | 35 maxTimestamp int64 | 43 producerId int64 | 51 producerEpoch int16 |
  53 baseSequence int32 | 57 recordCount int32 | 61 records...
"""

from __future__ import annotations

import struct
import time
import zlib
from typing import NamedTuple

from crc32c import crc32c

from wire import compression as _compression
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


# ------------------------------------------------------------------------------------------------
# Records inside a v2 batch (Kafka's DefaultRecord) and whole batches (DefaultRecordBatch)
# ------------------------------------------------------------------------------------------------

NO_TIMESTAMP = -1
CREATE_TIME = 0
LOG_APPEND_TIME = 1

# control record types (ControlRecordType)
CONTROL_ABORT = 0
CONTROL_COMMIT = 1

_LEGACY_HEADER_UP_TO_MAGIC = 17   # baseOffset, length, leader epoch / crc, magic: enough to find the batch size
_MIN_RECORD_BODY = 6              # attributes, timestampDelta, offsetDelta, keyLength, valueLength, headerCount
_INT16x2 = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_UINT32 = struct.Struct(">I")


class Record:
    """One record of a batch. ``offset`` and ``timestamp`` are absolute; headers are ``(str, bytes | None)``."""

    __slots__ = ("offset", "timestamp", "key", "value", "headers")

    def __init__(self, offset: int | None = None, timestamp: int | None = None, key: bytes | None = None,
                 value: bytes | None = None, headers: list | tuple = ()):
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = list(headers)

    def __eq__(self, other):
        if not isinstance(other, Record):
            return NotImplemented
        return (self.offset == other.offset and self.timestamp == other.timestamp and self.key == other.key
                and self.value == other.value and self.headers == other.headers)

    __hash__ = None

    def __repr__(self):
        return (f"Record(offset={self.offset!r}, timestamp={self.timestamp!r}, key={self.key!r}, "
                f"value={self.value!r}, headers={self.headers!r})")


class RecordBatch:
    """A decoded v2 record batch: every header field plus the records."""

    __slots__ = ("base_offset", "batch_length", "partition_leader_epoch", "magic", "crc", "attributes",
                 "last_offset_delta", "base_timestamp", "max_timestamp", "producer_id", "producer_epoch",
                 "base_sequence", "record_count", "records")

    def __init__(self, header: BatchHeader, records: list[Record]):
        (self.base_offset, self.batch_length, self.partition_leader_epoch, self.magic, self.crc, self.attributes,
         self.last_offset_delta, self.base_timestamp, self.max_timestamp, self.producer_id, self.producer_epoch,
         self.base_sequence, self.record_count) = header
        self.records = records

    @property
    def header(self) -> BatchHeader:
        return BatchHeader(self.base_offset, self.batch_length, self.partition_leader_epoch, self.magic, self.crc,
                           self.attributes, self.last_offset_delta, self.base_timestamp, self.max_timestamp,
                           self.producer_id, self.producer_epoch, self.base_sequence, self.record_count)

    @property
    def size(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def timestamp_type(self) -> int:
        """0 CreateTime, 1 LogAppendTime."""
        return LOG_APPEND_TIME if self.attributes & TIMESTAMP_TYPE_MASK else CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_FLAG)

    @property
    def has_delete_horizon(self) -> bool:
        return bool(self.attributes & DELETE_HORIZON_FLAG)

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __repr__(self):
        return (f"RecordBatch(base_offset={self.base_offset}, last_offset_delta={self.last_offset_delta}, "
                f"attributes={self.attributes:#x}, producer_id={self.producer_id}, "
                f"producer_epoch={self.producer_epoch}, base_sequence={self.base_sequence}, "
                f"records={self.records!r})")


# --- varints (zigzag, as Kafka's ByteUtils.readVarint / readVarlong) --------------------------------

def _read_varint(buf, pos: int, end: int, field: str, max_bytes: int = 5) -> tuple[int, int]:
    """Zigzag varint at ``pos``, not reading at or past ``end``. Returns (value, new position)."""
    value = 0
    shift = 0
    for _ in range(max_bytes):
        if pos >= end:
            raise DecodeError("truncated varint", field)
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if value >> (32 if max_bytes == 5 else 64):
                raise DecodeError("varint out of range", field)
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
    raise DecodeError(f"varint longer than {max_bytes} bytes", field)


def _read_varlong(buf, pos: int, end: int, field: str) -> tuple[int, int]:
    return _read_varint(buf, pos, end, field, 10)


def _zigzag_bytes(value: int) -> bytes:
    v = (value << 1) ^ (value >> 63)
    v &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


_SMALL_VARINTS = [_zigzag_bytes(i) for i in range(-1, 64)]


def encode_varint(value: int) -> bytes:
    """Zigzag varint (also varlong) bytes of ``value``."""
    if -1 <= value < 63:
        return _SMALL_VARINTS[value + 1]
    return _zigzag_bytes(value)


def _read_bytes(buf, pos: int, end: int, field: str) -> tuple[bytes | None, int]:
    n, pos = _read_varint(buf, pos, end, field)
    if n < 0:
        if n == -1:
            return None, pos
        raise DecodeError(f"negative length {n}", field)
    if n > end - pos:
        raise DecodeError(f"length {n} beyond the {end - pos} bytes left", field)
    return bytes(buf[pos:pos + n]), pos + n


# --- record decode -------------------------------------------------------------------------------

def _decode_records(buf, pos: int, end: int, count: int, base_offset: int, base_timestamp: int,
                    log_append_time: int | None) -> list[Record]:
    """Decode exactly ``count`` records filling ``buf[pos:end]``."""
    if count < 0:
        raise DecodeError(f"negative record count {count}", "RecordBatch.recordCount")
    if count > (end - pos) // (_MIN_RECORD_BODY + 1):
        raise DecodeError(f"record count {count} does not fit in {end - pos} bytes", "RecordBatch.recordCount")
    records = []
    append = records.append
    for _ in range(count):
        length, pos = _read_varint(buf, pos, end, "Record.length")
        if length < _MIN_RECORD_BODY:
            raise DecodeError(f"record length {length} shorter than the smallest record", "Record.length")
        if length > end - pos:
            raise DecodeError(f"record length {length} beyond the {end - pos} bytes left", "Record.length")
        rec_end = pos + length
        pos += 1  # attributes: unused
        ts_delta, pos = _read_varlong(buf, pos, rec_end, "Record.timestampDelta")
        offset_delta, pos = _read_varint(buf, pos, rec_end, "Record.offsetDelta")
        key, pos = _read_bytes(buf, pos, rec_end, "Record.key")
        value, pos = _read_bytes(buf, pos, rec_end, "Record.value")
        n_headers, pos = _read_varint(buf, pos, rec_end, "Record.headers")
        headers = []
        if n_headers:
            if n_headers < 0:
                raise DecodeError(f"negative header count {n_headers}", "Record.headers")
            if n_headers > (rec_end - pos) // 2:
                raise DecodeError(f"header count {n_headers} does not fit in {rec_end - pos} bytes", "Record.headers")
            for _ in range(n_headers):
                hkey, pos = _read_bytes(buf, pos, rec_end, "Record.headerKey")
                if hkey is None:
                    raise DecodeError("null header key", "Record.headerKey")
                try:
                    hkey = hkey.decode("utf-8")
                except UnicodeDecodeError:
                    raise DecodeError("header key is not valid UTF-8", "Record.headerKey") from None
                hvalue, pos = _read_bytes(buf, pos, rec_end, "Record.headerValue")
                headers.append((hkey, hvalue))
        if pos != rec_end:
            raise DecodeError(f"record body has {rec_end - pos} bytes left after the headers", "Record.length")
        timestamp = base_timestamp + ts_delta if log_append_time is None else log_append_time
        append(Record(base_offset + offset_delta, timestamp, key, value, headers))
    if pos != end:
        raise DecodeError(f"{end - pos} bytes left after {count} records", "RecordBatch.recordCount")
    return records


def _skip_bytes(buf, pos: int, end: int, field: str, nullable: bool = True) -> int:
    b = buf[pos] if pos < end else 0x80
    if b < 0x80:   # one-byte varint: length -64..63
        n = (b >> 1) ^ -(b & 1)
        pos += 1
    else:
        n, pos = _read_varint(buf, pos, end, field)
    if n < 0:
        if n == -1 and nullable:
            return pos
        raise DecodeError(f"negative length {n}", field)
    if n > end - pos:
        raise DecodeError(f"length {n} beyond the {end - pos} bytes left", field)
    return pos + n


def validate_records(buf, pos: int = 0, max_decompressed_size: int | None = None) -> int:
    """Check the records of the v2 batch at ``pos`` the way Kafka's LogValidator reads them, without building
    them: exactly recordCount records filling the batch, each record's fields inside its length, offset deltas
    0, 1, 2..., valid varints, header counts and lengths in range (compressed batches are decompressed, bounded).
    Returns the number of records; raises DecodeError naming the field."""
    h = read_batch_header(buf, pos)
    size = h.batch_length + LOG_OVERHEAD
    if size > len(buf) - pos:
        raise DecodeError(f"batch of {size} bytes with {len(buf) - pos} left", "RecordBatch.batchLength")
    codec = h.attributes & COMPRESSION_MASK
    if codec == 0:
        data, p, end = buf, pos + BATCH_OVERHEAD, pos + size
    else:
        limit = _compression.MAX_DECOMPRESSED_SIZE if max_decompressed_size is None else max_decompressed_size
        data = _compression.decompress(codec, memoryview(buf)[pos + BATCH_OVERHEAD:pos + size], limit)
        p, end = 0, len(data)
    count = h.record_count
    if count < 0 or count > (end - p) // (_MIN_RECORD_BODY + 1):
        raise DecodeError(f"record count {count} does not fit in {end - p} bytes", "RecordBatch.recordCount")
    try:
        p = _walk_records(data, p, end, count)
    except IndexError:
        raise DecodeError("truncated record", "Record") from None
    if p != end:
        raise DecodeError(f"{end - p} bytes left after {count} records", "RecordBatch.recordCount")
    return count


def _walk_records(data, p: int, end: int, count: int) -> int:
    """The hot loop of validate_records: single-byte varints (the common case) are read inline. Reading past a
    record's end is caught by the final position check of that record; past the buffer by an IndexError."""
    rv = _read_varint
    for i in range(count):
        b = data[p]
        if b < 0x80:
            length = (b >> 1) ^ -(b & 1)
            p += 1
        else:
            length, p = rv(data, p, end, "Record.length")
        if length < _MIN_RECORD_BODY or length > end - p:
            raise DecodeError(f"record length {length} outside the {end - p} bytes left", "Record.length")
        rec_end = p + length
        p += 1                                              # attributes
        if data[p] < 0x80:                                  # timestampDelta
            p += 1
        else:
            _, p = rv(data, p, rec_end, "Record.timestampDelta", 10)
        b = data[p]                                         # offsetDelta
        if b < 0x80:
            delta = (b >> 1) ^ -(b & 1)
            p += 1
        else:
            delta, p = rv(data, p, rec_end, "Record.offsetDelta")
        if delta != i:
            raise DecodeError(f"offset delta {delta} where {i} was expected", "Record.offsetDelta")
        for field in ("Record.key", "Record.value"):
            b = data[p]
            if b < 0x80:
                n = (b >> 1) ^ -(b & 1)
                p += 1
            else:
                n, p = rv(data, p, rec_end, field)
            if n >= 0:
                p += n
            elif n != -1:
                raise DecodeError(f"negative length {n}", field)
        b = data[p]                                         # header count
        if b < 0x80:
            n_headers = (b >> 1) ^ -(b & 1)
            p += 1
        else:
            n_headers, p = rv(data, p, rec_end, "Record.headers")
        if n_headers:
            if n_headers < 0 or n_headers > (rec_end - p) // 2:
                raise DecodeError(f"header count {n_headers} does not fit in {rec_end - p} bytes", "Record.headers")
            for _ in range(n_headers):
                p = _skip_bytes(data, p, rec_end, "Record.headerKey", nullable=False)
                p = _skip_bytes(data, p, rec_end, "Record.headerValue")
        if p != rec_end:
            raise DecodeError(f"record fields end {p - rec_end:+d} bytes from its length", "Record.length")
    return p


def decode_batch(buf, pos: int = 0, verify_crc: bool = True, max_decompressed_size: int | None = None) -> RecordBatch:
    """Decode the whole v2 batch at ``pos`` (header, CRC check, decompression, records)."""
    h = read_batch_header(buf, pos)
    size = h.batch_length + LOG_OVERHEAD
    if size > len(buf) - pos:
        raise DecodeError(f"batch of {size} bytes with {len(buf) - pos} left", "RecordBatch.batchLength")
    if verify_crc and not batch_crc_ok(buf, pos, size):
        raise DecodeError(f"CRC mismatch (stored {h.crc:#010x})", "RecordBatch.crc")
    log_append_time = h.max_timestamp if h.attributes & TIMESTAMP_TYPE_MASK else None
    codec = h.attributes & COMPRESSION_MASK
    if codec == 0:
        data = bytes(memoryview(buf)[pos + BATCH_OVERHEAD:pos + size])
    else:
        limit = _compression.MAX_DECOMPRESSED_SIZE if max_decompressed_size is None else max_decompressed_size
        data = _compression.decompress(codec, memoryview(buf)[pos + BATCH_OVERHEAD:pos + size], limit)
    records = _decode_records(data, 0, len(data), h.record_count, h.base_offset, h.base_timestamp, log_append_time)
    return RecordBatch(h, records)


def iter_batch_headers(buf, allow_partial: bool = True):
    """Yield ``(pos, BatchHeader)`` for consecutive v2 batches in ``buf`` without decoding records.

    A trailing partial batch ends the iteration (as Kafka consumers treat a fetch cut at max bytes), or raises
    ``DecodeError`` when ``allow_partial`` is false (e.g. a produce request, where every byte must belong to a
    batch). No CRC check here: use ``batch_crc_ok(buf, pos, header.size)``.
    """
    pos = 0
    end = len(buf)
    while pos < end:
        left = end - pos
        if left < _LEGACY_HEADER_UP_TO_MAGIC:
            if allow_partial:
                return
            raise DecodeError(f"{left} trailing bytes, not a whole batch", "RecordBatch")
        (length,) = _INT32.unpack_from(buf, pos + 8)
        if length < BATCH_OVERHEAD - LOG_OVERHEAD:
            raise DecodeError(f"batch length {length} shorter than the header", "RecordBatch.batchLength")
        if length + LOG_OVERHEAD > left:
            if allow_partial:
                return
            raise DecodeError(f"batch of {length + LOG_OVERHEAD} bytes with {left} left", "RecordBatch.batchLength")
        h = read_batch_header(buf, pos)
        yield pos, h
        pos += length + LOG_OVERHEAD


def decode_batches(buf, verify_crc: bool = True, max_decompressed_size: int | None = None) -> list[RecordBatch]:
    """Decode consecutive batches; a trailing partial batch is ignored."""
    return [decode_batch(buf, pos, verify_crc, max_decompressed_size) for pos, _ in iter_batch_headers(buf)]


# --- build ---------------------------------------------------------------------------------------

def _encode_bytes(b) -> bytes:
    if b is None:
        return b"\x01"   # varint -1
    return encode_varint(len(b)) + bytes(b)


def encode_record(offset_delta: int, timestamp_delta: int, key, value, headers=()) -> bytes:
    """One DefaultRecord, length prefix included."""
    parts = [b"\x00", encode_varint(timestamp_delta), encode_varint(offset_delta), _encode_bytes(key),
             _encode_bytes(value), encode_varint(len(headers))]
    for hkey, hvalue in headers:
        if isinstance(hkey, str):
            hkey = hkey.encode("utf-8")
        parts.append(_encode_bytes(hkey))
        parts.append(_encode_bytes(hvalue))
    body = b"".join(parts)
    return encode_varint(len(body)) + body


def _as_record(r, index: int) -> Record:
    if isinstance(r, Record):
        return r
    r = tuple(r)
    if len(r) == 2:
        return Record(None, None, r[0], r[1])
    if len(r) == 3:
        return Record(None, None, r[0], r[1], r[2])
    if len(r) == 5:
        return Record(*r)
    raise TypeError(f"record {index}: expected Record, (key, value), (key, value, headers) "
                    f"or (offset, timestamp, key, value, headers), got {len(r)} items")


def build_batch(records, *, base_offset: int = 0, compression: int = 0, producer_id: int = -1,
                producer_epoch: int = -1, base_sequence: int = -1, transactional: bool = False,
                control: bool = False, timestamp_type: int = 0, partition_leader_epoch: int = -1,
                base_timestamp: int | None = None, max_timestamp: int | None = None,
                compression_level: int | None = None) -> bytes:
    """Build one v2 batch (CRC32C included).

    ``records`` are ``Record`` objects or tuples ``(key, value)``, ``(key, value, headers)`` or
    ``(offset, timestamp, key, value, headers)``. A record offset of ``None`` means "next one" (base_offset,
    base_offset + 1, ...); given offsets are absolute and must not be below ``base_offset``. A timestamp of
    ``None`` means the batch's base timestamp (``base_timestamp``, else now). ``base_timestamp`` defaults to the
    first record's timestamp, like Kafka's MemoryRecordsBuilder; ``max_timestamp`` to the largest record
    timestamp (pass it to stamp a LogAppendTime batch).
    """
    recs = [_as_record(r, i) for i, r in enumerate(records)]
    if base_timestamp is None:
        first = recs[0].timestamp if recs else None
        if first is None:
            first = int(time.time() * 1000) if recs else NO_TIMESTAMP
        base_timestamp = first
    parts = []
    last_delta = 0
    max_ts = None
    for i, r in enumerate(recs):
        delta = i if r.offset is None else r.offset - base_offset
        if delta < 0 or delta > 0x7FFFFFFF:
            raise ValueError(f"record {i}: offset {r.offset} does not fit a batch with base offset {base_offset}")
        ts = base_timestamp if r.timestamp is None else r.timestamp
        max_ts = ts if max_ts is None or ts > max_ts else max_ts
        last_delta = max(last_delta, delta)
        parts.append(encode_record(delta, ts - base_timestamp, r.key, r.value, r.headers))
    payload = b"".join(parts)
    if max_timestamp is None:
        max_timestamp = NO_TIMESTAMP if max_ts is None else max_ts
    if compression:
        payload = _compression.compress(compression, payload, level=compression_level)
    attributes = compression & COMPRESSION_MASK
    if timestamp_type:
        attributes |= TIMESTAMP_TYPE_MASK
    if transactional:
        attributes |= TRANSACTIONAL_FLAG
    if control:
        attributes |= CONTROL_FLAG
    out = bytearray(BATCH_OVERHEAD + len(payload))
    _HEADER.pack_into(out, 0, base_offset, len(out) - LOG_OVERHEAD, partition_leader_epoch, 2, 0, attributes,
                      last_delta, base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence,
                      len(recs))
    out[BATCH_OVERHEAD:] = payload
    _UINT32.pack_into(out, CRC_OFFSET, crc32c(memoryview(out)[ATTRIBUTES_OFFSET:]))
    return bytes(out)


# --- control batches (transaction markers) --------------------------------------------------------

def build_control_batch(commit: bool, producer_id: int, producer_epoch: int, coordinator_epoch: int,
                        base_offset: int = 0, timestamp: int | None = None,
                        partition_leader_epoch: int = -1) -> bytes:
    """A transaction marker batch: one control record, key (version 0, type 0 abort / 1 commit),
    value EndTransactionMarker (version 0, coordinatorEpoch)."""
    if timestamp is None:
        timestamp = int(time.time() * 1000)
    key = _INT16x2.pack(0, CONTROL_COMMIT if commit else CONTROL_ABORT)
    value = _CONTROL_VALUE.pack(0, coordinator_epoch)
    return build_batch([Record(base_offset, timestamp, key, value, [])], base_offset=base_offset,
                       producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=-1,
                       transactional=True, control=True, partition_leader_epoch=partition_leader_epoch)


def parse_control_record(record: Record) -> tuple[int, int | None]:
    """``(control type, coordinator epoch)`` of a control record; the epoch is None for non-marker types
    (e.g. KRaft's leader change, type 2)."""
    key = record.key
    if key is None or len(key) < 4:
        raise DecodeError("control record key needs 4 bytes", "ControlRecord.key")
    version, ctype = _INT16x2.unpack_from(key, 0)
    if version < 0:
        raise DecodeError(f"invalid control record version {version}", "ControlRecord.key")
    if ctype not in (CONTROL_ABORT, CONTROL_COMMIT):
        return ctype, None
    value = record.value
    if value is None or len(value) < _CONTROL_VALUE.size:
        raise DecodeError("end transaction marker value needs 6 bytes", "EndTransactionMarker")
    mversion, coordinator_epoch = _CONTROL_VALUE.unpack_from(value, 0)
    if mversion < 0:
        raise DecodeError(f"invalid end transaction marker version {mversion}", "EndTransactionMarker.version")
    return ctype, coordinator_epoch


# --- legacy message sets (magic 0 and 1), decode only ----------------------------------------------

_LEGACY_V0 = struct.Struct(">qiIbb")     # offset, messageSize, crc, magic, attributes
_LEGACY_LOG_OVERHEAD = 12
_LEGACY_MIN_V0 = 14                      # crc, magic, attributes, key length, value length
_LEGACY_MIN_V1 = 22


def decode_legacy_message_set(buf, max_decompressed_size: int | None = None, _inner: bool = False) -> list[Record]:
    """Decode a magic 0/1 message set (for inspection). Checks each message's CRC32; unpacks compressed
    wrapper messages. A trailing partial message is ignored. Timestamps are -1 for magic 0."""
    out: list[Record] = []
    pos = 0
    end = len(buf)
    while end - pos >= _LEGACY_LOG_OVERHEAD:
        offset, size = struct.unpack_from(">qi", buf, pos)
        if size < _LEGACY_MIN_V0:
            raise DecodeError(f"message size {size} too small", "Message.messageSize")
        if size > end - pos - _LEGACY_LOG_OVERHEAD:
            break
        mpos = pos + _LEGACY_LOG_OVERHEAD
        mend = mpos + size
        _, _, crc, magic, attributes = _LEGACY_V0.unpack_from(buf, pos)
        if magic not in (0, 1):
            raise DecodeError(f"magic {magic} in a legacy message set", "Message.magic")
        if magic == 1 and size < _LEGACY_MIN_V1:
            raise DecodeError(f"message size {size} too small for magic 1", "Message.messageSize")
        if zlib.crc32(memoryview(buf)[mpos + 4:mend]) != crc:
            raise DecodeError(f"CRC32 mismatch (stored {crc:#010x})", "Message.crc")
        p = mpos + 6
        timestamp = NO_TIMESTAMP
        if magic == 1:
            (timestamp,) = _INT64.unpack_from(buf, p)
            p += 8
        key, p = _legacy_bytes(buf, p, mend, "Message.key")
        value, p = _legacy_bytes(buf, p, mend, "Message.value")
        if p != mend:
            raise DecodeError(f"{mend - p} bytes left in message", "Message.messageSize")
        codec = attributes & COMPRESSION_MASK
        if codec == 0:
            out.append(Record(offset, timestamp, key, value, []))
        else:
            if _inner:
                raise DecodeError("nested compressed message", "Message.attributes")
            if codec not in _compression.CODEC_NAMES:
                raise DecodeError(f"unknown compression codec {codec}", "Message.attributes")
            if value is None:
                raise DecodeError("compressed wrapper message without a value", "Message.value")
            limit = _compression.MAX_DECOMPRESSED_SIZE if max_decompressed_size is None else max_decompressed_size
            inner = decode_legacy_message_set(_compression.decompress(codec, value, limit), limit, True)
            if magic == 1 and inner:
                # inner offsets are relative; the wrapper carries the absolute offset of the last one
                shift = offset - inner[-1].offset
                for r in inner:
                    r.offset += shift
                    if attributes & TIMESTAMP_TYPE_MASK:
                        r.timestamp = timestamp
            out.extend(inner)
        pos = mend
    return out


def _legacy_bytes(buf, pos: int, end: int, field: str) -> tuple[bytes | None, int]:
    if end - pos < 4:
        raise DecodeError("truncated length", field)
    (n,) = _INT32.unpack_from(buf, pos)
    pos += 4
    if n == -1:
        return None, pos
    if n < 0:
        raise DecodeError(f"negative length {n}", field)
    if n > end - pos:
        raise DecodeError(f"length {n} beyond the {end - pos} bytes left", field)
    return bytes(buf[pos:pos + n]), pos + n
