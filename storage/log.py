"""A partition log: an ordered list of segments, offsets, appends, reads, recovery, retention.

Disk layout of ``<data dir>/<topic>-<partition>/`` (Kafka's)::

    00000000000000000000.log        record batches exactly as stored (v2, offsets assigned)
    00000000000000000000.index      offset index, 8-byte entries
    00000000000000000000.timeindex  time index, 12-byte entries
    leader-epoch-checkpoint         "0\\n<count>\\n<epoch> <start offset>\\n..."

The data dir level files (``.kafka_cleanshutdown``, ``recovery-point-offset-checkpoint``,
``log-start-offset-checkpoint``) belong to :class:`storage.manager.LogManager`, which passes what they say to
:meth:`PartitionLog.open`. Opened on its own (no hints), a log assumes an unclean shutdown and re-checks everything.

Synchronous, single-threaded (the broker's event loop calls it); no locks.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import struct
import time
from bisect import bisect_right
from typing import Callable, NamedTuple

from crc32c import crc32c

from wire.errors import DecodeError
from wire.records import (
    ATTRIBUTES_OFFSET,
    BATCH_OVERHEAD,
    CONTROL_FLAG,
    CRC_OFFSET,
    LOG_OVERHEAD,
    MAGIC_OFFSET,
    TIMESTAMP_TYPE_MASK,
    BatchHeader,
    batch_crc_ok,
    validate_records,
    read_batch_header,
    set_base_offset,
    set_partition_leader_epoch,
)

from .checkpoint import LEADER_EPOCH_FILE, LeaderEpochCache, fsync_dir
from .cleaner import complete_interrupted_swaps
from .config import LogConfig
from .errors import (
    CorruptRecordError,
    UnexpectedAppendOffsetError,
    InvalidRecordError,
    KafkaStorageError,
    OffsetOutOfRangeError,
    RecordBatchTooLargeError,
    RecordTooLargeError,
)
from .producer_state import (
    AppendOrigin,
    ProducerStateManager,
    append_txn_index,
    control_marker,
    read_txn_index,
    txn_index_path,
    write_txn_index,
)
from .segment import INT32_MAX, LogSegment, segment_file_name
from .validation import record_problems, record_validation_error

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")
_SEGMENT_RE = re.compile(r"^(\d{20})\.(log|index|timeindex|txnindex)$")

NO_TIMESTAMP = -1

_log = logging.getLogger("storage.log")


class AppendInfo(NamedTuple):
    base_offset: int             # first offset assigned (ProduceResponse baseOffset); -1 for an empty append
    last_offset: int
    log_append_time: int         # -1 unless the topic uses LogAppendTime (ProduceResponse logAppendTimeMs)
    log_start_offset: int        # ProduceResponse logStartOffset
    max_timestamp: int
    offset_of_max_timestamp: int  # last offset of the batch holding max_timestamp
    record_count: int
    batch_count: int
    size: int                    # bytes written
    duplicate: bool = False      # a retried batch already in the log: nothing written, its original offsets


class TimestampAndOffset(NamedTuple):
    timestamp: int
    offset: int


def _now_ms() -> int:
    return int(time.time() * 1000)


def parse_partition_dir(name: str) -> tuple[str, int] | None:
    """``my.topic-3`` -> ("my.topic", 3); None for anything else (including ``...-delete`` dirs)."""
    topic, sep, part = name.rpartition("-")
    if not sep or not topic or not part.isdigit():
        return None
    return topic, int(part)


class PartitionLog:
    """The disk log of one partition. Create with :meth:`open`."""

    def __init__(self, directory: str | None, config: LogConfig, *, topic: str = "", partition: int = 0,
                 clock: Callable[[], int] | None = None, fsync: bool = True):
        self.dir = directory
        self.config = config
        self.topic = topic
        self.partition = partition
        self.clock = clock or _now_ms
        self.fsync = fsync
        self.segments: list[LogSegment] = []
        self._bases: list[int] = []
        self.log_start_offset = 0
        self.high_watermark = 0
        self.recovery_point = 0
        self.epochs = LeaderEpochCache(os.path.join(directory, LEADER_EPOCH_FILE) if directory else None,
                                       fsync=fsync)
        self.closed = False
        # why this partition is offline (a write failed, or a stored batch failed its check when read); every
        # later append and read raises KafkaStorageError, as Kafka takes a failed log dir offline until restart
        self.fenced: str | None = None
        self._unflushed_messages = 0
        self._last_flush_ms = self.clock()
        self._dir_dirty = False
        # called with this log after the log start offset moved (the manager persists its checkpoint)
        self.on_log_start_offset_change: Callable[[PartitionLog], None] | None = None
        # compaction: where the dirty (not yet cleaned) part starts; the manager keeps it in cleaner-offset-checkpoint
        self.first_dirty_offset: int | None = None
        self._producer_state: ProducerStateManager | None = None     # loaded on first use (producer_state)

    # ------------------------------------------------------------------------------------------------ opening

    @classmethod
    def open(cls, directory: str, config: LogConfig | None = None, *, recovery_point: int | None = None,
             log_start_offset: int | None = None, clean_shutdown: bool = False,
             clock: Callable[[], int] | None = None, fsync: bool = True) -> PartitionLog:
        """Open (creating if needed) the log in ``directory`` and recover it.

        ``clean_shutdown`` True (the data dir had ``.kafka_cleanshutdown``) trusts the index files and only re-checks
        the tail of the last segment; otherwise every segment from the one holding ``recovery_point`` (default 0:
        all) is re-scanned batch by batch (length, magic, CRC), the log is cut at the last valid byte, later segments
        dropped, indexes rebuilt. Missing or inconsistent index files are always rebuilt.
        """
        os.makedirs(directory, exist_ok=True)
        parsed = parse_partition_dir(os.path.basename(os.path.normpath(directory)))
        topic, partition = parsed if parsed else ("", 0)
        log = cls(directory, config or LogConfig(), topic=topic, partition=partition, clock=clock, fsync=fsync)
        log._load(recovery_point, log_start_offset, clean_shutdown)
        return log

    def _new_segment(self, base_offset: int) -> LogSegment:
        self._dir_dirty = True
        seg = LogSegment.open_files(self.dir, base_offset, self.clock())
        seg.offset_index.ensure_file()   # Kafka creates all three files with the segment
        seg.time_index.ensure_file()
        return seg

    def _load(self, recovery_point: int | None, log_start_offset: int | None, clean_shutdown: bool) -> None:
        bases: set[int] = set()
        others: dict[int, list[str]] = {}
        # a compaction swap that got as far as <base>.log.swap is finished; anything else it left is dropped
        swapped = complete_interrupted_swaps(self.dir, os.listdir(self.dir))
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.endswith((".deleted", ".cleaned", ".swap", ".tmp")):
                os.unlink(path)  # leftovers of an interrupted delete / compaction / checkpoint write
                continue
            m = _SEGMENT_RE.match(name)
            if not m:
                continue
            base = int(m.group(1))
            if m.group(2) == "log":
                bases.add(base)
            else:
                others.setdefault(base, []).append(path)
        for base, paths in others.items():
            if base not in bases:
                for p in paths:
                    os.unlink(p)  # index without its log: the segment was being deleted
        interval = self.config.index_interval_bytes
        if not bases:
            start = max(log_start_offset or 0, 0)
            self.segments = [self._new_segment(start)]
        else:
            self.segments = [LogSegment.open_files(self.dir, b, self.clock()) for b in sorted(bases)]
        self._bases = [s.base_offset for s in self.segments]
        if recovery_point is None or recovery_point < 0:
            recovery_point = 0
        # segments from the one holding the recovery point on are unflushed: re-check them after an unclean stop
        first_unflushed = len(self.segments) if clean_shutdown else max(bisect_right(self._bases, recovery_point) - 1,
                                                                         0)
        on_batch = self._epoch_from_batch
        i = 0
        while i < len(self.segments):
            seg = self.segments[i]
            last = i == len(self.segments) - 1
            recovered = True
            if i >= first_unflushed or seg.base_offset in swapped or not seg.load_indexes():
                truncated = seg.recover(interval, on_batch)
            elif last:
                truncated = seg.recover(interval, on_batch, from_last_index_entry=True)
            else:
                truncated, recovered = 0, False
                seg.next_offset = self.segments[i + 1].base_offset
            if not last:
                seg.close_index_files()
                if recovered and seg.next_offset > self.segments[i + 1].base_offset:
                    truncated = truncated or -1   # this segment overlaps the next one: drop the rest
            if truncated and not last:
                # everything after the first bad byte is gone: later segments cannot be trusted either
                for later in self.segments[i + 1:]:
                    self._delete_segment(later)
                del self.segments[i + 1:]
                self._bases = self._bases[:i + 1]
                break
            i += 1
        leo = self.log_end_offset
        self.epochs.truncate_from_end(leo)
        lso = max(log_start_offset if log_start_offset is not None else 0, self.segments[0].base_offset)
        if lso > leo:
            # the log lost data below a recorded log start offset (e.g. power loss): start empty at it
            self._replace_all_segments(lso)
            leo = lso
        self.log_start_offset = lso
        self.epochs.truncate_from_start(lso)
        # unknown until the partition's leader (or the high-watermark checkpoint) says: kafkapy/partition.py sets it
        self.high_watermark = lso
        self.recovery_point = leo if clean_shutdown else min(recovery_point, leo)

    def _epoch_from_batch(self, h: BatchHeader) -> None:
        if h.partition_leader_epoch > self.epochs.latest_epoch:
            self.epochs.assign(h.partition_leader_epoch, h.base_offset)

    # ------------------------------------------------------------------------------------------------ offsets

    @property
    def active_segment(self) -> LogSegment:
        return self.segments[-1]

    @property
    def log_end_offset(self) -> int:
        return self.segments[-1].next_offset

    @property
    def size_in_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def latest_epoch(self) -> int:
        return self.epochs.latest_epoch

    def update_high_watermark(self, offset: int) -> int:
        """Set the high watermark (the partition's leader or follower decides where; clamped to [log start, log
        end]). Completed transactions whose markers are now below it stop holding back the last stable offset."""
        hw = min(max(offset, self.log_start_offset), self.log_end_offset)
        self.high_watermark = hw
        if self._producer_state is not None:
            self._producer_state.on_high_watermark_updated(hw)
        return hw

    @property
    def producer_state(self) -> ProducerStateManager:
        """The producer state of this log, loaded on first use: the latest snapshot at or below the log end offset,
        the aborted-transaction indexes of the segments below it, then the batch headers after it."""
        ps = self._producer_state
        if ps is None:
            ps = self._producer_state = self._load_producer_state()
        return ps

    def _load_producer_state(self) -> ProducerStateManager:
        ps = ProducerStateManager(self.dir, self.topic, self.partition, fsync=self.fsync)
        if self.dir is not None:
            ps.remove_stray_snapshots(self._bases)
        start = ps.load_snapshot(self.log_end_offset, self.log_start_offset) if self.dir is not None \
            else self.log_start_offset
        if self.dir is not None:
            # aborted transactions whose marker is below the snapshot come from the transaction indexes; later ones
            # are replayed below and written again
            for seg in self.segments:
                path = txn_index_path(self.dir, seg.base_offset)
                entries = read_txn_index(path)
                keep = [a for a in entries if a.last_offset < start]
                if len(keep) != len(entries):
                    write_txn_index(path, keep, fsync=self.fsync)
                ps.aborted.extend(keep)
            ps.aborted.sort()
        replayed = 0
        for h in self.batches(start):
            if h.base_offset < start:
                continue
            replayed += 1
            if h.producer_id < 0:
                continue
            markers = {}
            if h.is_control:
                data = self.read(h.base_offset, h.size, min_one_message=True)
                marker = control_marker(memoryview(data), 0, h.size)
                if marker is None:
                    continue
                markers[0] = marker
            aborted = ps.update([(0, h)], markers, [h.base_offset])
            if aborted and self.dir is not None:
                seg = self.segments[max(bisect_right(self._bases, h.base_offset) - 1, 0)]
                append_txn_index(txn_index_path(self.dir, seg.base_offset), aborted)
        ps.map_end_offset = self.log_end_offset
        ps.on_high_watermark_updated(self.high_watermark)
        if self.dir is not None:
            _log.debug("%s-%d: producer state loaded from offset %d (%d batches replayed, %d producers)", self.topic,
                       self.partition, start, replayed, len(ps.producers))
        return ps

    def last_stable_offset(self) -> int:
        """The offset below which every transaction is decided and replicated (read_committed reads to here)."""
        if self._producer_state is None and self.log_end_offset == self.log_start_offset:
            return self.high_watermark        # an empty log needs no producer state to answer
        first = self.producer_state.first_unstable_offset()
        return self.high_watermark if first is None else min(first, self.high_watermark)

    def aborted_transactions(self, fetch_offset: int, upper: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of the aborted transactions overlapping [fetch_offset, upper)."""
        return self.producer_state.aborted_transactions(fetch_offset, upper)

    def remove_expired_producers(self, now_ms: int, expiration_ms: int) -> int:
        ps = self._producer_state
        return 0 if ps is None else ps.remove_expired(now_ms, expiration_ms, self.log_start_offset)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch answer: (leader epoch, end offset), (-1, -1) when unknown."""
        return self.epochs.end_offset_for(epoch, self.log_end_offset)

    # ------------------------------------------------------------------------------------------------ append

    def append(self, records, *, leader_epoch: int, origin: AppendOrigin = AppendOrigin.CLIENT,
               txn_verifier: Callable | None = None, log_append_time_ms: int | None = None) -> AppendInfo:
        """Append one or more concatenated v2 batches: the one write path of a partition (Kafka's
        UnifiedLog.append). In order, and all before anything is written (on error nothing is written):

        1. validate every batch: length, magic, CRC32C, max.message.bytes; for a CLIENT append also what Kafka's
           LogValidator checks (record count and offset deltas, the records themselves, no control batches, a
           producer id needs a sequence) and keys on compacted topics;
        2. check producer state (storage/producer_state.py): epochs, sequences, duplicates (a retried batch already
           in the log is not written again: the answer carries the original offsets and ``duplicate`` True),
           transactions (``txn_verifier(pid, epoch, topic, partition)`` tells whether a transactional batch that
           starts a transaction here belongs to an ongoing one), coordinator epochs of markers;
        3. assign offsets from the log end offset and stamp ``leader_epoch`` by patching the header in place
           (the CRC does not cover them); REPLICATION keeps the leader's offsets and epochs, which must not go
           below the log end offset;
        4. write, then update producer state and the aborted-transaction index.

        The high watermark is not moved here: it belongs to the partition's leader (kafkapy/partition.py), which
        calls :meth:`update_high_watermark`.
        """
        self._check_open()
        view = memoryview(records).cast("B")
        if view.readonly:
            view = memoryview(bytearray(view))
        n = len(view)
        if n == 0:
            return AppendInfo(-1, -1, NO_TIMESTAMP, self.log_start_offset, NO_TIMESTAMP, -1, 0, 0, 0)
        replication = origin is AppendOrigin.REPLICATION
        headers, markers = self._validate(view, origin)
        if n > self.config.segment_bytes:
            raise RecordBatchTooLargeError(f"{n} bytes of batches exceed segment.bytes {self.config.segment_bytes}")
        producer_state = None
        if any(h.producer_id >= 0 for _pos, h in headers):
            producer_state = self.producer_state
            dup = producer_state.prepare(headers, markers, origin, self.log_end_offset, txn_verifier)
            if dup is not None:
                return AppendInfo(dup.first_offset, dup.last_offset, NO_TIMESTAMP, self.log_start_offset,
                                  dup.timestamp, dup.last_offset, 0, 0, 0, True)

        now = self.clock()
        append_time = NO_TIMESTAMP
        if self.config.log_append_time and not replication:
            append_time = log_append_time_ms if log_append_time_ms is not None else now
        offset = self.log_end_offset
        if replication and headers[0][1].base_offset < offset:
            raise UnexpectedAppendOffsetError(f"replicated batch at offset {headers[0][1].base_offset} is below the "
                                              f"log end offset {offset} of {self.topic}-{self.partition}")
        base_offset = offset if not replication else headers[0][1].base_offset
        index_info: list[tuple[int, int, int, int]] = []
        firsts: list[int] = []
        epochs: list[tuple[int, int]] = []
        max_ts, offset_of_max, count = NO_TIMESTAMP, -1, 0
        for pos, h in headers:
            if replication:
                if h.base_offset < offset:
                    raise UnexpectedAppendOffsetError(f"replicated batch at offset {h.base_offset} overlaps the one "
                                                      f"before it (ends at {offset - 1})")
                offset = h.base_offset
                epochs.append((h.partition_leader_epoch, offset))
            else:
                set_base_offset(view, pos, offset)
                set_partition_leader_epoch(view, pos, leader_epoch)
            batch_max_ts = h.max_timestamp
            if append_time != NO_TIMESTAMP:
                # attributes and maxTimestamp are under the CRC: rewrite both and recompute it (Kafka does the same)
                _I16.pack_into(view, pos + ATTRIBUTES_OFFSET, h.attributes | TIMESTAMP_TYPE_MASK)
                _I64.pack_into(view, pos + 35, append_time)
                _U32.pack_into(view, pos + CRC_OFFSET, crc32c(view[pos + ATTRIBUTES_OFFSET:pos + h.size]))
                batch_max_ts = append_time
            firsts.append(offset)
            last = offset + h.last_offset_delta
            if batch_max_ts > max_ts:
                max_ts, offset_of_max = batch_max_ts, last
            index_info.append((pos, last, batch_max_ts, h.size))
            count += h.last_offset_delta + 1
            offset = last + 1
        last_offset = offset - 1

        try:
            seg = self._maybe_roll(n, max_ts, last_offset, now, base_offset)
            if replication:
                for epoch, start in epochs:
                    if epoch > self.epochs.latest_epoch:
                        self.epochs.assign(epoch, start)
            elif leader_epoch > self.epochs.latest_epoch:
                self.epochs.assign(leader_epoch, base_offset)  # before the bytes: recovery truncates it if lost
            seg.append(view, index_info, self.config.index_interval_bytes)
        except (OSError, KafkaStorageError) as e:   # disk full, I/O error, unwritable directory
            raise self._fence(f"write failed: {e}") from e
        if producer_state is not None:
            aborted = producer_state.update(headers, markers, firsts)
            if aborted and self.dir is not None:
                try:
                    append_txn_index(txn_index_path(self.dir, seg.base_offset), aborted)
                except OSError as e:
                    raise self._fence(f"write of the transaction index failed: {e}") from e
        self._unflushed_messages += count
        try:
            self._maybe_flush_after_append(now)
        except OSError as e:
            raise self._fence(f"flush failed: {e}") from e
        return AppendInfo(base_offset, last_offset, append_time, self.log_start_offset, max_ts, offset_of_max, count,
                          len(headers), n)

    def _validate(self, view, origin: AppendOrigin) -> tuple[list[tuple[int, BatchHeader]], dict]:
        """Step 1 of :meth:`append`: [(position, header)] of the batches in ``view`` and the transaction markers of
        its control batches {position: Marker}. Raises the StorageError Kafka answers with."""
        n = len(view)
        cfg = self.config
        client = origin is AppendOrigin.CLIENT
        headers: list[tuple[int, BatchHeader]] = []
        markers: dict = {}
        pos = 0
        while pos < n:
            if n - pos < MAGIC_OFFSET + 1:
                raise CorruptRecordError(f"{n - pos} trailing bytes are not a record batch")
            batch_length = _I32.unpack_from(view, pos + 8)[0]
            if view[pos + MAGIC_OFFSET] != 2:
                raise InvalidRecordError(f"record batch magic {view[pos + MAGIC_OFFSET]}, only v2 is accepted")
            if batch_length < BATCH_OVERHEAD - LOG_OVERHEAD:
                raise CorruptRecordError(f"record batch length {batch_length} is shorter than a batch header")
            size = batch_length + LOG_OVERHEAD
            if pos + size > n:
                raise CorruptRecordError(f"record batch length {batch_length} runs past the {n - pos} bytes given")
            if size > cfg.max_message_bytes and origin is not AppendOrigin.REPLICATION:
                raise RecordTooLargeError(f"record batch of {size} bytes exceeds max.message.bytes "
                                          f"{cfg.max_message_bytes}")
            h = read_batch_header(view, pos)
            if not batch_crc_ok(view, pos, size):
                raise CorruptRecordError(f"record batch CRC32C mismatch (stored {h.crc:#010x})")
            if h.last_offset_delta < 0:
                raise InvalidRecordError(f"record batch lastOffsetDelta {h.last_offset_delta} is negative")
            if client:
                if h.record_count <= 0 or h.record_count != h.last_offset_delta + 1:
                    raise InvalidRecordError(f"record batch count {h.record_count} inconsistent with "
                                             f"lastOffsetDelta {h.last_offset_delta}")
                if h.attributes & CONTROL_FLAG:
                    raise InvalidRecordError("clients may not write control batches")
                try:   # the records themselves, as Kafka's LogValidator iterates them
                    validate_records(view, pos)
                except DecodeError as e:
                    raise InvalidRecordError(f"invalid record in batch: {e}") from None
                if h.producer_id >= 0 and h.base_sequence < 0:
                    raise InvalidRecordError(f"producer id {h.producer_id} with base sequence {h.base_sequence}")
            elif h.attributes & CONTROL_FLAG and h.producer_id >= 0:
                marker = control_marker(view, pos, size)
                if marker is not None:
                    markers[pos] = marker
            if origin is not AppendOrigin.REPLICATION and h.record_count > 0:
                self._check_records(view, pos, h)
            headers.append((pos, h))
            pos += size
        return headers, markers

    def _check_records(self, view, pos: int, h: BatchHeader) -> None:
        """Kafka's LogValidator record by record (storage/validation.py): keys on compacted topics, CreateTime
        timestamps within message.timestamp.before/after.max.ms. Raises InvalidRecordError / InvalidTimestampError
        carrying the index and message of every offending record (compressed batches are decompressed, bounded by
        wire.compression.MAX_DECOMPRESSED_SIZE)."""
        cfg = self.config
        try:
            problems = record_problems(view, pos, h, compacted=cfg.compact, log_append_time=cfg.log_append_time,
                                       now=self.clock(), before_max_ms=cfg.timestamp_before_max_ms,
                                       after_max_ms=cfg.timestamp_after_max_ms,
                                       topic_partition=f"{self.topic}-{self.partition}")
        except DecodeError as e:
            raise CorruptRecordError(f"record batch does not decode: {e}") from None
        if problems:
            raise record_validation_error(problems)

    def _maybe_roll(self, size: int, max_ts: int, last_offset: int, now: int, base_offset: int) -> LogSegment:
        seg = self.segments[-1]
        cfg = self.config
        if seg.size == 0:
            return seg
        rolling_ts = seg.rolling_timestamp()
        waited = (max_ts - rolling_ts) if rolling_ts is not None and max_ts >= 0 else now - seg.created_ms
        if (seg.size + size > cfg.segment_bytes or waited > cfg.segment_ms
                or last_offset - seg.base_offset > INT32_MAX):
            return self.roll(base_offset)
        return seg

    def roll(self, new_base: int | None = None) -> LogSegment:
        """Start a new active segment at ``new_base`` (default: the log end offset; a follower's next batch may start
        later, after compaction on the leader). No-op when the active segment is empty. Takes a producer-state
        snapshot at the new base offset, as Kafka does."""
        old = self.segments[-1]
        if old.size == 0:
            return old
        new_base = self.log_end_offset if new_base is None else max(new_base, self.log_end_offset)
        old.on_become_inactive()
        if self._producer_state is not None and self.dir is not None:
            self._producer_state.map_end_offset = self.log_end_offset
            self._producer_state.take_snapshot()
        if self.fsync:
            # Kafka flushes the segments before a new one when it rolls (asynchronously; here inline)
            self._flush_segments()
            self.recovery_point = new_base
        old.close_index_files()
        seg = self._new_segment(new_base)
        self.segments.append(seg)
        self._bases.append(new_base)
        return seg

    # ------------------------------------------------------------------------------------------------ read

    def read(self, offset: int, max_bytes: int, *, max_offset: int | None = None, min_one_message: bool = True):
        """Stored bytes of whole batches starting with the batch that holds ``offset`` (bytes or memoryview).

        The first batch is returned whole even when larger than ``max_bytes`` (unless ``min_one_message`` is
        False: then nothing); later batches only while they fit. Only batches whose last offset is below
        ``max_offset`` (e.g. the high watermark or last stable offset) are returned. Empty at the log end.
        Raises OffsetOutOfRangeError below the log start offset or above the log end offset.
        """
        self._check_open()
        leo = self.log_end_offset
        if offset < self.log_start_offset or offset > leo:
            raise OffsetOutOfRangeError(offset, self.log_start_offset, leo)
        if offset == leo or (max_offset is not None and offset >= max_offset):
            return b""
        i = max(bisect_right(self._bases, offset) - 1, 0)
        while i < len(self.segments):
            got = self.segments[i].read(offset, max_bytes, max_offset, min_one_message)
            if got is not None:
                if self.dir is not None and got:
                    self._verify_read(got, offset, self.segments[i])
                return got
            i += 1
        return b""

    def _verify_read(self, buf, offset: int, seg: LogSegment) -> None:
        """Check what a read is about to serve: whole v2 batches, CRC32C intact, the first one holding or following
        ``offset``. Segments before the recovery point are not re-scanned on start (as in Kafka), so corruption in
        them is found here; the partition is then fenced rather than served wrong."""
        n = len(buf)
        pos = 0
        while pos < n:
            problem = None
            if n - pos < BATCH_OVERHEAD:
                problem = f"{n - pos} bytes are not a whole batch"
            else:
                try:
                    h = read_batch_header(buf, pos)
                except DecodeError as e:
                    h, problem = None, f"batch header is not valid ({e})"
                if h is None:
                    pass
                elif h.size < BATCH_OVERHEAD or pos + h.size > n:
                    problem = f"batch size {h.size} does not fit"
                elif not batch_crc_ok(buf, pos, h.size):
                    problem = f"CRC32C mismatch in the batch at offset {h.base_offset}"
                elif pos == 0 and h.last_offset < offset:
                    problem = f"the batch read for offset {offset} ends at {h.last_offset}"
            if problem is not None:
                raise self._fence(f"corrupt data in segment {seg.base_offset:020d}.log at or after offset {offset}: "
                                  f"{problem}")
            pos += h.size

    def batches(self, start_offset: int | None = None):
        """Yield the header of every stored batch from the one holding ``start_offset`` (default: log start),
        e.g. to rebuild producer state on startup."""
        start = self.log_start_offset if start_offset is None else start_offset
        i = max(bisect_right(self._bases, start) - 1, 0)
        first = True
        for seg in self.segments[i:]:
            pos = seg.offset_index.lookup(start) if first else 0
            first = False
            for _pos, h in seg.iter_headers(pos):
                if h.last_offset >= start:
                    yield h

    def offset_for_timestamp(self, timestamp: int) -> TimestampAndOffset | None:
        """ListOffsets by timestamp: the first record (at or after the log start offset) with timestamp >= the
        target, or None. Exact for uncompressed and LogAppendTime batches; for compressed CreateTime batches the
        first offset of the first batch whose max timestamp qualifies (storage does not decompress)."""
        for seg in self.segments:
            if seg.max_timestamp >= timestamp and seg.next_offset > self.log_start_offset:
                found = seg.find_offset_by_timestamp(timestamp, self.log_start_offset)
                if found is not None:
                    return TimestampAndOffset(*found)
        return None

    def max_timestamp_offset(self) -> TimestampAndOffset | None:
        """ListOffsets MAX_TIMESTAMP (-3): the (first) record with the largest timestamp, or None when empty."""
        best = None
        for seg in self.segments:
            if seg.next_offset > self.log_start_offset and seg.max_timestamp >= 0 and \
                    (best is None or seg.max_timestamp > best.max_timestamp):
                best = seg
        if best is None:
            return None
        found = best.find_offset_by_timestamp(best.max_timestamp, self.log_start_offset)
        if found is None:
            return TimestampAndOffset(best.max_timestamp, best.offset_of_max_timestamp)
        return TimestampAndOffset(*found)

    # ------------------------------------------------------------------------------------------------ flush

    def flush(self) -> None:
        """fsync every segment not known to be on disk, then move the recovery point to the log end offset."""
        if self.closed:
            return
        self._flush_segments()
        self.recovery_point = self.log_end_offset
        self._unflushed_messages = 0
        self._last_flush_ms = self.clock()

    def _flush_segments(self) -> None:
        i = max(bisect_right(self._bases, self.recovery_point) - 1, 0)
        for seg in self.segments[i:]:
            seg.flush()
        if self._dir_dirty and self.dir:
            fsync_dir(self.dir)
            self._dir_dirty = False

    def _maybe_flush_after_append(self, now: int) -> None:
        cfg = self.config
        if (cfg.flush_interval_messages is not None and self._unflushed_messages >= cfg.flush_interval_messages) or \
                (cfg.flush_interval_ms is not None and now - self._last_flush_ms >= cfg.flush_interval_ms):
            self.flush()

    def maybe_flush(self, now_ms: int | None = None) -> bool:
        """For the broker's periodic task: flush when ``flush_interval_ms`` has passed with unflushed data."""
        cfg = self.config
        now = self.clock() if now_ms is None else now_ms
        if cfg.flush_interval_ms is not None and self._unflushed_messages and \
                now - self._last_flush_ms >= cfg.flush_interval_ms:
            self.flush()
            return True
        return False

    # ------------------------------------------------------------------------------------------------ retention

    def delete_old_segments(self, retention_ms: int | None = None, retention_bytes: int | None = None,
                            now_ms: int | None = None) -> int:
        """Delete whole inactive segments: older than ``retention_ms`` (by largest timestamp), beyond
        ``retention_bytes`` (oldest first), or entirely below the log start offset. Defaults come from the config;
        time/size retention only apply when cleanup.policy contains "delete". Returns segments deleted."""
        cfg = self.config
        retention_ms = cfg.retention_ms if retention_ms is None else retention_ms
        retention_bytes = cfg.retention_bytes if retention_bytes is None else retention_bytes
        now = self.clock() if now_ms is None else now_ms
        deletable = self.segments[:-1]
        n = 0
        # below the log start offset (DeleteRecords): a segment whose successor starts at or before it
        while n < len(deletable) and self.segments[n + 1].base_offset <= self.log_start_offset:
            n += 1
        if "delete" in cfg.cleanup_policy:
            if retention_ms is not None and retention_ms >= 0:
                while n < len(deletable) and now - deletable[n].largest_timestamp > retention_ms:
                    n += 1
            if retention_bytes is not None and retention_bytes >= 0:
                diff = self.size_in_bytes - retention_bytes - sum(s.size for s in deletable[:n])
                while n < len(deletable) and diff - deletable[n].size >= 0:
                    diff -= deletable[n].size
                    n += 1
        if n:
            self._delete_first_segments(n)
        return n

    def _delete_first_segments(self, n: int) -> None:
        doomed = self.segments[:n]
        new_start = self.segments[n].base_offset
        if new_start > self.log_start_offset:
            self._set_log_start_offset(new_start)  # persisted before any file goes
        del self.segments[:n]
        del self._bases[:n]
        for seg in doomed:
            self._delete_segment(seg)
        if self.dir is not None:
            ProducerStateManager(self.dir, fsync=False).delete_snapshots_before(self.segments[0].base_offset)

    def _delete_segment(self, seg: LogSegment) -> None:
        """A segment's files, with its transaction index (Kafka's ``.txnindex``)."""
        seg.delete()
        if self.dir is not None:
            try:
                os.unlink(txn_index_path(self.dir, seg.base_offset))
            except FileNotFoundError:
                pass

    def _set_log_start_offset(self, offset: int) -> None:
        self.log_start_offset = offset
        self.epochs.truncate_from_start(offset)
        if self.on_log_start_offset_change is not None:
            self.on_log_start_offset_change(self)

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: move the log start offset to ``offset`` (must be <= high watermark) and delete segments
        entirely below it. Returns the new log start offset (the response's low watermark)."""
        self._check_open()
        if offset > self.high_watermark or offset < 0:
            raise OffsetOutOfRangeError(offset, self.log_start_offset, self.high_watermark)
        if offset > self.log_start_offset:
            self._set_log_start_offset(offset)
            n = 0
            while n < len(self.segments) - 1 and self.segments[n + 1].base_offset <= offset:
                n += 1
            if n:
                self._delete_first_segments(n)
        return self.log_start_offset

    def compact(self, *, now_ms: int | None = None, upper_bound: int | None = None, force: bool = False) -> int:
        """One whole compaction pass (storage/cleaner.py) when the log is compacted and due (dirty ratio,
        max.compaction.lag.ms; ``force``: whenever there is a cleanable dirty segment). Nothing at or after
        ``upper_bound`` (the last stable offset) is cleaned. Returns bytes reclaimed."""
        from .cleaner import compact_log
        self._check_open()
        return compact_log(self, now_ms=now_ms, upper_bound=upper_bound, force=force)

    # ------------------------------------------------------------------------------------------------ truncation

    def truncate_to(self, offset: int) -> None:
        """Drop everything at or after ``offset`` (whole batches; for a follower / epoch divergence)."""
        self._check_open()
        if offset >= self.log_end_offset:
            # nothing to cut, but an epoch that starts there has no data here (Kafka's truncateTo does the same:
            # a follower that led for a moment without appending must forget that epoch, or it diverges forever)
            self.epochs.truncate_from_end(offset)
            return
        offset = max(offset, self.log_start_offset)
        while len(self.segments) > 1 and self.segments[-1].base_offset >= offset:
            self._delete_segment(self.segments.pop())
            self._bases.pop()
        self.segments[-1].truncate_to(offset)
        self.epochs.truncate_from_end(self.log_end_offset)
        # producer state is reloaded on next use from a snapshot at or below the new end (Kafka's
        # loadProducerState after truncation); the aborted-transaction entries past it go with it
        if self.dir is not None:
            ProducerStateManager(self.dir, fsync=False).delete_snapshots_after(self.log_end_offset)
            path = txn_index_path(self.dir, self.segments[-1].base_offset)
            entries = read_txn_index(path)
            keep = [a for a in entries if a.last_offset < self.log_end_offset]
            if len(keep) != len(entries):
                write_txn_index(path, keep, fsync=self.fsync)
        self._producer_state = None
        if self.first_dirty_offset is not None and self.first_dirty_offset > self.log_end_offset:
            self.first_dirty_offset = self.log_end_offset
        self.high_watermark = min(self.high_watermark, self.log_end_offset)
        self.recovery_point = min(self.recovery_point, self.log_end_offset)

    def truncate_fully(self, new_offset: int = 0) -> None:
        """Delete all data and start empty at ``new_offset`` (Kafka's truncateFullyAndStartAt)."""
        self._check_open()
        self._replace_all_segments(new_offset)
        self.epochs.clear()
        self.high_watermark = self.recovery_point = new_offset
        self._set_log_start_offset(new_offset)

    def _replace_all_segments(self, new_offset: int) -> None:
        for seg in self.segments:
            self._delete_segment(seg)
        if self.dir is not None:
            ProducerStateManager(self.dir, fsync=False).delete_snapshots_after(-1)
        self._producer_state = None
        self.segments = [self._new_segment(new_offset)]
        self._bases = [new_offset]

    # ------------------------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Flush, write the final time index entry, close files. (The clean-shutdown marker is the manager's.)"""
        if self.closed:
            return
        self.segments[-1].on_become_inactive()
        self.flush()
        if self._producer_state is not None and self.dir is not None:
            # Kafka snapshots producer state on a clean close, so the next start reads it instead of the log
            self._producer_state.map_end_offset = self.log_end_offset
            try:
                self._producer_state.take_snapshot()
            except OSError as e:
                _log.warning("%s-%d: could not write the producer snapshot: %s", self.topic, self.partition, e)
        for seg in self.segments:
            seg.close()
        self.closed = True

    def delete(self) -> None:
        """Remove the whole log (DeleteTopics). The log is unusable afterwards."""
        for seg in self.segments:
            seg.close()
        self.closed = True
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _fence(self, reason: str) -> KafkaStorageError:
        """Take this partition offline (logged once); the error to raise."""
        if self.fenced is None:
            self.fenced = reason
            _log.error("partition %s-%d in %s is offline until the broker restarts: %s", self.topic, self.partition,
                       self.dir, reason)
        return KafkaStorageError(f"partition {self.topic}-{self.partition} is offline: {self.fenced}")

    def _check_open(self) -> None:
        if self.fenced is not None:
            raise KafkaStorageError(f"partition {self.topic}-{self.partition} is offline: {self.fenced}")
        if self.closed:
            raise KafkaStorageError(f"log {self.topic}-{self.partition} is closed")

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.topic}-{self.partition} start={self.log_start_offset} "
                f"end={self.log_end_offset} segments={len(self.segments)}>")


class MemoryPartitionLog(PartitionLog):
    """Same interface and behaviour, kept in memory (``--storage memory``): segments, indexes and retention work
    the same way; nothing survives the process."""

    def __init__(self, config: LogConfig | None = None, *, topic: str = "", partition: int = 0,
                 clock: Callable[[], int] | None = None):
        super().__init__(None, config or LogConfig(), topic=topic, partition=partition, clock=clock, fsync=False)
        self.segments = [self._new_segment(0)]
        self._bases = [0]

    def _new_segment(self, base_offset: int) -> LogSegment:
        return LogSegment.in_memory(base_offset, self.clock())

    def flush(self) -> None:
        self.recovery_point = self.log_end_offset
        self._unflushed_messages = 0
        self._last_flush_ms = self.clock()


def segment_paths(directory: str, base_offset: int) -> tuple[str, str, str]:
    return tuple(os.path.join(directory, segment_file_name(base_offset, s)) for s in (".log", ".index", ".timeindex"))
