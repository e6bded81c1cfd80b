"""Producer state of one partition log, as Kafka's ProducerStateManager / ProducerAppendInfo keep it.

For every producer id that wrote to the partition: its epoch, the metadata of its last 5 batches (first/last
sequence, last offset) so that a retried batch is recognised and answered with its original offsets instead of being
appended twice, the coordinator epoch of its last transaction marker, and the first offset of its open transaction
(which holds back the last stable offset). Also the aborted-transaction index ``(producer id, first offset, last
offset, last stable offset)`` that read_committed fetches are given.

The log (storage/log.py ``PartitionLog.append``) is the only caller of :meth:`ProducerStateManager.prepare` and
:meth:`ProducerStateManager.update`, in that order, inside one append: nothing is kept between the two calls except
what ``prepare`` returns. Rules by origin (Kafka 3.9 ``ProducerAppendInfo``):

==============  ==========================================================================================
origin          checks
==============  ==========================================================================================
client          epoch (INVALID_PRODUCER_EPOCH), sequence (OUT_OF_ORDER_SEQUENCE_NUMBER), duplicates (the
                original offsets are answered), transactional state (INVALID_TXN_STATE, with the verifier)
coordinator     epoch; markers: coordinator epoch (TRANSACTION_COORDINATOR_FENCED)
replication     none: the leader checked; the follower applies what it is given
==============  ==========================================================================================

A batch of the current epoch must continue the last sequence unless the partition holds no state for the producer
(so, as in Kafka since KIP-360, UNKNOWN_PRODUCER_ID is not returned by Produce); a batch of a new epoch must start at
sequence 0.

On disk (Kafka's layout, in the partition directory): ``<offset>.snapshot`` holds the producer entries as they were
just before ``offset`` (Kafka's snapshot format v1: version int16, crc32c uint32 of what follows, then an int32
count of entries {producer id int64, epoch int16, last sequence int32, last offset int64, offset delta int32,
timestamp int64, coordinator epoch int32, current transaction first offset int64}); written when a segment rolls and
on clean close. ``<segment base>.txnindex`` holds the aborted transactions whose marker is in that segment (Kafka's
AbortedTxn entries: version int16 0, producer id int64, first offset int64, last offset int64, last stable offset
int64). Loading reads the latest snapshot at or below the log end offset and the transaction indexes below it, then
replays only the batch headers after it; a snapshot (like Kafka's) keeps only the last batch of each producer.
"""

from __future__ import annotations

import enum
import logging
import os
import struct
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from crc32c import crc32c

from wire.errors import DecodeError
from wire.records import CONTROL_ABORT, CONTROL_COMMIT, decode_batch, parse_control_record

from .checkpoint import write_atomic
from .errors import (
    InvalidProducerEpochError,
    InvalidTxnStateError,
    OutOfOrderSequenceError,
    TransactionCoordinatorFencedError,
)

log = logging.getLogger("storage.producer_state")

NUM_BATCHES_TO_RETAIN = 5          # ProducerStateEntry.NUM_BATCHES_TO_RETAIN
NO_PRODUCER_EPOCH = -1
INT32_MAX = (1 << 31) - 1
SNAPSHOT_SUFFIX = ".snapshot"
TXN_INDEX_SUFFIX = ".txnindex"
SNAPSHOT_VERSION = 1
_SNAP_HEAD = struct.Struct(">hI")
_I32 = struct.Struct(">i")
_SNAP_ENTRY = struct.Struct(">qhiqiqiq")
_ABORTED = struct.Struct(">hqqqq")


class AppendOrigin(enum.Enum):
    """Who is appending (Kafka's AppendOrigin): decides which checks the log and the producer state make."""

    CLIENT = "client"              # a producer's Produce request: every check, offsets assigned
    COORDINATOR = "coordinator"    # group/transaction coordinator records and transaction markers
    REPLICATION = "replication"    # a follower appending its leader's batches as they are (offsets kept)


def in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == INT32_MAX)


def _last_seq(base_sequence: int, offset_delta: int) -> int:
    s = base_sequence + offset_delta
    return s - INT32_MAX - 1 if s > INT32_MAX else s


@dataclass
class BatchMetadata:
    first_seq: int
    last_seq: int
    last_offset: int
    offset_delta: int
    timestamp: int

    @property
    def first_offset(self) -> int:
        return self.last_offset - self.offset_delta


