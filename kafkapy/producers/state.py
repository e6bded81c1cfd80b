"""Producer state per partition, as Kafka's ProducerStateManager / ProducerAppendInfo keep it.

For every (producer id, partition): the producer epoch, the metadata of the last 5 batches appended
(first/last sequence, last offset) so that a retried batch is recognised and answered with its original
offsets instead of being appended twice, the coordinator epoch of the last marker, and the first offset
of the producer's open transaction on this partition (which holds back the last stable offset).

Also per partition: the aborted-transaction index ``(producer id, first offset, last offset)`` the Fetch
path hands to read_committed consumers.

The state is rebuilt on start by re-scanning the batch headers of every log (control batches are decoded
to tell commit from abort). Kafka 3.9 semantics (ProducerAppendInfo.checkProducerEpoch/checkSequence,
ProducerStateEntry.findDuplicateBatch): a batch from an older epoch gets INVALID_PRODUCER_EPOCH; a batch
of a new epoch must start at sequence 0 unless the producer is unknown here; a batch of the current epoch
must continue the last sequence unless the partition holds no state for the producer (so, as in Kafka
since KIP-360, UNKNOWN_PRODUCER_ID is not returned by Produce: a producer whose state was removed by
retention or expiry may continue with any sequence).
"""

from __future__ import annotations

import logging
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field

from storage.errors import StorageError
from wire.records import CONTROL_ABORT, CONTROL_COMMIT, build_control_batch, decode_batch, iter_batch_headers, \
    parse_control_record

log = logging.getLogger("kafkapy.producers")

NUM_BATCHES_TO_RETAIN = 5          # ProducerStateEntry.NUM_BATCHES_TO_RETAIN
NO_PRODUCER_EPOCH = -1
INT32_MAX = (1 << 31) - 1


class OutOfOrderSequenceError(StorageError):
    error_code = 45
    error_name = "OUT_OF_ORDER_SEQUENCE_NUMBER"


class InvalidProducerEpochError(StorageError):
    error_code = 47
    error_name = "INVALID_PRODUCER_EPOCH"


class InvalidTxnStateError(StorageError):
    error_code = 48
    error_name = "INVALID_TXN_STATE"


class UnknownProducerIdError(StorageError):
    error_code = 59
    error_name = "UNKNOWN_PRODUCER_ID"


class TransactionCoordinatorFencedError(StorageError):
    error_code = 52
    error_name = "TRANSACTION_COORDINATOR_FENCED"


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


