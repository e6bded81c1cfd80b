"""Log compaction (cleanup.policy=compact, or compact,delete): Kafka's log cleaner, on the broker's event loop.

What a pass does (Kafka's ``Cleaner.doClean``):

1. Scan the batch headers of the log for transactions: which ``(producer id, first offset, marker offset)`` were
   aborted (Kafka keeps them in ``.txnindex``; here they are derived from the log itself) and the last batch of
   every active producer (kept, possibly empty, so idempotent sequences and epochs survive).
2. Build the offset map ``key -> latest offset`` over the *dirty* part: whole inactive segments from the first dirty
   offset (the cleaner checkpoint) up to the first uncleanable offset: the active segment, the caller's upper bound
   (the last stable offset: ongoing transactions are never cleaned) and ``min.compaction.lag.ms``. Aborted batches
   do not enter the map. The map is bounded (``max_map_entries``): a pass may cover only part of the dirty section.
3. Rewrite every segment below the end of the map, in groups of at most ``segment.bytes``, each group into one
   ``<base>.log.cleaned`` (+ indexes), keeping per batch, as Kafka's ``MemoryRecords.filterTo``:
   records whose key has no later offset in the map; tombstones (null value) until the batch's delete horizon; no
   records of aborted transactions; control batches (commit/abort markers) until their transaction's data is gone
   and then for ``delete.retention.ms``. A batch whose records are all kept is copied byte for byte; otherwise it is
   rebuilt with the same base offset, last offset delta, producer id/epoch/base sequence, leader epoch and
   attributes (offsets never change, gaps are fine). When a kept batch holds a tombstone or a marker that can go,
   the first clean stamps the delete horizon (attribute bit 0x40, baseTimestamp = now + delete.retention.ms); a
   later clean past the horizon removes it. A batch that ends up empty is dropped, unless it is the last batch of an
   active producer or the last batch of the group (kept as a 61-byte header, as Kafka keeps the last batch of a
   round, so the cleaned segment always ends where the old group ended).
4. Swap, crash-safe (Kafka's order): fsync the ``.cleaned`` files, rename them to ``.swap`` (the ``.log.swap``
   rename is the commit point), rename the old segments' files to ``.deleted``, rename the ``.swap`` files to their
   final names, delete the ``.deleted`` files. :meth:`storage.log.PartitionLog._load` finishes or discards an
   interrupted swap (see :func:`complete_interrupted_swaps`).
5. The first dirty offset moves to the end of the map; the manager keeps it in ``cleaner-offset-checkpoint``.

A pass is a generator that yields after every unit of work (about ``STEP_BYTES`` of log read), so the caller can
bound the time spent per event-loop turn. Between two steps the log may change (appends, retention, DeleteRecords,
truncation, deletion): each step re-checks that the segments it works on are still the log's, and abandons the
pass (deleting its ``.cleaned`` files) otherwise.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections import deque
from typing import Callable, NamedTuple

from crc32c import crc32c

from wire.errors import DecodeError
from wire.records import (
    ATTRIBUTES_OFFSET,
    BATCH_OVERHEAD,
    CONTROL_ABORT,
    CONTROL_COMMIT,
    CONTROL_FLAG,
    CRC_OFFSET,
    DELETE_HORIZON_FLAG,
    LOG_OVERHEAD,
    NO_TIMESTAMP,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_FLAG,
    BatchHeader,
    build_batch,
    decode_batch,
    parse_control_record,
)

from .checkpoint import fsync_dir
from .errors import KafkaStorageError
from .producer_state import read_txn_index, txn_index_path, write_txn_index
from .segment import INT32_MAX, FileStore, LogSegment, OffsetIndex, TimeIndex, segment_file_name

log = logging.getLogger("storage.cleaner")

CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
DELETED_SUFFIX = ".deleted"
SEGMENT_SUFFIXES = (".log", ".index", ".timeindex")

STEP_BYTES = 1 << 20                # a pass yields after about this much log read
DEFAULT_MAX_MAP_ENTRIES = 1 << 20   # keys per offset map (Kafka: log.cleaner.dedupe.buffer.size / 24 bytes)
PRODUCER_ID_EXPIRATION_MS = 86_400_000  # Kafka's producer.id.expiration.ms default

_HEADER = struct.Struct(">qiibIhiqqqhii")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")


class CleanAborted(Exception):
    """The log changed under a pass (segments gone, log closed or truncated): the pass is abandoned."""


class LogToClean(NamedTuple):
    """Kafka's LogToClean: where the dirty section is and how dirty it is."""
    first_dirty_offset: int
    first_uncleanable_offset: int
    dirty_segments: list           # whole inactive segments in [first dirty, first uncleanable)
    clean_bytes: int
    cleanable_bytes: int
    needs_compaction_now: bool     # max.compaction.lag.ms passed for some dirty record

    @property
    def cleanable_ratio(self) -> float:
        total = self.clean_bytes + self.cleanable_bytes
        return self.cleanable_bytes / total if total else 0.0


