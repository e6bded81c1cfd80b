"""One log segment: a ``.log`` byte store plus its sparse ``.index`` and ``.timeindex``, Kafka's binary formats.

``<base>.index``      entries of 8 bytes: int32 offset relative to base, int32 file position (big-endian)
``<base>.timeindex``  entries of 12 bytes: int64 timestamp, int32 relative offset

Both are appended (not preallocated), so the number of entries is the file size / entry size. The offset index
maps the *last* offset of a batch to the position where that batch starts, one entry per
``index.interval.bytes`` of log, exactly as Kafka writes it; the time index maps the largest timestamp seen so far
to the last offset of the batch holding it. The in-memory copies (``array``) answer lookups; files are written
after the log bytes and can always be rebuilt from the log.
"""

from __future__ import annotations

import os
import struct
import time
from array import array
from bisect import bisect_left, bisect_right

from wire.errors import DecodeError
from wire.records import BATCH_OVERHEAD, COMPRESSION_MASK, LOG_OVERHEAD, BatchHeader, batch_crc_ok, read_batch_header

from .errors import KafkaStorageError

INT32_MAX = (1 << 31) - 1
RECOVERY_READ = 1 << 20
_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


def segment_file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


# ---------------------------------------------------------------------------------------------------------------------
# byte stores