class PartitionProducerState:
    """ProducerStateManager of one partition log."""

    def __init__(self, plog):
        self.log = plog
        self.producers: dict[int, ProducerEntry] = {}
        self.ongoing: dict[int, int] = {}                  # producer id -> first offset of its open transaction
        # (last offset, first offset, producer id, last stable offset once it was aborted), sorted; as Kafka's
        # transaction index, the last field lets a lookup stop early
        self.aborted: list[tuple[int, int, int, int]] = []
        self.pending: list | None = None                    # headers of the batches checked for the next append

    # ------------------------------------------------------------------ produce path

    def check(self, records, txn_verifier=None) -> int | None:
        """Validate the producer fields of a client append; returns the first offset of a duplicate batch, or None.
        Raises OutOfOrderSequenceError / InvalidProducerEpochError / InvalidTxnStateError."""
        self.pending = None
        try:
            headers = [h for _pos, h in iter_batch_headers(records, allow_partial=False)]
        except Exception:  # noqa: BLE001 - malformed bytes: the log's own validation answers precisely
            return None
        # the state as updated by earlier batches of this same append: pid -> (epoch, last seq, has state)
        updated: dict[int, tuple[int, int]] = {}
        for h in headers:
            pid = h.producer_id
            if pid < 0:
                continue
            entry = self.producers.get(pid)
            epoch = h.producer_epoch
            first_seq = h.base_sequence
            last_seq = _last_seq(first_seq, h.last_offset_delta)
            if entry is not None and pid not in updated:
                dup = entry.find_duplicate(epoch, first_seq, last_seq)
                if dup is not None:
                    return dup.first_offset
            cur_epoch = entry.producer_epoch if entry is not None else NO_PRODUCER_EPOCH
            upd_epoch, upd_last = updated.get(pid, (cur_epoch, entry.last_seq if entry is not None else -1))
            if epoch < upd_epoch:
                raise InvalidProducerEpochError(
                    f"Epoch of producer {pid} at offset {self.log.log_end_offset} in {self.log.topic}-"
                    f"{self.log.partition} is {epoch}, which is smaller than the last seen epoch {upd_epoch}")
            if epoch != upd_epoch:
                if first_seq != 0 and upd_epoch != NO_PRODUCER_EPOCH:
                    raise OutOfOrderSequenceError(
                        f"Invalid sequence number for new epoch of producer {pid} at offset "
                        f"{self.log.log_end_offset} in partition {self.log.topic}-{self.log.partition}: "
                        f"{epoch} (request epoch), {first_seq} (seq. number), {upd_epoch} (current producer epoch)")
            else:
                current_last = upd_last if (pid in updated or entry is not None) else -1
                if not (cur_epoch == NO_PRODUCER_EPOCH or in_sequence(current_last, first_seq)):
                    raise OutOfOrderSequenceError(
                        f"Out of order sequence number for producer {pid} at offset {self.log.log_end_offset} in "
                        f"partition {self.log.topic}-{self.log.partition}: {first_seq} (incoming seq. number), "
                        f"{current_last} (current end sequence number)")
            in_txn = entry is not None and entry.current_txn_first_offset is not None
            if h.is_transactional:
                if not in_txn and txn_verifier is not None and not txn_verifier(pid, epoch, self.log.topic,
                                                                                  self.log.partition):
                    raise InvalidTxnStateError(
                        f"Transactional batch of producer {pid} epoch {epoch} for {self.log.topic}-"
                        f"{self.log.partition}, which is not part of an ongoing transaction")
            elif in_txn:
                raise InvalidTxnStateError(f"Expected transactional write from producer {pid} at offset "
                                           f"{self.log.log_end_offset} in partition {self.log.topic}-"
                                           f"{self.log.partition}")
            updated[pid] = (epoch, last_seq)
        self.pending = headers
        return None

    def appended(self, info) -> None:
        headers, self.pending = self.pending, None
        if headers is None or info.base_offset < 0:
            return
        offset = info.base_offset
        for h in headers:
            first = offset
            offset += h.last_offset_delta + 1
            if h.producer_id >= 0:
                self._apply_data_batch(h, first)

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

    def _apply_marker(self, pid: int, epoch: int, commit: bool, coordinator_epoch: int, offset: int,
                      timestamp: int) -> None:
        entry = self.producers.get(pid)
        if entry is None:
            entry = self.producers[pid] = ProducerEntry(pid)
        if epoch != entry.producer_epoch:
            if epoch > entry.producer_epoch:
                entry.batches.clear()
            entry.producer_epoch = max(epoch, entry.producer_epoch)
        entry.coordinator_epoch = coordinator_epoch
        entry.last_timestamp = timestamp
        first = entry.current_txn_first_offset
        entry.current_txn_first_offset = None
        self.ongoing.pop(pid, None)
        if first is not None and not commit:
            lso = min(self.ongoing.values()) if self.ongoing else offset + 1
            insort(self.aborted, (offset, first, pid, lso))

    def write_marker(self, pid: int, epoch: int, commit: bool, coordinator_epoch: int, leader_epoch: int) -> int:
        """Append a commit/abort control batch (WriteTxnMarkers, local); returns its offset."""
        entry = self.producers.get(pid)
        if entry is not None and coordinator_epoch < entry.coordinator_epoch:
            raise TransactionCoordinatorFencedError(
                f"coordinator epoch {coordinator_epoch} < {entry.coordinator_epoch} for producer {pid}")
        batch = bytearray(build_control_batch(commit, pid, epoch, coordinator_epoch))
        info = self.log.append(batch, leader_epoch=leader_epoch, origin="coordinator")
        self._apply_marker(pid, epoch, commit, coordinator_epoch, info.base_offset, info.max_timestamp)
        return info.base_offset

    # ------------------------------------------------------------------ read_committed

    def last_stable_offset(self) -> int:
        hw = self.log.high_watermark
        if self.ongoing:
            return min(min(self.ongoing.values()), hw)
        return hw

    def aborted_transactions(self, fetch_offset: int, upper: int) -> list[tuple[int, int]]:
        out = []
        aborted = self.aborted
        for i in range(bisect_left(aborted, (fetch_offset,)), len(aborted)):
            _last, first, pid, lso = aborted[i]
            if first < upper:
                out.append((pid, first))
            if lso >= upper:     # every transaction aborted later started at or after this offset
                break
        return out

    # ------------------------------------------------------------------ rebuild, expiry

    def rebuild(self) -> None:
        """Re-scan the log's batch headers (Kafka rebuilds from its snapshots; kafkapy from the log)."""
        self.producers.clear()
        self.ongoing.clear()
        self.aborted.clear()
        plog = self.log
        for h in plog.batches():
            if h.producer_id < 0:
                continue
            if h.is_control:
                try:
                    data = plog.read(h.base_offset, h.size, min_one_message=True)
                    batch = decode_batch(bytes(data[:h.size]), 0)
                    ctype, cepoch = parse_control_record(batch.records[0])
                except Exception:  # noqa: BLE001 - an unreadable marker is skipped, not fatal
                    log.warning("%s-%d: unreadable control batch at offset %d", plog.topic, plog.partition,
                                h.base_offset)
                    continue
                if ctype in (CONTROL_ABORT, CONTROL_COMMIT):
                    self._apply_marker(h.producer_id, h.producer_epoch, ctype == CONTROL_COMMIT, cepoch or 0,
                                       h.base_offset, h.max_timestamp)
            else:
                self._apply_data_batch(h, h.base_offset)

    def remove_expired(self, now_ms: int, expiration_ms: int) -> int:
        """Kafka's removeExpiredProducers: no open transaction and last timestamp older than the expiration."""
        gone = [pid for pid, e in self.producers.items()
                if e.current_txn_first_offset is None and now_ms - e.last_timestamp >= expiration_ms]
        for pid in gone:
            del self.producers[pid]
        if self.aborted and self.log.log_start_offset > 0:
            start = self.log.log_start_offset
            self.aborted = [a for a in self.aborted if a[0] >= start]
        return len(gone)