class CleanStats:
    __slots__ = ("bytes_read", "bytes_written", "messages_read", "messages_retained", "segments_cleaned",
                 "map_entries", "end_offset")

    def __init__(self):
        self.bytes_read = self.bytes_written = self.messages_read = self.messages_retained = 0
        self.segments_cleaned = self.map_entries = 0
        self.end_offset = -1

    def __repr__(self) -> str:
        return (f"CleanStats(read={self.bytes_read}B/{self.messages_read} msgs, written={self.bytes_written}B/"
                f"{self.messages_retained} msgs, segments={self.segments_cleaned}, map={self.map_entries}, "
                f"end={self.end_offset})")


# ---------------------------------------------------------------------------------------------------------- planning


def first_dirty_offset(plog) -> int:
    """The cleaner checkpoint, clamped to the log (Kafka resets it to the log start when it is out of range)."""
    cp = getattr(plog, "first_dirty_offset", None)
    if cp is None or cp < plog.log_start_offset or cp > plog.log_end_offset:
        return plog.log_start_offset
    return cp


def log_to_clean(plog, now_ms: int, upper_bound: int | None = None) -> LogToClean:
    """Kafka's LogCleanerManager.cleanableOffsets + LogToClean, at whole-segment granularity."""
    cfg = plog.config
    segs = plog.segments
    first_dirty = first_dirty_offset(plog)
    limits = [segs[-1].base_offset]   # the active segment is never cleaned
    if upper_bound is not None:
        limits.append(upper_bound)    # nor anything from the last stable offset on
    inactive = segs[:-1]
    if cfg.min_compaction_lag_ms > 0:
        for s in inactive:
            if s.next_offset > first_dirty and s.largest_timestamp > now_ms - cfg.min_compaction_lag_ms:
                limits.append(s.base_offset)
                break
    first_uncleanable = min(limits)
    dirty, clean_bytes, dirty_bytes = [], 0, 0
    for i, s in enumerate(inactive):
        next_base = segs[i + 1].base_offset
        if next_base <= first_dirty:
            clean_bytes += s.size
        elif next_base <= first_uncleanable:
            dirty.append((s, next_base))
            dirty_bytes += s.size
        else:
            break
    needs_now = False
    if dirty and cfg.max_compaction_lag_ms < (1 << 62):
        firsts = [s.first_batch_timestamp for s, _ in dirty if s.first_batch_timestamp and s.first_batch_timestamp > 0]
        if firsts and min(firsts) < now_ms - max(cfg.max_compaction_lag_ms, 0):
            needs_now = True
    return LogToClean(first_dirty, first_uncleanable, dirty, clean_bytes, dirty_bytes, needs_now)


def should_clean(plan: LogToClean, min_ratio: float) -> bool:
    """Kafka: ``(needCompactionNow && cleanableBytes > 0) || cleanableRatio > minCleanableRatio``."""
    if not plan.dirty_segments:
        return False
    return (plan.needs_compaction_now and plan.cleanable_bytes > 0) or plan.cleanable_ratio > min_ratio


# ---------------------------------------------------------------------------------------------------------- batches


def delete_horizon(h: BatchHeader) -> int | None:
    """KIP-534: a batch with attribute bit 0x40 carries its delete horizon in baseTimestamp."""
    return h.base_timestamp if h.attributes & DELETE_HORIZON_FLAG else None