@dataclass
class ProducerEntry:
    producer_id: int
    producer_epoch: int = NO_PRODUCER_EPOCH
    batches: deque = field(default_factory=lambda: deque(maxlen=NUM_BATCHES_TO_RETAIN))
    coordinator_epoch: int = -1
    last_timestamp: int = -1
    current_txn_first_offset: int | None = None

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1

    @property
    def first_seq(self) -> int:
        return self.batches[0].first_seq if self.batches else -1

    @property
    def last_data_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else -1

    def find_duplicate(self, epoch: int, first_seq: int, last_seq: int) -> BatchMetadata | None:
        if epoch != self.producer_epoch:
            return None
        for b in self.batches:
            if b.first_seq == first_seq and b.last_seq == last_seq:
                return b
        return None


class Marker(NamedTuple):
    """A transaction marker in an append: which producer, commit or abort, and the coordinator's epoch."""

    commit: bool
    coordinator_epoch: int


class AbortedTxn(NamedTuple):
    last_offset: int            # the abort marker's offset (sort key)
    first_offset: int
    producer_id: int
    last_stable_offset: int     # the LSO once it was aborted: lets a lookup stop early, as Kafka's index


def control_marker(view, pos: int, size: int) -> Marker | None:
    """The transaction marker a control batch at ``pos`` carries (None for other control types)."""
    try:
        batch = decode_batch(view[pos:pos + size], 0, verify_crc=False)
        ctype, cepoch = parse_control_record(batch.records[0])
    except (DecodeError, IndexError):
        return None
    if ctype not in (CONTROL_ABORT, CONTROL_COMMIT):
        return None
    return Marker(ctype == CONTROL_COMMIT, cepoch or 0)