class FileStore:
    """The ``.log`` file: appended with os.write (so an acknowledged append is in the OS once this returns),
    read with os.pread (one copy, into the returned bytes)."""

    header_readahead = 16384

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        st = os.fstat(self.fd)
        self.size = st.st_size
        self.mtime_ms = int(st.st_mtime * 1000)

    def append(self, data) -> None:
        view = memoryview(data).cast("B")
        start = self.size
        try:
            written = 0
            while written < len(view):
                written += os.write(self.fd, view[written:])
        except OSError as e:
            try:  # never leave half a batch behind
                os.ftruncate(self.fd, start)
            except OSError:
                pass
            raise KafkaStorageError(f"write to {self.path} failed: {e}") from e
        self.size = start + len(view)
        self.mtime_ms = int(time.time() * 1000)

    def read(self, pos: int, n: int):
        if n <= 0:
            return b""
        return os.pread(self.fd, n, pos)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.size = size

    def flush(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def delete(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class MemoryStore:
    """Memory backend: a list of immutable chunks (one per append). Reads inside one chunk are zero-copy
    memoryview slices; a read spanning chunks is joined (one copy). Appends never invalidate earlier views."""

    header_readahead = BATCH_OVERHEAD
    path = None

    def __init__(self):
        self.chunks: list[bytes] = []
        self.starts: list[int] = []
        self.size = 0
        self.mtime_ms = int(time.time() * 1000)

    def append(self, data) -> None:
        chunk = bytes(data)
        if not chunk:
            return
        self.chunks.append(chunk)
        self.starts.append(self.size)
        self.size += len(chunk)
        self.mtime_ms = int(time.time() * 1000)

    def read(self, pos: int, n: int):
        end = min(pos + n, self.size)
        if end <= pos:
            return b""
        i = bisect_right(self.starts, pos) - 1
        off = pos - self.starts[i]
        chunk = self.chunks[i]
        if off + (end - pos) <= len(chunk):
            return memoryview(chunk)[off:off + (end - pos)]
        parts = [memoryview(chunk)[off:]]
        got = len(chunk) - off
        while got < end - pos:
            i += 1
            c = self.chunks[i]
            take = min(len(c), end - pos - got)
            parts.append(memoryview(c)[:take])
            got += take
        return b"".join(parts)

    def truncate(self, size: int) -> None:
        if size >= self.size:
            return
        i = bisect_right(self.starts, size) - 1
        if i < 0:
            self.chunks, self.starts = [], []
        else:
            keep = size - self.starts[i]
            del self.chunks[i + 1:], self.starts[i + 1:]
            if keep == 0:
                del self.chunks[i], self.starts[i]
            else:
                self.chunks[i] = self.chunks[i][:keep]
        self.size = size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def delete(self) -> None:
        self.chunks, self.starts, self.size = [], [], 0


# ---------------------------------------------------------------------------------------------------------------------
# indexes


class _IndexFile:
    entry: struct.Struct

    def __init__(self, path: str | None):
        self.path = path
        self.fd = -1

    def ensure_file(self) -> None:
        if self.path is not None and self.fd < 0:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)

    def _write(self, data: bytes) -> None:
        if self.path is None:
            return
        self.ensure_file()
        os.write(self.fd, data)

    def _read_file(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _truncate_file(self, entries: int) -> None:
        if self.path is None:
            return
        self.ensure_file()
        os.ftruncate(self.fd, entries * self.entry.size)

    def flush(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)

    def close_file(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def delete(self) -> None:
        self.close_file()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class OffsetIndex(_IndexFile):
    entry = _OFFSET_ENTRY

    def __init__(self, base_offset: int, path: str | None):
        super().__init__(path)
        self.base_offset = base_offset
        self.rel_offsets = array("i")
        self.positions = array("i")

    def __len__(self) -> int:
        return len(self.rel_offsets)

    def load(self, log_size: int) -> bool:
        """Read the file; False when missing or failing Kafka's sanity checks (then it must be rebuilt)."""
        data = self._read_file()
        if data is None or len(data) % self.entry.size:
            return False
        rel, pos = array("i"), array("i")
        last_r = last_p = -1
        for r, p in self.entry.iter_unpack(data):
            if r < 0 or r <= last_r or p < last_p or p >= log_size:
                return False
            rel.append(r)
            pos.append(p)
            last_r, last_p = r, p
        self.rel_offsets, self.positions = rel, pos
        return True

    def append(self, offset: int, position: int) -> None:
        rel = offset - self.base_offset
        if self.rel_offsets and rel <= self.rel_offsets[-1]:
            return
        self.rel_offsets.append(rel)
        self.positions.append(position)
        self._write(self.entry.pack(rel, position))

    def lookup(self, offset: int) -> int:
        """Start position of a batch at or before the batch holding ``offset`` (0 when none is indexed)."""
        i = bisect_right(self.rel_offsets, offset - self.base_offset) - 1
        return self.positions[i] if i >= 0 else 0

    @property
    def last_position(self) -> int:
        return self.positions[-1] if self.positions else 0

    def truncate_to_position(self, size: int) -> None:
        n = bisect_left(self.positions, size)
        if n < len(self.positions):
            del self.rel_offsets[n:], self.positions[n:]
            self._truncate_file(n)

    def reset(self) -> None:
        self.rel_offsets, self.positions = array("i"), array("i")
        self._truncate_file(0)


class TimeIndex(_IndexFile):
    entry = _TIME_ENTRY

    def __init__(self, base_offset: int, path: str | None):
        super().__init__(path)
        self.base_offset = base_offset
        self.timestamps = array("q")
        self.rel_offsets = array("i")

    def __len__(self) -> int:
        return len(self.timestamps)

    def load(self) -> bool:
        data = self._read_file()
        if data is None or len(data) % self.entry.size:
            return False
        ts_arr, rel = array("q"), array("i")
        last_t, last_r = -(1 << 63), -1
        for t, r in self.entry.iter_unpack(data):
            if r < 0 or t <= last_t or r < last_r:
                return False
            ts_arr.append(t)
            rel.append(r)
            last_t, last_r = t, r
        self.timestamps, self.rel_offsets = ts_arr, rel
        return True

    @property
    def last_entry(self) -> tuple[int, int] | None:
        if not self.timestamps:
            return None
        return self.timestamps[-1], self.base_offset + self.rel_offsets[-1]

    def maybe_append(self, timestamp: int, offset: int) -> None:
        if timestamp < 0 or (self.timestamps and timestamp <= self.timestamps[-1]):
            return
        rel = offset - self.base_offset
        if self.rel_offsets and rel < self.rel_offsets[-1]:
            return
        self.timestamps.append(timestamp)
        self.rel_offsets.append(rel)
        self._write(self.entry.pack(timestamp, rel))

    def lookup(self, timestamp: int) -> int:
        """Offset of the largest entry with timestamp <= ``timestamp`` (the base offset when none)."""
        i = bisect_right(self.timestamps, timestamp) - 1
        return self.base_offset + self.rel_offsets[i] if i >= 0 else self.base_offset

    def truncate_to_offset(self, next_offset: int) -> None:
        """Drop entries pointing at offsets >= ``next_offset``."""
        n = bisect_left(self.rel_offsets, next_offset - self.base_offset)
        if n < len(self.timestamps):
            del self.timestamps[n:], self.rel_offsets[n:]
            self._truncate_file(n)

    def reset(self) -> None:
        self.timestamps, self.rel_offsets = array("q"), array("i")
        self._truncate_file(0)


# ---------------------------------------------------------------------------------------------------------------------
# record-level helpers (uncompressed batches only; storage does not decompress)


def _varint(buf, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long", "Record")


def record_timestamps(buf, pos: int, h: BatchHeader):
    """Yield (offset, timestamp) of each record of the batch at ``pos``; nothing for compressed batches
    (callers fall back to batch-level answers)."""
    if h.log_append_time:
        yield h.base_offset, h.max_timestamp
        return
    if h.attributes & COMPRESSION_MASK:
        return
    p = pos + BATCH_OVERHEAD
    end = pos + h.size
    try:
        for _ in range(h.record_count):
            length, p = _varint(buf, p)
            body = p
            if length <= 0 or body + length > end:
                return
            p += 1  # attributes
            ts_delta, p = _varint(buf, p)
            off_delta, p = _varint(buf, p)
            yield h.base_offset + off_delta, h.base_timestamp + ts_delta
            p = body + length
    except (IndexError, DecodeError):
        return


# ---------------------------------------------------------------------------------------------------------------------
# the segment


class LogSegment:
    def __init__(self, base_offset: int, store, offset_index: OffsetIndex, time_index: TimeIndex, created_ms: int):
        self.base_offset = base_offset
        self.store = store
        self.offset_index = offset_index
        self.time_index = time_index
        self.created_ms = created_ms
        self.next_offset = base_offset        # one past the last offset stored here
        self.max_timestamp = -1               # largest batch maxTimestamp
        self.offset_of_max_timestamp = -1     # last offset of the batch that holds it (Kafka's "shallow" offset)
        self.first_batch_timestamp: int | None = None
        self.bytes_since_last_index_entry = 0

    # -- construction

    @classmethod
    def open_files(cls, directory: str, base_offset: int, created_ms: int) -> LogSegment:
        store = FileStore(os.path.join(directory, segment_file_name(base_offset, ".log")))
        oi = OffsetIndex(base_offset, os.path.join(directory, segment_file_name(base_offset, ".index")))
        ti = TimeIndex(base_offset, os.path.join(directory, segment_file_name(base_offset, ".timeindex")))
        return cls(base_offset, store, oi, ti, created_ms)

    @classmethod
    def in_memory(cls, base_offset: int, created_ms: int) -> LogSegment:
        return cls(base_offset, MemoryStore(), OffsetIndex(base_offset, None), TimeIndex(base_offset, None), created_ms)

    @property
    def size(self) -> int:
        return self.store.size

    @property
    def largest_timestamp(self) -> int:
        """What time retention compares with (Kafka: max timestamp, or the file's mtime when there is none)."""
        return self.max_timestamp if self.max_timestamp >= 0 else self.store.mtime_ms

    def rolling_timestamp(self) -> int | None:
        return self.first_batch_timestamp if self.first_batch_timestamp is not None and \
            self.first_batch_timestamp >= 0 else None

    # -- writing

    def _index_batch(self, position: int, h_last_offset: int, max_ts: int, size: int, interval: int) -> None:
        if max_ts > self.max_timestamp:
            self.max_timestamp = max_ts
            self.offset_of_max_timestamp = h_last_offset
        if self.first_batch_timestamp is None:
            self.first_batch_timestamp = max_ts
        if self.bytes_since_last_index_entry > interval:
            self.offset_index.append(h_last_offset, position)
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
            self.bytes_since_last_index_entry = 0
        self.bytes_since_last_index_entry += size
        self.next_offset = h_last_offset + 1

    def append(self, data, batches: list[tuple[int, int, int, int]], interval: int) -> None:
        """Write ``data`` (whole batches), then index it. ``batches``: (position in data, last offset,
        max timestamp, size) per batch."""
        start = self.store.size
        self.store.append(data)          # log bytes first; index entries only after they are in the OS
        for rel_pos, last_offset, max_ts, size in batches:
            self._index_batch(start + rel_pos, last_offset, max_ts, size, interval)

    def on_become_inactive(self) -> None:
        """Kafka appends a final time-index entry for the segment's max timestamp when it stops being active."""
        self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)

    # -- reading

    def iter_headers(self, pos: int = 0):
        """Yield (position, BatchHeader) for stored batches from ``pos`` (a batch boundary)."""
        end = self.store.size
        readahead = self.store.header_readahead
        buf = b""
        buf_start = pos
        while pos + BATCH_OVERHEAD <= end:
            rel = pos - buf_start
            if rel + BATCH_OVERHEAD > len(buf):
                buf = self.store.read(pos, min(max(readahead, BATCH_OVERHEAD), end - pos))
                buf_start, rel = pos, 0
                if len(buf) < BATCH_OVERHEAD:
                    return
            try:
                h = read_batch_header(buf, rel)
            except DecodeError:
                return
            if pos + h.size > end:
                return
            yield pos, h
            pos += h.size

    def find_batch(self, offset: int) -> tuple[int, BatchHeader] | None:
        """The first batch whose last offset >= ``offset``."""
        for pos, h in self.iter_headers(self.offset_index.lookup(offset)):
            if h.last_offset >= offset:
                return pos, h
        return None

    def read(self, offset: int, max_bytes: int, max_offset: int | None, min_one_message: bool):
        """Bytes of whole batches from the one holding ``offset``; None when this segment has nothing at or after
        ``offset``."""
        found = self.find_batch(offset)
        if found is None:
            return None
        pos, h = found
        if max_offset is not None and h.last_offset >= max_offset:
            return b""
        if h.size > max_bytes and not min_one_message:
            return b""
        want = min(max(max_bytes, h.size), self.store.size - pos)
        buf = self.store.read(pos, want)
        cut = h.size
        n = len(buf)
        while cut + 27 <= n:
            size = _I32.unpack_from(buf, cut + 8)[0] + LOG_OVERHEAD
            if size < BATCH_OVERHEAD or cut + size > n:
                break
            if max_offset is not None:
                last = _I64.unpack_from(buf, cut)[0] + _I32.unpack_from(buf, cut + 23)[0]
                if last >= max_offset:
                    break
            cut += size
        if cut == n:
            return buf
        return memoryview(buf)[:cut]

    def find_offset_by_timestamp(self, timestamp: int, start_offset: int) -> tuple[int, int] | None:
        """(timestamp, offset) of the first record with timestamp >= ``timestamp`` and offset >= ``start_offset``."""
        hint = self.time_index.lookup(timestamp)
        for pos, h in self.iter_headers(self.offset_index.lookup(max(hint, start_offset))):
            if h.max_timestamp < timestamp or h.last_offset < start_offset:
                continue
            data = self.store.read(pos, h.size)
            for off, ts in record_timestamps(data, 0, h):
                if ts >= timestamp and off >= start_offset:
                    return ts, off
            if h.log_append_time or h.attributes & COMPRESSION_MASK:
                return h.max_timestamp, max(h.base_offset, start_offset)
        return None

    # -- recovery

    def load_indexes(self) -> bool:
        """Load index files and derive max timestamp; False when they need a rebuild."""
        if not self.offset_index.load(self.store.size) or not self.time_index.load():
            return False
        last = self.time_index.last_entry
        if last is not None:
            self.max_timestamp, self.offset_of_max_timestamp = last
        if self.store.size:
            for _pos, h in self.iter_headers(0):
                self.first_batch_timestamp = h.max_timestamp
                break
        return True

    def recover(self, interval: int, on_batch=None, from_last_index_entry: bool = False) -> int:
        """Re-check batches (length, magic, CRC, offsets), rebuild indexes, truncate after the last valid batch.

        With ``from_last_index_entry`` the loaded indexes are trusted up to their last entry and only the tail is
        scanned (clean shutdown). Returns the number of bytes truncated.
        """
        store = self.store
        if from_last_index_entry and len(self.offset_index):
            pos = self.offset_index.last_position
            self.bytes_since_last_index_entry = 0
        else:
            pos = 0
            self.offset_index.reset()
            self.time_index.reset()
            self.max_timestamp = self.offset_of_max_timestamp = -1
            self.first_batch_timestamp = None
            self.bytes_since_last_index_entry = 0
            self.next_offset = self.base_offset
        start_pos = pos
        min_base = self.base_offset if pos == 0 else -1
        last_epoch = -1
        size = store.size
        buf = b""
        buf_start = pos
        while pos + BATCH_OVERHEAD <= size:
            rel = pos - buf_start
            if rel + BATCH_OVERHEAD > len(buf):
                buf = store.read(pos, min(RECOVERY_READ, size - pos))
                buf_start, rel = pos, 0
            batch_length = _I32.unpack_from(buf, rel + 8)[0]
            if buf[rel + 16] != 2 or batch_length < BATCH_OVERHEAD - LOG_OVERHEAD:
                break
            bsize = batch_length + LOG_OVERHEAD
            if pos + bsize > size:
                break
            if rel + bsize > len(buf):
                buf = store.read(pos, max(bsize, min(RECOVERY_READ, size - pos)))
                buf_start, rel = pos, 0
                if len(buf) < bsize:
                    break
            h = read_batch_header(buf, rel)
            if h.base_offset < min_base or h.last_offset_delta < 0 or h.last_offset - self.base_offset > INT32_MAX:
                break
            # offsets only grow (gaps are legal: compaction removes records, and a log may have been compacted
            # before its cleanup.policy changed) and leader epochs never go down
            if h.partition_leader_epoch < last_epoch:
                break
            if not batch_crc_ok(buf, rel, bsize):
                break
            self._index_batch(pos, h.last_offset, h.max_timestamp, bsize, interval)
            if on_batch is not None:
                on_batch(h)
            min_base = h.last_offset + 1
            last_epoch = h.partition_leader_epoch
            pos += bsize
        if pos == start_pos and start_pos > 0:
            # the batch the last index entry points at is not valid: do not trust the index, scan everything
            return self.recover(interval, on_batch)
        truncated = size - pos
        if truncated:
            store.truncate(pos)
            self.offset_index.truncate_to_position(pos)
            self.time_index.truncate_to_offset(self.next_offset)
        self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)  # as Kafka's recover() does
        if self.time_index.last_entry is not None and self.time_index.last_entry[1] >= self.next_offset:
            # a time index entry past the data (stale file): rebuild from scratch
            return truncated + self.recover(interval, on_batch) if from_last_index_entry else truncated
        return truncated

    # -- truncation / lifecycle

    def truncate_to(self, offset: int) -> int:
        """Drop batches at or after ``offset`` (batch granularity: a batch holding ``offset`` is dropped whole)."""
        found = self.find_batch(offset)
        if found is None:
            return 0
        pos = found[0]
        dropped = self.store.size - pos
        self.store.truncate(pos)
        self.offset_index.truncate_to_position(pos)
        self.time_index.truncate_to_offset(found[1].base_offset)
        # recompute state from what is left
        last = self.time_index.last_entry
        self.max_timestamp, self.offset_of_max_timestamp = last if last is not None else (-1, -1)
        self.next_offset = self.base_offset
        self.bytes_since_last_index_entry = 0
        start = self.offset_index.last_position if len(self.offset_index) else 0
        if start == 0:
            self.first_batch_timestamp = None
        for _p, h in self.iter_headers(start):
            if h.max_timestamp > self.max_timestamp:
                self.max_timestamp, self.offset_of_max_timestamp = h.max_timestamp, h.last_offset
            if self.first_batch_timestamp is None:
                self.first_batch_timestamp = h.max_timestamp
            self.next_offset = h.last_offset + 1
        self.bytes_since_last_index_entry = self.store.size - start
        return dropped

    def flush(self) -> None:
        self.store.flush()
        self.offset_index.flush()
        self.time_index.flush()

    def close_index_files(self) -> None:
        self.offset_index.close_file()
        self.time_index.close_file()

    def close(self) -> None:
        self.store.close()
        self.close_index_files()

    def delete(self) -> None:
        # the .log goes first: an index without its log is an orphan removed on open
        self.store.delete()
        self.offset_index.delete()
        self.time_index.delete()