def _read(seg: LogSegment, pos: int, h: BatchHeader):
    data = seg.store.read(pos, h.size)
    if len(data) != h.size:
        raise CleanAborted(f"short read at {pos} of segment {seg.base_offset}")
    return data


def _control_type(data) -> int | None:
    try:
        batch = decode_batch(data, 0, verify_crc=False)
        if not batch.records:
            return None
        return parse_control_record(batch.records[0])[0]
    except DecodeError:
        return None


def _finish_batch(out: bytearray, attributes: int, last_offset_delta: int) -> bytes:
    _I16.pack_into(out, ATTRIBUTES_OFFSET, attributes)
    _I32.pack_into(out, 23, last_offset_delta)
    _U32.pack_into(out, CRC_OFFSET, crc32c(memoryview(out)[ATTRIBUTES_OFFSET:]))
    return bytes(out)


def rebuild_batch(h: BatchHeader, records, horizon: int) -> bytes:
    """Kafka's buildRetainedRecordsInto: same base offset and last offset (offset deltas unchanged), compression,
    timestamp type, producer id/epoch/base sequence, transactional/control flags and leader epoch; baseTimestamp is
    the delete horizon when there is one (bit 0x40 set)."""
    lat = bool(h.attributes & TIMESTAMP_TYPE_MASK)
    out = bytearray(build_batch(
        records, base_offset=h.base_offset, compression=h.compression, producer_id=h.producer_id,
        producer_epoch=h.producer_epoch, base_sequence=h.base_sequence, transactional=h.is_transactional,
        control=h.is_control, timestamp_type=1 if lat else 0, partition_leader_epoch=h.partition_leader_epoch,
        base_timestamp=horizon if horizon != NO_TIMESTAMP else None,
        max_timestamp=h.max_timestamp if lat else None))
    attributes = _I16.unpack_from(out, ATTRIBUTES_OFFSET)[0]
    if horizon != NO_TIMESTAMP:
        attributes |= DELETE_HORIZON_FLAG
    return _finish_batch(out, attributes, h.last_offset_delta)


def empty_batch(h: BatchHeader) -> bytes:
    """Kafka's DefaultRecordBatch.writeEmptyHeader: the header of ``h`` with no records (keeps the offsets and
    the producer's id, epoch and sequence)."""
    out = bytearray(BATCH_OVERHEAD)
    attributes = h.attributes & (TIMESTAMP_TYPE_MASK | TRANSACTIONAL_FLAG | CONTROL_FLAG)
    _HEADER.pack_into(out, 0, h.base_offset, BATCH_OVERHEAD - LOG_OVERHEAD, h.partition_leader_epoch, 2, 0,
                      attributes, h.last_offset_delta, NO_TIMESTAMP, h.max_timestamp, h.producer_id,
                      h.producer_epoch, h.base_sequence, 0)
    return _finish_batch(out, attributes, h.last_offset_delta)


# ---------------------------------------------------------------------------------------------------------- txns


def scan_transactions(plog, now_ms: int, producer_expiration_ms: int = PRODUCER_ID_EXPIRATION_MS):
    """One pass over the batch headers of the whole log.

    Returns (aborted, active): ``aborted`` is a list of (first offset, producer id, marker offset) sorted by first
    offset, every transaction whose abort marker is in the log and some of whose data is still there; ``active``
    maps producer id -> (last data offset or None, producer epoch) for producers not expired (Kafka's
    lastRecordsOfActiveProducers; expiry by producer.id.expiration.ms from the producer's last batch timestamp)."""
    open_first: dict[int, int] = {}
    aborted: list[tuple[int, int, int]] = []
    last: dict[int, list] = {}
    for seg in list(plog.segments):
        for pos, h in seg.iter_headers(0):
            pid = h.producer_id
            if pid < 0:
                continue
            entry = last.get(pid)
            if h.attributes & CONTROL_FLAG:
                ctype = _control_type(_read(seg, pos, h))
                first = open_first.pop(pid, None)
                if ctype == CONTROL_ABORT and first is not None:
                    aborted.append((first, pid, h.last_offset))
                if entry is None:
                    last[pid] = [-1, h.producer_epoch, h.max_timestamp]
                else:
                    if h.producer_epoch != entry[1]:
                        entry[0] = -1    # a new epoch clears the producer's batch metadata (Kafka)
                    entry[1] = h.producer_epoch
                    entry[2] = max(entry[2], h.max_timestamp)
            else:
                if h.attributes & TRANSACTIONAL_FLAG and pid not in open_first:
                    open_first[pid] = h.base_offset
                last[pid] = [h.last_offset, h.producer_epoch, max(h.max_timestamp, entry[2] if entry else -1)]
    aborted.sort()
    active = {pid: (e[0] if e[0] >= 0 else None, e[1]) for pid, e in last.items()
              if pid in open_first or now_ms - e[2] < producer_expiration_ms}
    return aborted, active