class ProducerStateManager:
    """ProducerStateManager of one partition log (``directory`` None: kept in memory only)."""

    def __init__(self, directory: str | None, topic: str = "", partition: int = 0, *, fsync: bool = True):
        self.dir = directory
        self.topic = topic
        self.partition = partition
        self.fsync = fsync
        self.producers: dict[int, ProducerEntry] = {}
        self.ongoing: dict[int, int] = {}                   # producer id -> first offset of its open transaction
        # completed transactions whose marker is not yet below the high watermark: first offset -> marker offset.
        # They still hold back the last stable offset (Kafka's unreplicatedTxns).
        self.unreplicated: dict[int, int] = {}
        self.aborted: list[AbortedTxn] = []                 # sorted by marker offset
        self.map_end_offset = 0                             # every batch below this offset is applied

    # ------------------------------------------------------------------ the append path (called by the log)

    def prepare(self, headers, markers: dict, origin: AppendOrigin, log_end_offset: int,
                txn_verifier: Callable | None = None) -> BatchMetadata | None:
        """Check the producer fields of the batches about to be appended (``headers``: [(pos, BatchHeader)];
        ``markers``: pos -> Marker of control batches). Returns the metadata of the original batch when the (only)
        producer batch of a client append is a retry already in the log; raises OutOfOrderSequenceError /
        InvalidProducerEpochError / InvalidTxnStateError / TransactionCoordinatorFencedError. Changes nothing."""
        if origin is AppendOrigin.REPLICATION:
            return None
        client = origin is AppendOrigin.CLIENT
        # the state as updated by earlier batches of this same append: pid -> (epoch, last seq)
        updated: dict[int, tuple[int, int]] = {}
        where = f"at offset {log_end_offset} in partition {self.topic}-{self.partition}"
        for pos, h in headers:
            pid = h.producer_id
            if pid < 0:
                continue
            entry = self.producers.get(pid)
            epoch = h.producer_epoch
            cur_epoch = entry.producer_epoch if entry is not None else NO_PRODUCER_EPOCH
            marker = markers.get(pos)
            if marker is not None:
                if entry is not None and marker.coordinator_epoch < entry.coordinator_epoch:
                    raise TransactionCoordinatorFencedError(
                        f"Invalid coordinator epoch for producer {pid} {where}: {marker.coordinator_epoch} "
                        f"(zombie), {entry.coordinator_epoch} (current)")
                if epoch < updated.get(pid, (cur_epoch, 0))[0]:
                    raise InvalidProducerEpochError(f"Epoch of producer {pid} {where} is {epoch}, which is "
                                                    f"smaller than the last seen epoch {cur_epoch}")
                updated[pid] = (epoch, -1)
                continue
            first_seq = h.base_sequence
            last_seq = _last_seq(first_seq, h.last_offset_delta)
            if client and entry is not None and pid not in updated:
                dup = entry.find_duplicate(epoch, first_seq, last_seq)
                if dup is not None:
                    return dup
            upd_epoch, upd_last = updated.get(pid, (cur_epoch, entry.last_seq if entry is not None else -1))
            if epoch < upd_epoch:
                raise InvalidProducerEpochError(f"Epoch of producer {pid} {where} is {epoch}, which is smaller "
                                                f"than the last seen epoch {upd_epoch}")
            if client:
                if epoch != upd_epoch:
                    if first_seq != 0 and upd_epoch != NO_PRODUCER_EPOCH:
                        raise OutOfOrderSequenceError(
                            f"Invalid sequence number for new epoch of producer {pid} {where}: {epoch} (request "
                            f"epoch), {first_seq} (seq. number), {upd_epoch} (current producer epoch)")
                else:
                    current_last = upd_last if (pid in updated or entry is not None) else -1
                    if not (cur_epoch == NO_PRODUCER_EPOCH or in_sequence(current_last, first_seq)):
                        raise OutOfOrderSequenceError(
                            f"Out of order sequence number for producer {pid} {where}: {first_seq} (incoming seq. "
                            f"number), {current_last} (current end sequence number)")
                in_txn = entry is not None and entry.current_txn_first_offset is not None
                if h.is_transactional:
                    if not in_txn and txn_verifier is not None and \
                            not txn_verifier(pid, epoch, self.topic, self.partition):
                        raise InvalidTxnStateError(
                            f"Transactional batch of producer {pid} epoch {epoch} for {self.topic}-{self.partition}, "
                            "which is not part of an ongoing transaction")
                elif in_txn:
                    raise InvalidTxnStateError(f"Expected transactional write from producer {pid} {where}")
            updated[pid] = (epoch, last_seq)
        return None

    def update(self, headers, markers: dict, base_offsets: list[int]) -> list[AbortedTxn]:
        """Apply appended batches (their first offsets in ``base_offsets``); returns the transactions the append
        aborted (for the segment's transaction index)."""
        aborted = []
        for (pos, h), first in zip(headers, base_offsets):
            if h.producer_id >= 0:
                marker = markers.get(pos)
                if marker is not None:
                    a = self._apply_marker(h.producer_id, h.producer_epoch, marker, first, h.max_timestamp)
                    if a is not None:
                        aborted.append(a)
                elif not h.is_control:
                    self._apply_data_batch(h, first)
            self.map_end_offset = first + h.last_offset_delta + 1
        return aborted

    def _apply_data_batch(self, h, first_offset: int) -> None:
        pid = h.producer_id
        entry = self.producers.get(pid)
        if entry is None:
            entry = self.producers[pid] = ProducerEntry(pid)
        if h.producer_epoch != entry.producer_epoch:
            entry.producer_epoch = h.producer_epoch
            entry.batches.clear()
        last_offset = first_offset + h.last_offset_delta
        if h.base_sequence >= 0:
            entry.batches.append(BatchMetadata(h.base_sequence, _last_seq(h.base_sequence, h.last_offset_delta),
                                               last_offset, h.last_offset_delta, h.max_timestamp))
        entry.last_timestamp = h.max_timestamp
        if h.is_transactional and entry.current_txn_first_offset is None:
            entry.current_txn_first_offset = first_offset
            self.ongoing[pid] = first_offset

    def _apply_marker(self, pid: int, epoch: int, marker: Marker, offset: int, timestamp: int) -> AbortedTxn | None:
        entry = self.producers.get(pid)
        if entry is None:
            entry = self.producers[pid] = ProducerEntry(pid)
        if epoch != entry.producer_epoch:
            if epoch > entry.producer_epoch:
                entry.batches.clear()
            entry.producer_epoch = max(epoch, entry.producer_epoch)
        entry.coordinator_epoch = marker.coordinator_epoch
        entry.last_timestamp = timestamp
        first = entry.current_txn_first_offset
        entry.current_txn_first_offset = None
        self.ongoing.pop(pid, None)
        if first is None:
            return None
        self.unreplicated[first] = offset
        if marker.commit:
            return None
        lso = min(self.ongoing.values()) if self.ongoing else offset + 1
        a = AbortedTxn(offset, first, pid, lso)
        insort(self.aborted, a)
        return a

    # ------------------------------------------------------------------ read_committed

    def on_high_watermark_updated(self, high_watermark: int) -> None:
        """Transactions whose marker is now below the high watermark stop holding back the last stable offset."""
        if self.unreplicated:
            for first in [f for f, marker in self.unreplicated.items() if marker < high_watermark]:
                del self.unreplicated[first]

    def first_unstable_offset(self) -> int | None:
        """The first offset of the earliest transaction that is open, or whose marker is not yet replicated."""
        firsts = []
        if self.ongoing:
            firsts.append(min(self.ongoing.values()))
        if self.unreplicated:
            firsts.append(min(self.unreplicated))
        return min(firsts) if firsts else None

    def aborted_transactions(self, fetch_offset: int, upper: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of the aborted transactions overlapping [fetch_offset, upper)."""
        out = []
        aborted = self.aborted
        for i in range(bisect_left(aborted, (fetch_offset,)), len(aborted)):
            a = aborted[i]
            if a.first_offset < upper:
                out.append((a.producer_id, a.first_offset))
            if a.last_stable_offset >= upper:   # every transaction aborted later started at or after this offset
                break
        return out

    # ------------------------------------------------------------------ expiry, truncation

    def remove_expired(self, now_ms: int, expiration_ms: int, log_start_offset: int) -> int:
        """Kafka's removeExpiredProducers: no open transaction and last timestamp older than the expiration."""
        gone = [pid for pid, e in self.producers.items()
                if e.current_txn_first_offset is None and now_ms - e.last_timestamp >= expiration_ms]
        for pid in gone:
            del self.producers[pid]
        if self.aborted and log_start_offset > 0:
            self.aborted = [a for a in self.aborted if a.last_offset >= log_start_offset]
        return len(gone)

    def reset(self) -> None:
        self.producers.clear()
        self.ongoing.clear()
        self.unreplicated.clear()
        self.aborted.clear()
        self.map_end_offset = 0

    # ------------------------------------------------------------------ snapshots

    def snapshot_offsets(self) -> list[int]:
        if self.dir is None:
            return []
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(SNAPSHOT_SUFFIX) and name[:-len(SNAPSHOT_SUFFIX)].isdigit():
                out.append(int(name[:-len(SNAPSHOT_SUFFIX)]))
        return sorted(out)

    def snapshot_path(self, offset: int) -> str:
        return os.path.join(self.dir, f"{offset:020d}{SNAPSHOT_SUFFIX}")

    def take_snapshot(self) -> None:
        """Write ``<map end offset>.snapshot`` (atomically), as Kafka does at segment roll and clean close."""
        if self.dir is None:
            return
        body = bytearray(_I32.pack(len(self.producers)))
        for e in self.producers.values():
            b = e.batches[-1] if e.batches else None
            body += _SNAP_ENTRY.pack(e.producer_id, e.producer_epoch, b.last_seq if b else -1,
                                     b.last_offset if b else -1, b.offset_delta if b else 0, e.last_timestamp,
                                     e.coordinator_epoch,
                                     -1 if e.current_txn_first_offset is None else e.current_txn_first_offset)
        data = _SNAP_HEAD.pack(SNAPSHOT_VERSION, crc32c(body)) + body
        write_atomic(self.snapshot_path(self.map_end_offset), data, fsync=self.fsync)

    def read_snapshot(self, offset: int) -> list[ProducerEntry]:
        """Entries of ``<offset>.snapshot``; DecodeError when it is not a valid snapshot."""
        with open(self.snapshot_path(offset), "rb") as f:
            data = f.read()
        if len(data) < _SNAP_HEAD.size + 4:
            raise DecodeError(f"producer snapshot of {len(data)} bytes", "ProducerSnapshot")
        version, crc = _SNAP_HEAD.unpack_from(data, 0)
        if version != SNAPSHOT_VERSION:
            raise DecodeError(f"producer snapshot version {version}", "ProducerSnapshot.version")
        if crc32c(data[_SNAP_HEAD.size:]) != crc:
            raise DecodeError("producer snapshot CRC mismatch", "ProducerSnapshot.crc")
        n = _I32.unpack_from(data, _SNAP_HEAD.size)[0]
        if n < 0 or len(data) != _SNAP_HEAD.size + 4 + n * _SNAP_ENTRY.size:
            raise DecodeError(f"producer snapshot with {n} entries in {len(data)} bytes", "ProducerSnapshot")
        out = []
        for pid, epoch, last_seq, last_offset, delta, ts, cepoch, txn_first in \
                _SNAP_ENTRY.iter_unpack(memoryview(data)[_SNAP_HEAD.size + 4:]):
            e = ProducerEntry(pid, epoch, coordinator_epoch=cepoch, last_timestamp=ts,
                              current_txn_first_offset=None if txn_first < 0 else txn_first)
            if last_offset >= 0:
                e.batches.append(BatchMetadata(last_seq - delta, last_seq, last_offset, delta, ts))
            out.append(e)
        return out

    def load_snapshot(self, log_end_offset: int, log_start_offset: int) -> int:
        """Load the latest valid snapshot at or below ``log_end_offset`` (later ones are deleted: they describe data
        that is gone); returns the offset from which the log must be replayed."""
        self.reset()
        for off in reversed(self.snapshot_offsets()):
            if off > log_end_offset:
                self.delete_snapshot(off)
                continue
            if off < log_start_offset:
                break
            try:
                entries = self.read_snapshot(off)
            except (OSError, DecodeError) as e:
                log.warning("%s-%d: ignoring producer snapshot %020d%s: %s", self.topic, self.partition, off,
                            SNAPSHOT_SUFFIX, e)
                self.delete_snapshot(off)
                continue
            for e in entries:
                self.producers[e.producer_id] = e
                if e.current_txn_first_offset is not None:
                    self.ongoing[e.producer_id] = e.current_txn_first_offset
            self.map_end_offset = off
            return off
        self.map_end_offset = log_start_offset
        return log_start_offset

    def delete_snapshot(self, offset: int) -> None:
        try:
            os.unlink(self.snapshot_path(offset))
        except FileNotFoundError:
            pass

    def delete_snapshots_after(self, offset: int) -> None:
        """Truncation: snapshots above ``offset`` describe data that is gone."""
        for off in self.snapshot_offsets():
            if off > offset:
                self.delete_snapshot(off)

    def remove_stray_snapshots(self, segment_bases: list[int]) -> None:
        """Kafka's removeStraySnapshots: keep the snapshots at segment base offsets and the latest one (the clean
        close's, at the log end); every other one is stray and deleted, so clean restarts do not pile them up."""
        offs = self.snapshot_offsets()
        bases = set(segment_bases)
        latest = offs[-1] if offs else None
        for off in offs:
            if off not in bases and off != latest:
                self.delete_snapshot(off)
        if latest is not None and latest not in bases and segment_bases and latest < max(segment_bases):
            self.delete_snapshot(latest)

    def delete_snapshots_before(self, offset: int) -> None:
        """Retention: snapshots below the first segment are no longer needed (the latest is always kept)."""
        offs = self.snapshot_offsets()
        for off in offs[:-1]:
            if off < offset:
                self.delete_snapshot(off)


# ---------------------------------------------------------------------------------------------- transaction index

def txn_index_path(directory: str, base_offset: int) -> str:
    return os.path.join(directory, f"{base_offset:020d}{TXN_INDEX_SUFFIX}")


def read_txn_index(path: str) -> list[AbortedTxn]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    whole = len(data) - len(data) % _ABORTED.size
    for version, pid, first, last, lso in _ABORTED.iter_unpack(memoryview(data)[:whole]):
        if version == 0:
            out.append(AbortedTxn(last, first, pid, lso))
    return out


def append_txn_index(path: str, entries: list[AbortedTxn]) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(_ABORTED.pack(0, a.producer_id, a.first_offset, a.last_offset, a.last_stable_offset)
                         for a in entries))


def write_txn_index(path: str, entries: list[AbortedTxn], fsync: bool = True) -> None:
    if not entries:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    write_atomic(path, b"".join(_ABORTED.pack(0, a.producer_id, a.first_offset, a.last_offset, a.last_stable_offset)
                                for a in entries), fsync=fsync)
