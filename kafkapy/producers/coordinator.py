"""The transaction coordinator (Kafka's TransactionCoordinator + TransactionStateManager + marker writer).

Per transactional id: producer id, epoch, last producer id/epoch (KIP-360 retries), timeout, state, the
partitions in the current transaction and its start time. Every transition is written to
``__transaction_state`` (key TransactionLogKey v0, value TransactionLogValue v0, both version-prefixed, as
Kafka writes them; partition ``abs(hashCode(transactional id)) % transaction.state.log.num.partitions``)
before it takes effect, and the whole map is reloaded from that topic on start. Transactions found in
PrepareCommit/PrepareAbort on load are completed (markers written again: a second marker is harmless);
Ongoing ones abort when their timeout passes.

Commit/abort markers are appended to the local partitions through their one append path (single broker:
Kafka's WriteTxnMarkers round trip to itself is a function call), then the group coordinator applies or drops
transactional offset commits, then the CompleteCommit/CompleteAbort state is written.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import dataclass, field
from enum import IntEnum

from kafkapy.internal_topics import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC, iter_batches, partition_for
from kafkapy.partition import AppendOrigin
from kafkapy.producers.ids import ProducerIdManager
from storage.errors import StorageError
from wire import protocol
from wire.messages.error_codes import ErrorCode
from wire.records import Record, build_batch, build_control_batch

log = logging.getLogger("kafkapy.transactions")

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
SHORT_MAX = 32767
_VERSION = struct.Struct(">h")

def config_int(broker, name: str) -> int:
    """A broker setting in force (static or dynamic; defaults from kafkapy.config's registry)."""
    return broker.config.get_int(name)


class TxnState(IntEnum):
    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7


STATE_NAMES = {TxnState.EMPTY: "Empty", TxnState.ONGOING: "Ongoing", TxnState.PREPARE_COMMIT: "PrepareCommit",
               TxnState.PREPARE_ABORT: "PrepareAbort", TxnState.COMPLETE_COMMIT: "CompleteCommit",
               TxnState.COMPLETE_ABORT: "CompleteAbort", TxnState.DEAD: "Dead",
               TxnState.PREPARE_EPOCH_FENCE: "PrepareEpochFence"}


def epoch_exhausted(epoch: int) -> bool:
    return epoch >= SHORT_MAX - 1


@dataclass
class TxnMetadata:
    transactional_id: str
    producer_id: int
    last_producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH
    last_producer_epoch: int = NO_PRODUCER_EPOCH
    timeout_ms: int = 60000
    state: TxnState = TxnState.EMPTY
    partitions: set = field(default_factory=set)     # {(topic, partition)}
    start_ms: int = -1
    last_update_ms: int = -1


class CoordinatorError(Exception):
    def __init__(self, code: ErrorCode, message: str = ""):
        super().__init__(message or code.name)
        self.code = code


class TransactionCoordinator:
    def __init__(self, broker, groups):
        self.broker = broker
        self.groups = groups                 # kafkapy.groups.GroupCoordinator: transactional offset commits
        self.ids = ProducerIdManager(None)   # opened on the data dir by load()
        self.txns: dict[str, TxnMetadata] = {}
        self.by_producer: dict[int, str] = {}
        self._task: asyncio.Task | None = None
        self.key_mod = protocol.data_module("TransactionLogKey")
        self.value_mod = protocol.data_module("TransactionLogValue")

    # ------------------------------------------------------------------ lifecycle

    @property
    def num_partitions(self) -> int:
        t = self.broker.topics.get(TRANSACTION_STATE_TOPIC)
        return t.partitions if t is not None else self.broker.config.get_int("transaction.state.log.num.partitions")

    def coordinator_epoch(self) -> int:
        """Kafka's coordinator epoch: the leader epoch of the ``__transaction_state`` partitions (one broker)."""
        partition = self.broker.partition(TRANSACTION_STATE_TOPIC, 0)
        return partition.leader_epoch if partition is not None else 0

    def load(self) -> None:
        """Producer ids (their block file in the data dir), then every transactional id in __transaction_state."""
        cluster = self.broker.cluster
        self.ids = ProducerIdManager(None if self.broker.memory else self.broker.config.data_dir,
                                     cluster.store if cluster is not None else None)
        topic = self.broker.topics.get(TRANSACTION_STATE_TOPIC)
        if topic is None:
            return
        for p in range(topic.partitions):
            plog = self.broker.partition_log(TRANSACTION_STATE_TOPIC, p)
            if plog is None:
                continue
            start = plog.log_start_offset
            for rec in (r for b in iter_batches(plog) for r in b.records if r.offset >= start):
                try:
                    self._load_record(rec)
                except Exception as e:  # noqa: BLE001 - one bad record must not stop the broker
                    log.warning("__transaction_state-%d: skipping unreadable record at offset %s: %s", p,
                                rec.offset, e)
        n_open = sum(1 for m in self.txns.values() if m.state in (TxnState.ONGOING, TxnState.PREPARE_COMMIT,
                                                                    TxnState.PREPARE_ABORT))
        if self.txns:
            log.info("loaded %d transactional id(s) from %s (%d in a transaction)", len(self.txns),
                     TRANSACTION_STATE_TOPIC, n_open)

    def _load_record(self, rec) -> None:
        if rec.key is None:
            return
        kv = _VERSION.unpack_from(rec.key, 0)[0]
        if kv != 0:
            return      # not a transaction log key (Kafka has only version 0)
        key, _ = protocol.decode(self.key_mod, 0, rec.key, 2)
        tid = key.transactional_id
        if rec.value is None:
            old = self.txns.pop(tid, None)
            if old is not None and self.by_producer.get(old.producer_id) == tid:
                del self.by_producer[old.producer_id]
            return
        vv = _VERSION.unpack_from(rec.value, 0)[0]
        val, _ = protocol.decode(self.value_mod, min(vv, 1), rec.value, 2)
        m = TxnMetadata(tid, val.producer_id, val.previous_producer_id, val.producer_epoch, NO_PRODUCER_EPOCH,
                        val.transaction_timeout_ms, TxnState(val.transaction_status),
                        {(tp.topic, p) for tp in val.transaction_partitions for p in tp.partition_ids},
                        val.transaction_start_timestamp_ms, val.transaction_last_update_timestamp_ms)
        self.txns[tid] = m
        self.by_producer[m.producer_id] = tid
        self.ids.observe(m.producer_id)

    def start(self) -> None:
        """Finish what a crash interrupted, then run the timers."""
        for m in list(self.txns.values()):
            if m.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
                try:
                    self._complete(m, m.state == TxnState.PREPARE_COMMIT)
                except Exception:  # noqa: BLE001
                    log.exception("could not complete transaction %s on load", m.transactional_id)
        self._task = asyncio.get_running_loop().create_task(self._timers(), name="kafkapy-transaction-timers")

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _timers(self) -> None:
        abort_every = config_int(self.broker, "transaction.abort.timed.out.transaction.cleanup.interval.ms") / 1000
        expire_every = config_int(self.broker, "producer.id.expiration.check.interval.ms") / 1000
        txn_expire_every = config_int(self.broker, "transaction.remove.expired.transaction.cleanup.interval.ms") / 1000
        tick = max(min(abort_every, 1.0), 0.05)
        last_expire = last_txn_expire = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            try:
                self.abort_timed_out()
                now = time.monotonic()
                if now - last_expire >= expire_every:
                    last_expire = now
                    self.broker.remove_expired_producers(config_int(self.broker, "producer.id.expiration.ms"))
                if now - last_txn_expire >= txn_expire_every:
                    last_txn_expire = now
                    self.remove_expired_transactional_ids()
                for m in list(self.txns.values()):   # markers that failed to be written earlier: retry
                    if m.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
                        self._complete(m, m.state == TxnState.PREPARE_COMMIT)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the timer keeps running
                log.exception("transaction timer failed")

    # ------------------------------------------------------------------ persistence

    def ensure_topic(self):
        t = self.broker.topics.get(TRANSACTION_STATE_TOPIC)
        if t is None:
            n = self.broker.config.get_int("transaction.state.log.num.partitions")
            seg = str(config_int(self.broker, "transaction.state.log.segment.bytes"))
            t = self.broker.create_topic(TRANSACTION_STATE_TOPIC, n, 1,
                                         {"cleanup.policy": "compact", "compression.type": "uncompressed",
                                          "segment.bytes": seg, "unclean.leader.election.enable": "false",
                                          "min.insync.replicas": "1"}, internal=True)
        return t

    def _write(self, m: TxnMetadata) -> None:
        """Persist ``m`` (its state after the transition) to __transaction_state; raises CoordinatorError."""
        t = self.ensure_topic()
        key = _VERSION.pack(0) + protocol.encode(self.key_mod, 0, self.key_mod.MESSAGE(transactional_id=m.transactional_id))
        by_topic: dict[str, list[int]] = {}
        for topic, p in sorted(m.partitions):
            by_topic.setdefault(topic, []).append(p)
        PS = self.value_mod.PartitionsSchema
        value = self.value_mod.MESSAGE(
            producer_id=m.producer_id, producer_epoch=m.producer_epoch, transaction_timeout_ms=m.timeout_ms,
            transaction_status=int(m.state),
            transaction_partitions=[PS(topic=k, partition_ids=v) for k, v in by_topic.items()],
            transaction_last_update_timestamp_ms=m.last_update_ms,
            transaction_start_timestamp_ms=m.start_ms)
        self._append(t, m.transactional_id, key, _VERSION.pack(0) + protocol.encode(self.value_mod, 0, value))

    def _append(self, t, tid: str, key: bytes, value: bytes | None) -> None:
        partition = self.broker.partition(TRANSACTION_STATE_TOPIC, partition_for(tid, t.partitions))
        batch = bytearray(build_batch([Record(None, int(time.time() * 1000), key, value, [])]))
        try:
            partition.append(batch, AppendOrigin.COORDINATOR)
        except StorageError as e:
            log.error("writing transaction state of %s failed: %s", tid, e)
            raise CoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE, str(e)) from e

    def _transition(self, m: TxnMetadata, **changes) -> None:
        """Write the new state first, then apply it (Kafka's prepareTransitionTo + completeTransitionTo)."""
        new = TxnMetadata(**{**m.__dict__, **changes})
        new.partitions = set(new.partitions)
        self._write(new)
        if new.producer_id != m.producer_id and self.by_producer.get(m.producer_id) == m.transactional_id:
            del self.by_producer[m.producer_id]
        m.__dict__.update(new.__dict__)
        self.txns[m.transactional_id] = m
        self.by_producer[m.producer_id] = m.transactional_id

    # ------------------------------------------------------------------ InitProducerId

    def init_producer_id(self, tid: str | None, timeout_ms: int, pid: int, epoch: int) -> tuple[ErrorCode, int, int]:
        if tid is None:
            # idempotent producer: always a fresh id (Kafka ignores the id/epoch a KIP-360 client sends)
            return ErrorCode.NONE, self.ids.generate(), 0
        if tid == "":
            return ErrorCode.INVALID_REQUEST, -1, -1
        if timeout_ms <= 0 or timeout_ms > config_int(self.broker, "transaction.max.timeout.ms"):
            return ErrorCode.INVALID_TRANSACTION_TIMEOUT, -1, -1
        if (pid, epoch) == (NO_PRODUCER_ID, NO_PRODUCER_EPOCH):
            expected = None
        elif pid == NO_PRODUCER_ID or epoch == NO_PRODUCER_EPOCH:
            return ErrorCode.INVALID_REQUEST, -1, -1
        else:
            expected = (pid, epoch)
        now = _now()
        m = self.txns.get(tid)
        if m is None:
            m = TxnMetadata(tid, self.ids.generate(), timeout_ms=timeout_ms, last_update_ms=now)
            fresh = True
        else:
            fresh = False
        if expected is not None and not (m.producer_epoch == NO_PRODUCER_EPOCH or expected[0] == m.producer_id or
                                         (expected[0] == m.last_producer_id and epoch_exhausted(expected[1]))):
            return ErrorCode.PRODUCER_FENCED, -1, -1
        try:
            if m.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
                return ErrorCode.CONCURRENT_TRANSACTIONS, -1, -1
            if m.state == TxnState.ONGOING:
                # fence the current producer: bump the epoch, abort its transaction with the new epoch, and
                # let the client retry (which bumps the epoch once more)
                new_epoch = m.producer_epoch if epoch_exhausted(m.producer_epoch) else m.producer_epoch + 1
                log.info("fencing producer %d epoch %d of transactional id %s: aborting its open transaction",
                         m.producer_id, m.producer_epoch, tid)
                self._transition(m, producer_epoch=new_epoch, last_producer_epoch=NO_PRODUCER_EPOCH,
                                 state=TxnState.PREPARE_ABORT, last_update_ms=now)
                self._complete(m, False)
                return ErrorCode.CONCURRENT_TRANSACTIONS, -1, -1
            if m.state not in (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT):
                return ErrorCode.UNKNOWN_SERVER_ERROR, -1, -1
            if epoch_exhausted(m.producer_epoch) and (expected is None or expected[1] == m.producer_epoch):
                new_pid = self.ids.generate()
                last_epoch = m.producer_epoch if expected is not None else NO_PRODUCER_EPOCH
                self._transition(m, producer_id=new_pid, last_producer_id=m.producer_id, producer_epoch=0,
                                 last_producer_epoch=last_epoch, timeout_ms=timeout_ms, state=TxnState.EMPTY,
                                 partitions=set(), start_ms=-1, last_update_ms=now)
                return ErrorCode.NONE, m.producer_id, m.producer_epoch
            bumped = m.producer_epoch + 1
            if expected is None:
                new_epoch, last_epoch = bumped, NO_PRODUCER_EPOCH
            elif m.producer_epoch == NO_PRODUCER_EPOCH or expected[1] == m.producer_epoch:
                new_epoch, last_epoch = bumped, m.producer_epoch
            elif expected[1] == m.last_producer_epoch:
                new_epoch, last_epoch = m.producer_epoch, m.last_producer_epoch   # a retry of a bump that worked
            else:
                return ErrorCode.PRODUCER_FENCED, -1, -1
            self._transition(m, producer_epoch=new_epoch, last_producer_epoch=last_epoch, timeout_ms=timeout_ms,
                             state=TxnState.EMPTY, partitions=set(), start_ms=-1, last_update_ms=now)
            if fresh:
                log.info("transactional id %s: producer id %d epoch %d", tid, m.producer_id, m.producer_epoch)
            return ErrorCode.NONE, m.producer_id, m.producer_epoch
        except CoordinatorError as e:
            return e.code, -1, -1

    # ------------------------------------------------------------------ AddPartitionsToTxn / AddOffsetsToTxn

    def _check_producer(self, tid: str, pid: int, epoch: int) -> TxnMetadata:
        if not tid:
            raise CoordinatorError(ErrorCode.INVALID_REQUEST)
        m = self.txns.get(tid)
        if m is None or m.producer_id != pid:
            raise CoordinatorError(ErrorCode.INVALID_PRODUCER_ID_MAPPING)
        if m.producer_epoch != epoch:
            raise CoordinatorError(ErrorCode.PRODUCER_FENCED)
        return m

    def add_partitions(self, tid: str, pid: int, epoch: int, partitions: set) -> ErrorCode:
        try:
            m = self._check_producer(tid, pid, epoch)
            if m.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT, TxnState.PREPARE_EPOCH_FENCE):
                return ErrorCode.CONCURRENT_TRANSACTIONS
            if m.state == TxnState.ONGOING and partitions <= m.partitions:
                return ErrorCode.NONE
            now = _now()
            start = m.start_ms if m.state == TxnState.ONGOING else now
            self._transition(m, state=TxnState.ONGOING, partitions=m.partitions | partitions, start_ms=start,
                             last_update_ms=now)
            return ErrorCode.NONE
        except CoordinatorError as e:
            return e.code

    def verify_partitions(self, tid: str, pid: int, epoch: int, partitions: set) -> dict:
        """AddPartitionsToTxn v4+ verify_only: {(topic, partition): error}."""
        try:
            m = self._check_producer(tid, pid, epoch)
            if m.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
                raise CoordinatorError(ErrorCode.CONCURRENT_TRANSACTIONS)
        except CoordinatorError as e:
            return {tp: e.code for tp in partitions}
        ok = m.state == TxnState.ONGOING
        return {tp: ErrorCode.NONE if ok and tp in m.partitions else ErrorCode.INVALID_TXN_STATE for tp in partitions}

    def partition_in_transaction(self, pid: int, epoch: int, topic: str, partition: int) -> bool:
        """The produce path's verification (KIP-890 part 1): a transactional batch that starts a transaction
        on a partition must belong to an ongoing transaction that added that partition."""
        tid = self.by_producer.get(pid)
        if tid is None:
            return False
        m = self.txns.get(tid)
        return (m is not None and m.producer_id == pid and m.producer_epoch == epoch
                and m.state == TxnState.ONGOING and (topic, partition) in m.partitions)

    def group_partition(self, group_id: str) -> tuple[str, int]:
        n = self.broker.topics.get(OFFSETS_TOPIC)
        parts = n.partitions if n is not None else self.broker.config.get_int("offsets.topic.num.partitions")
        return OFFSETS_TOPIC, partition_for(group_id, parts)

    # ------------------------------------------------------------------ EndTxn

    def end_transaction(self, tid: str, pid: int, epoch: int, commit: bool) -> ErrorCode:
        try:
            if not tid:
                return ErrorCode.INVALID_REQUEST
            m = self.txns.get(tid)
            if m is None or m.producer_id != pid:
                return ErrorCode.INVALID_PRODUCER_ID_MAPPING
            if epoch != m.producer_epoch:
                return ErrorCode.PRODUCER_FENCED
            s = m.state
            if s == TxnState.ONGOING:
                self._transition(m, state=TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT,
                                 last_update_ms=_now())
                self._complete(m, commit)
                return ErrorCode.NONE
            if s == TxnState.COMPLETE_COMMIT:
                return ErrorCode.NONE if commit else ErrorCode.INVALID_TXN_STATE
            if s == TxnState.COMPLETE_ABORT:
                return ErrorCode.NONE if not commit else ErrorCode.INVALID_TXN_STATE
            if s == TxnState.PREPARE_COMMIT:
                return ErrorCode.CONCURRENT_TRANSACTIONS if commit else ErrorCode.INVALID_TXN_STATE
            if s == TxnState.PREPARE_ABORT:
                return ErrorCode.CONCURRENT_TRANSACTIONS if not commit else ErrorCode.INVALID_TXN_STATE
            return ErrorCode.INVALID_TXN_STATE
        except CoordinatorError as e:
            return e.code

    def _complete(self, m: TxnMetadata, commit: bool) -> None:
        """Write the markers to every partition of the transaction, then CompleteCommit/CompleteAbort."""
        coordinator_epoch = self.coordinator_epoch()
        for topic, p in sorted(m.partitions):
            partition = self.broker.partition(topic, p)
            if partition is None:
                continue    # deleted meanwhile: Kafka drops markers for partitions that are gone
            marker = build_control_batch(commit, m.producer_id, m.producer_epoch, coordinator_epoch)
            partition.append(bytearray(marker), AppendOrigin.COORDINATOR)
        try:
            self.groups.on_transaction_completed(m.producer_id, commit, set(m.partitions))
        except Exception:  # noqa: BLE001
            log.exception("applying the transactional offset commits of producer %d failed", m.producer_id)
        self._transition(m, state=TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT,
                         partitions=set(), last_update_ms=_now())

    # ------------------------------------------------------------------ timers

    def abort_timed_out(self) -> int:
        now = _now()
        n = 0
        for m in list(self.txns.values()):
            if m.state == TxnState.ONGOING and m.start_ms >= 0 and now - m.start_ms > m.timeout_ms:
                log.info("aborting transaction of %s (producer %d epoch %d): open for more than %d ms",
                         m.transactional_id, m.producer_id, m.producer_epoch, m.timeout_ms)
                new_epoch = m.producer_epoch if epoch_exhausted(m.producer_epoch) else m.producer_epoch + 1
                self._transition(m, producer_epoch=new_epoch, last_producer_epoch=NO_PRODUCER_EPOCH,
                                 state=TxnState.PREPARE_ABORT, last_update_ms=now)
                self._complete(m, False)
                n += 1
        return n

    def remove_expired_transactional_ids(self) -> int:
        """transactional.id.expiration.ms: forget ids idle that long with no open transaction (a tombstone)."""
        now = _now()
        ttl = config_int(self.broker, "transactional.id.expiration.ms")
        gone = [m for m in self.txns.values()
                if m.state in (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)
                and now - m.last_update_ms >= ttl]
        t = self.broker.topics.get(TRANSACTION_STATE_TOPIC)
        for m in gone:
            if t is not None:
                key = _VERSION.pack(0) + protocol.encode(self.key_mod, 0,
                                                         self.key_mod.MESSAGE(transactional_id=m.transactional_id))
                self._append(t, m.transactional_id, key, None)
            del self.txns[m.transactional_id]
            if self.by_producer.get(m.producer_id) == m.transactional_id:
                del self.by_producer[m.producer_id]
        return len(gone)


def _now() -> int:
    return int(time.time() * 1000)