class CleanedTransactionMetadata:
    """Kafka's CleanedTransactionMetadata: which batches belong to aborted transactions, and which markers have no
    data left behind them, while batches are read in offset order."""

    def __init__(self, aborted: list[tuple[int, int, int]]):
        self.aborted = deque(aborted)
        self.ongoing_aborted: dict[int, bool] = {}     # producer id -> some batch of the transaction was seen
        self.ongoing_committed: set[int] = set()

    def _consume_up_to(self, offset: int) -> None:
        aborted = self.aborted
        while aborted and aborted[0][0] <= offset:
            _first, pid, _last = aborted.popleft()
            self.ongoing_aborted.setdefault(pid, False)

    def on_control_batch(self, h: BatchHeader, control_type: int | None) -> bool:
        """True when the marker may be discarded (no batch of its transaction was seen)."""
        self._consume_up_to(h.last_offset)
        pid = h.producer_id
        if control_type == CONTROL_ABORT:
            seen = self.ongoing_aborted.pop(pid, None)
            return not seen
        if control_type == CONTROL_COMMIT:
            if pid in self.ongoing_committed:
                self.ongoing_committed.discard(pid)
                return False
            return True
        return False

    def on_batch(self, h: BatchHeader) -> bool:
        """True when the data batch belongs to an aborted transaction."""
        self._consume_up_to(h.last_offset)
        if not h.attributes & TRANSACTIONAL_FLAG:
            return False
        pid = h.producer_id
        if pid in self.ongoing_aborted:
            self.ongoing_aborted[pid] = True
            return True
        self.ongoing_committed.add(pid)
        return False


# ---------------------------------------------------------------------------------------------------------- the pass


class CleanPass:
    """One cleaning pass over one log; drive it with :meth:`step` (or :func:`clean_log` for all at once)."""

    def __init__(self, plog, plan: LogToClean, now_ms: int, *, max_map_entries: int = DEFAULT_MAX_MAP_ENTRIES,
                 producer_expiration_ms: int = PRODUCER_ID_EXPIRATION_MS):
        self.log = plog
        self.plan = plan
        self.now = now_ms
        self.max_map_entries = max_map_entries
        self.producer_expiration_ms = producer_expiration_ms
        self.stats = CleanStats()
        self.done = False
        self.result: int | None = None       # the new first dirty offset once finished
        self._gen = self._run()
        self._cleaned: LogSegment | None = None

    def step(self) -> bool:
        """Do one unit of work; True while more is left. Raises CleanAborted when the log changed under it."""
        if self.done:
            return False
        try:
            next(self._gen)
            return True
        except StopIteration as stop:
            self.done = True
            self.result = stop.value
            return False
        except BaseException:
            self.done = True
            self._discard_cleaned()
            raise

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self._gen.close()
            self._discard_cleaned()

    def _discard_cleaned(self) -> None:
        if self._cleaned is not None:
            self._cleaned.delete()
            self._cleaned = None

    # -- checks between steps

    def _check(self, segments) -> None:
        plog = self.log
        if plog.closed:
            raise CleanAborted("log closed")
        present = {id(s) for s in plog.segments[:-1]}
        for s in segments:
            if id(s) not in present:
                raise CleanAborted(f"segment {s.base_offset} is gone")

    # -- the work

    def _run(self):
        plog = self.log
        stats = self.stats
        first_dirty = self.plan.first_dirty_offset
        aborted, active = scan_transactions(plog, self.now, self.producer_expiration_ms)
        yield

        # 1. the offset map over the dirty segments
        offset_map: dict[bytes, int] = {}
        txn = CleanedTransactionMetadata(aborted)
        end_offset = first_dirty
        last_mapped = None
        budget = 0
        for seg, next_base in self.plan.dirty_segments:
            self._check([seg])
            start_pos = seg.offset_index.lookup(first_dirty) if seg.base_offset < first_dirty else 0
            for pos, h in seg.iter_headers(start_pos):
                if h.attributes & CONTROL_FLAG:
                    txn.on_control_batch(h, _control_type(_read(seg, pos, h)))
                elif not txn.on_batch(h) and h.record_count > 0 and h.last_offset >= first_dirty:
                    batch = decode_batch(_read(seg, pos, h), 0, verify_crc=False)
                    for r in batch.records:
                        if r.key is not None and r.offset >= first_dirty:
                            offset_map[r.key] = r.offset
                stats.bytes_read += h.size
                budget += h.size
                if budget >= STEP_BYTES:
                    budget = 0
                    yield
                    self._check([seg])
            end_offset = next_base
            last_mapped = seg
            if len(offset_map) >= self.max_map_entries:
                break
        stats.map_entries = len(offset_map)
        if last_mapped is None:
            return None
        latest_offset = end_offset - 1
        yield

        # 2. group the segments below the end of the map and clean each group into one segment
        segs = list(plog.segments)
        upto = next(i for i, s in enumerate(segs) if s is last_mapped)
        groups = group_segments_by_size(segs[:upto + 1], [s.base_offset for s in segs[1:upto + 2]],
                                        plog.config.segment_bytes)
        txn = CleanedTransactionMetadata(aborted)
        for group in groups:
            self._check(group)
            yield from self._clean_group(group, offset_map, latest_offset, txn, active)
        stats.end_offset = end_offset
        return end_offset

    def _clean_group(self, group: list[LogSegment], offset_map, latest_offset: int, txn, active):
        plog = self.log
        cfg = plog.config
        stats = self.stats
        now = self.now
        interval = cfg.index_interval_bytes
        cleaned = new_cleaned_segment(plog, group[0].base_offset)
        self._cleaned = cleaned
        group_last_offset = -1
        for _pos, h in group[-1].iter_headers(0):
            group_last_offset = h.last_offset      # that batch stays (maybe empty): the swap covers the old range
        budget = 0
        for src in group:
            out = bytearray()
            index_info: list[tuple[int, int, int, int]] = []

            def flush_out():
                nonlocal out, index_info
                if out:
                    cleaned.append(out, index_info, interval)
                    stats.bytes_written += len(out)
                    out = bytearray()
                    index_info = []

            for pos, h in src.iter_headers(0):
                stats.bytes_read += h.size
                budget += h.size
                data = None
                if h.attributes & CONTROL_FLAG:
                    data = _read(src, pos, h)
                    can_discard = txn.on_control_batch(h, _control_type(data))
                    horizon = delete_horizon(h)
                    discard_records = can_discard and horizon is not None and horizon <= now
                else:
                    can_discard = txn.on_batch(h)
                    discard_records = can_discard
                last = active.get(h.producer_id) if h.producer_id >= 0 else None
                if last is not None:
                    is_last_of_producer = (h.last_offset == last[0]) if last[0] is not None else \
                        (h.is_control and h.producer_epoch == last[1])
                else:
                    is_last_of_producer = False
                retain_empty = is_last_of_producer or h.last_offset == group_last_offset
                if discard_records and not retain_empty:
                    continue                     # BatchRetention.DELETE: the records are not even read
                marker_for_empty_txn = can_discard and h.is_control
                if data is None:
                    data = _read(src, pos, h)
                kept, all_kept, tombstones = self._filter(h, data, discard_records, offset_map, latest_offset)
                if kept:
                    horizon = delete_horizon(h)
                    need_horizon = (tombstones or marker_for_empty_txn) and horizon is None
                    if all_kept and not need_horizon:
                        new = bytes(data)
                        max_ts = h.max_timestamp
                    else:
                        new_horizon = now + cfg.delete_retention_ms if need_horizon else \
                            (horizon if horizon is not None else NO_TIMESTAMP)
                        new = rebuild_batch(h, kept, new_horizon)
                        max_ts = struct.unpack_from(">q", new, 35)[0]
                    stats.messages_retained += len(kept)
                elif retain_empty:
                    new = empty_batch(h)
                    max_ts = h.max_timestamp
                else:
                    continue
                index_info.append((len(out), h.last_offset, max_ts, len(new)))
                out += new
                if len(out) >= STEP_BYTES:
                    flush_out()
                if budget >= STEP_BYTES:
                    budget = 0
                    flush_out()
                    yield
                    self._check(group)
            flush_out()
            yield
            self._check(group)
        cleaned.on_become_inactive()
        if plog.fsync:
            cleaned.flush()
        self._cleaned = None      # from here replace_segments owns the files (past its commit point they must stay)
        replace_segments(plog, group, cleaned)
        stats.segments_cleaned += len(group)
        yield

    def _filter(self, h: BatchHeader, data, discard_records: bool, offset_map, latest_offset: int):
        """(kept records, all kept?, any tombstone kept?) for one batch (Kafka's filterBatch + shouldRetainRecord)."""
        if h.record_count == 0:
            return [], True, False
        batch = decode_batch(data, 0, verify_crc=False)
        records = batch.records
        self.stats.messages_read += len(records)
        if discard_records:
            return [], False, False
        if h.is_control:
            return records, True, False
        horizon = delete_horizon(h)
        retain_deletes = horizon is None or self.now < horizon
        kept = []
        tombstones = False
        for r in records:
            if r.offset > latest_offset:
                keep = True
            elif r.key is None:
                keep = False      # a keyless record in a compacted log (Kafka counts it invalid and drops it)
            else:
                keep = r.offset >= offset_map.get(r.key, -1) and (r.value is not None or retain_deletes)
            if keep:
                kept.append(r)
                if r.value is None:
                    tombstones = True
        return kept, len(kept) == len(records), tombstones


def group_segments_by_size(segments: list[LogSegment], next_bases: list[int], max_size: int) -> list[list]:
    """Kafka's groupSegmentsBySize: consecutive segments whose sizes add up to at most ``max_size`` and whose
    offsets fit one segment's 32-bit relative offsets."""
    groups = []
    i = 0
    while i < len(segments):
        group = [segments[i]]
        size = segments[i].size
        i += 1
        while i < len(segments) and size + segments[i].size <= max_size and \
                next_bases[i] - 1 - group[0].base_offset <= INT32_MAX:
            group.append(segments[i])
            size += segments[i].size
            i += 1
        groups.append(group)
    return groups


# ---------------------------------------------------------------------------------------------------------- files


def new_cleaned_segment(plog, base_offset: int) -> LogSegment:
    """``<base>.log.cleaned`` (+ ``.index.cleaned``, ``.timeindex.cleaned``), or a memory segment."""
    if plog.dir is None:
        return LogSegment.in_memory(base_offset, plog.clock())
    paths = [os.path.join(plog.dir, segment_file_name(base_offset, s) + CLEANED_SUFFIX) for s in SEGMENT_SUFFIXES]
    for p in paths:
        if os.path.exists(p):
            os.unlink(p)
    seg = LogSegment(base_offset, FileStore(paths[0]), OffsetIndex(base_offset, paths[1]),
                     TimeIndex(base_offset, paths[2]), plog.clock())
    seg.offset_index.ensure_file()
    seg.time_index.ensure_file()
    return seg


def _rename(src: str, dst: str) -> None:
    try:
        os.replace(src, dst)
    except FileNotFoundError:
        pass


# test hook: called with a step name during the swap ("swap", "deleted", "renamed"); raising there simulates a crash
swap_crash_hook: Callable[[str], None] | None = None


def _crash_point(name: str) -> None:
    if swap_crash_hook is not None:
        swap_crash_hook(name)


def replace_segments(plog, old: list[LogSegment], cleaned: LogSegment) -> None:
    """Swap ``cleaned`` in for the consecutive segments ``old`` (Kafka's replaceSegments)."""
    i = next(k for k, s in enumerate(plog.segments) if s is old[0])
    if plog.dir is not None:
        d = plog.dir
        base = cleaned.base_offset
        final = [os.path.join(d, segment_file_name(base, s)) for s in SEGMENT_SUFFIXES]
        cleaned.close_index_files()
        # 1. .cleaned -> .swap, indexes first: the .log.swap rename is the commit point
        try:
            for idx, path in ((cleaned.offset_index, final[1]), (cleaned.time_index, final[2])):
                os.replace(idx.path, path + SWAP_SUFFIX)
                idx.path = path + SWAP_SUFFIX
            os.replace(cleaned.store.path, final[0] + SWAP_SUFFIX)
        except BaseException:
            cleaned.delete()
            raise
        cleaned.store.path = final[0] + SWAP_SUFFIX
        if plog.fsync:
            fsync_dir(d)
        _crash_point("swap")
        # 2. the old segments' files -> .deleted (the .log first: an index without its log is an orphan)
        mtime = old[-1].store.mtime_ms
        doomed = []
        for s in old:
            s.close()
            for suffix in SEGMENT_SUFFIXES:
                p = os.path.join(d, segment_file_name(s.base_offset, suffix))
                _rename(p, p + DELETED_SUFFIX)
                doomed.append(p + DELETED_SUFFIX)
        _crash_point("deleted")
        # 3. .swap -> final names, the .log last
        for idx, path in ((cleaned.offset_index, final[1]), (cleaned.time_index, final[2])):
            os.replace(idx.path, path)
            idx.path = path
        os.replace(cleaned.store.path, final[0])
        cleaned.store.path = final[0]
        try:
            os.utime(final[0], ns=(mtime * 1_000_000, mtime * 1_000_000))   # keep the last modified time (Kafka)
            cleaned.store.mtime_ms = mtime
        except OSError:
            pass
        if plog.fsync:
            fsync_dir(d)
        _crash_point("renamed")
        # the aborted-transaction entries of the old segments now belong to the cleaned one (a crash before this
        # leaves them in files whose segment is gone: removed at open, and the cleaner dropped their aborted data)
        entries = []
        for s in old:
            entries.extend(read_txn_index(txn_index_path(d, s.base_offset)))
        for s in old[1:]:
            doomed.append(txn_index_path(d, s.base_offset))
        if len(old) > 1 and entries:
            write_txn_index(txn_index_path(d, base), sorted(entries), fsync=plog.fsync)
        # 4. delete the old files
        for p in doomed:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
    else:
        for s in old:
            s.delete()
    plog.segments[i:i + len(old)] = [cleaned]
    plog._bases[i:i + len(old)] = [cleaned.base_offset]


def complete_interrupted_swaps(directory: str, names: list[str]) -> set[int]:
    """At log open: finish swaps whose ``.log.swap`` exists (the cleaned segment is complete and fsynced), drop
    every other compaction leftover. Returns the base offsets of swapped-in segments (their indexes are rebuilt).

    Kafka's LogLoader: the old segments are those whose base offset lies in [swap base, swap next offset)."""
    swaps = sorted(int(n[:20]) for n in names if n.endswith(".log" + SWAP_SUFFIX) and n[:20].isdigit())
    done: set[int] = set()
    for base in swaps:
        swap_log = os.path.join(directory, segment_file_name(base, ".log") + SWAP_SUFFIX)
        seg = LogSegment(base, _ReadOnlyStore(swap_log), _NoIndex(), _NoIndex(), 0)
        next_offset = base
        for _pos, h in seg.iter_headers(0):
            next_offset = h.last_offset + 1
        seg.store.close()
        for n in os.listdir(directory):
            if n[:20].isdigit() and n[20:] in SEGMENT_SUFFIXES and base <= int(n[:20]) < max(next_offset, base + 1):
                os.unlink(os.path.join(directory, n))
        for suffix in (".index", ".timeindex"):
            p = os.path.join(directory, segment_file_name(base, suffix) + SWAP_SUFFIX)
            if os.path.exists(p):
                os.unlink(p)          # rebuilt from the log
        os.replace(swap_log, os.path.join(directory, segment_file_name(base, ".log")))
        done.add(base)
    if swaps:
        fsync_dir(directory)
    return done


class _ReadOnlyStore:
    header_readahead = 16384

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size

    def read(self, pos: int, n: int):
        return os.pread(self.fd, n, pos) if n > 0 else b""

    def close(self) -> None:
        os.close(self.fd)


class _NoIndex:
    def lookup(self, _offset):
        return 0


# ---------------------------------------------------------------------------------------------------------- entry points


def clean_log(plog, *, now_ms: int | None = None, upper_bound: int | None = None, force: bool = False,
              max_map_entries: int = DEFAULT_MAX_MAP_ENTRIES) -> CleanStats | None:
    """Run one whole pass on ``plog`` if it is due (or ``force``); None when there was nothing to clean."""
    if not plog.config.compact:
        return None
    now = plog.clock() if now_ms is None else now_ms
    plan = log_to_clean(plog, now, upper_bound)
    if not (should_clean(plan, plog.config.min_cleanable_dirty_ratio) or (force and plan.dirty_segments)):
        return None
    p = CleanPass(plog, plan, now, max_map_entries=max_map_entries)
    while p.step():
        pass
    if p.result is not None:
        plog.first_dirty_offset = p.result
    return p.stats


def compact_log(plog, **kw) -> int:
    """Compact ``plog`` in place (one pass if due); returns bytes reclaimed."""
    before = plog.size_in_bytes
    stats = clean_log(plog, **kw)
    return 0 if stats is None else max(before - plog.size_in_bytes, 0)


class LogCleaner:
    """The cleaner of a LogManager: picks the filthiest compacted log (Kafka's grabFilthiestCompactedLog) and
    advances its pass by bounded steps (:meth:`run`)."""

    def __init__(self, manager, *, max_map_entries: int = DEFAULT_MAX_MAP_ENTRIES):
        self.manager = manager
        self.max_map_entries = max_map_entries
        self.current: tuple[tuple[str, int], CleanPass] | None = None
        self.uncleanable: set[tuple[str, int]] = set()   # a pass failed (e.g. a corrupt batch): skipped until restart
        self.passes_done = 0

    def _pick(self, now: int, upper_bound_for) -> tuple[tuple[str, int], CleanPass] | None:
        best = None
        for tp, plog in self.manager.logs.items():
            if not plog.config.compact or plog.closed or tp in self.uncleanable:
                continue
            ub = upper_bound_for(plog) if upper_bound_for is not None else None
            plan = log_to_clean(plog, now, ub)
            if should_clean(plan, plog.config.min_cleanable_dirty_ratio):
                key = (plan.needs_compaction_now, plan.cleanable_ratio)
                if best is None or key > best[0]:
                    best = (key, tp, plog, plan)
        if best is None:
            return None
        _key, tp, plog, plan = best
        return tp, CleanPass(plog, plan, now, max_map_entries=self.max_map_entries)

    def run(self, *, max_ms: float | None = None, now_ms: int | None = None,
            upper_bound_for: Callable | None = None) -> bool:
        """Work for up to ``max_ms`` (None: until nothing is left). True when work is left for a later call."""
        deadline = None if max_ms is None else time.monotonic() + max_ms / 1000
        finished_any = False
        try:
            while True:
                if self.current is None:
                    clock = self.manager.clock
                    now = now_ms if now_ms is not None else (clock() if clock else int(time.time() * 1000))
                    self.current = self._pick(now, upper_bound_for)
                    if self.current is None:
                        return False
                tp, p = self.current
                try:
                    more = p.step()
                except CleanAborted as e:
                    log.info("cleaning of %s-%d abandoned: %s", tp[0], tp[1], e)
                    self.current = None
                    continue
                except (DecodeError, KafkaStorageError, OSError, ValueError) as e:
                    log.warning("cleaning of %s-%d failed, marking it uncleanable: %s", tp[0], tp[1], e)
                    self.uncleanable.add(tp)
                    self.current = None
                    continue
                if not more:
                    self.current = None
                    if p.result is not None:
                        p.log.first_dirty_offset = p.result
                        finished_any = True
                        self.passes_done += 1
                        log.info("cleaned %s-%d: %s", tp[0], tp[1], p.stats)
                if deadline is not None and time.monotonic() >= deadline:
                    return True
        finally:
            if finished_any:
                self.manager.checkpoint_cleaner_offsets()

    def abort(self) -> None:
        if self.current is not None:
            self.current[1].abort()
            self.current = None
