"""The transaction coordinator (Kafka's TransactionCoordinator + TransactionStateManager + marker writer).

Per transactional id: producer id, epoch, last producer id/epoch (KIP-360 retries), timeout, state, the
partitions in the current transaction and its start time. Every transition is written to
``__transaction_state`` (key TransactionLogKey v0, value TransactionLogValue v0, both version-prefixed, as
Kafka writes them; partition ``abs(hashCode(transactional id)) % transaction.state.log.num.partitions``)
before it takes effect, and the whole map is reloaded from that topic on start. Transactions found in
PrepareCommit/PrepareAbort on load are completed (markers written again: a second marker is harmless);
Ongoing ones abort when their timeout passes.

Commit/abort markers: a single broker appends them to its partitions through their one append path at once
(Kafka's WriteTxnMarkers round trip to itself is a function call), then writes CompleteCommit/CompleteAbort.

Several brokers (kafkapy/cluster): the coordinator of a transactional id is the leader of its
``__transaction_state`` partition, as the group coordinator (``owned``: the partitions this broker leads; their
transactional ids are loaded when it becomes leader, dropped when it stops; NOT_COORDINATOR for any other id).
Every state write is appended with acks=all: the handlers answer only once it is replicated
(:meth:`TransactionCoordinator.wait_replicated`), and markers are sent only once the PrepareCommit/PrepareAbort
that decides them is replicated, so a new coordinator always finds the decision the markers carry. EndTxn answers
then; the markers go in the background (Kafka's TransactionMarkerChannelManager) to each partition's current leader:
a local append, or a WriteTxnMarkers request (kafkapy/handlers/txn_markers.py) to that broker, retried with backoff
until every partition has its marker (or this broker stops coordinating the id, or a marker is fenced by a newer
coordinator epoch), then CompleteCommit/CompleteAbort is written. Transactions found in PrepareCommit/PrepareAbort
when a partition is loaded are completed the same way; the timers retry those whose markers could not all be
written. The group coordinator applies the transactional offsets where a marker lands in a ``__consumer_offsets``
partition (:func:`append_marker`), i.e. on the broker that coordinates the group.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import dataclass, field
from enum import IntEnum

from kafkapy.internal_topics import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC, iter_batches, partition_for
from kafkapy.partition import AppendOrigin, NotLeaderError
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
        # a cluster: the __transaction_state partitions this broker leads, hence the transactional ids it
        # coordinates; None: a single broker, which coordinates every transactional id
        self.owned: set[int] | None = set() if broker.cluster is not None else None
        self._completing: dict[str, asyncio.Task] = {}       # a cluster: markers being written in the background
        self._marker_conns: dict[int, tuple] = {}            # node id -> (LeaderConnection, asyncio.Lock)
        self.key_mod = protocol.data_module("TransactionLogKey")
        self.value_mod = protocol.data_module("TransactionLogValue")

    # ------------------------------------------------------------------ lifecycle

    @property
    def num_partitions(self) -> int:
        t = self.broker.topics.get(TRANSACTION_STATE_TOPIC)
        return t.partitions if t is not None else self.broker.config.get_int("transaction.state.log.num.partitions")

    def state_partition(self, tid: str) -> int:
        return partition_for(tid, self.num_partitions)

    def coordinator_epoch(self, tid: str | None = None) -> int:
        """Kafka's coordinator epoch: the leader epoch of the transactional id's ``__transaction_state`` partition."""
        partition = self.broker.partition(TRANSACTION_STATE_TOPIC, 0 if tid is None else self.state_partition(tid))
        return partition.leader_epoch if partition is not None else 0

    def load(self) -> None:
        """Producer ids (their block file in the data dir), then every transactional id in __transaction_state."""
        cluster = self.broker.cluster
        self.ids = ProducerIdManager(None if self.broker.memory else self.broker.config.data_dir,
                                     cluster.store if cluster is not None else None)
        topic = self.broker.topics.get(TRANSACTION_STATE_TOPIC)
        if topic is None or self.owned is not None:     # a cluster loads a partition when it leads it
            return
        for p in range(topic.partitions):
            self._load_partition(p)
        n_open = sum(1 for m in self.txns.values() if m.state in (TxnState.ONGOING, TxnState.PREPARE_COMMIT,
                                                                    TxnState.PREPARE_ABORT))
        if self.txns:
            log.info("loaded %d transactional id(s) from %s (%d in a transaction)", len(self.txns),
                     TRANSACTION_STATE_TOPIC, n_open)

    def _load_partition(self, p: int) -> None:
        plog = self.broker.partition_log(TRANSACTION_STATE_TOPIC, p)
        if plog is None:
            return
        start = plog.log_start_offset
        for rec in (r for b in iter_batches(plog) for r in b.records if r.offset >= start):
            try:
                self._load_record(rec)
            except Exception as e:  # noqa: BLE001 - one bad record must not stop the broker
                log.warning("__transaction_state-%d: skipping unreadable record at offset %s: %s", p,
                            rec.offset, e)

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
        for t in self._completing.values():
            t.cancel()
        self._completing.clear()
        for conn, _lock in self._marker_conns.values():
            conn.close()
        self._marker_conns.clear()

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

    def _topic_configs(self, replication_factor: int) -> dict[str, str]:
        # Kafka's TransactionLog configs; min.insync.replicas is transaction.state.log.min.isr (Kafka's default 2,
        # at most the replication factor; a single broker: 1)
        seg = str(config_int(self.broker, "transaction.state.log.segment.bytes"))
        return {"cleanup.policy": "compact", "compression.type": "uncompressed", "segment.bytes": seg,
                "unclean.leader.election.enable": "false", "min.insync.replicas": str(min(2, replication_factor))}

    def _state_topic(self):
        """__transaction_state; a single broker creates it on first use, a cluster through FindCoordinator only."""
        t = self.broker.topics.get(TRANSACTION_STATE_TOPIC)
        if t is None:
            if self.broker.cluster is not None:
                raise CoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE, f"{TRANSACTION_STATE_TOPIC} does not exist")
            n = self.broker.config.get_int("transaction.state.log.num.partitions")
            t = self.broker.create_topic(TRANSACTION_STATE_TOPIC, n, 1, self._topic_configs(1), internal=True)
        return t

    async def ensure_topic(self) -> None:
        """FindCoordinator(TRANSACTION): create __transaction_state when it does not exist yet, as Kafka, with
        transaction.state.log.replication.factor replicas in a cluster. Raises CoordinatorError
        (COORDINATOR_NOT_AVAILABLE) when it cannot be created."""
        if TRANSACTION_STATE_TOPIC in self.broker.topics:
            return
        from kafkapy.broker import TopicError
        rf = config_int(self.broker, "transaction.state.log.replication.factor") if self.broker.cluster is not None \
            else 1
        try:
            await self.broker.create_topic_in_cluster(
                TRANSACTION_STATE_TOPIC, self.broker.config.get_int("transaction.state.log.num.partitions"), rf,
                self._topic_configs(rf), internal=True)
        except TopicError as e:
            if e.code != ErrorCode.TOPIC_ALREADY_EXISTS:
                raise CoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE, str(e)) from None

    # ------------------------------------------------------------------ which transactional ids this broker coordinates

    def coordinator_error(self, tid: str | None) -> ErrorCode | None:
        """NOT_COORDINATOR when this broker does not lead the transactional id's __transaction_state partition (a
        cluster), as Kafka's TransactionCoordinator answers; None when it coordinates the id."""
        if self.owned is None or not tid:
            return None
        if TRANSACTION_STATE_TOPIC not in self.broker.topics or self.state_partition(tid) not in self.owned:
            return ErrorCode.NOT_COORDINATOR
        return None

    def coordinates(self, tid: str | None) -> bool:
        return self.coordinator_error(tid) is None

    async def wait_replicated(self, tid: str, timeout: float) -> ErrorCode | None:
        """After a state write: until everything in the id's __transaction_state partition is replicated to its ISR
        (Kafka appends transaction state with acks=all). A single broker: at once. Otherwise the error to answer
        (NOT_COORDINATOR when the partition moved away, COORDINATOR_NOT_AVAILABLE when it is not replicated in
        time)."""
        if self.owned is None:
            return None
        partition = self.broker.partition(TRANSACTION_STATE_TOPIC, self.state_partition(tid)) \
            if TRANSACTION_STATE_TOPIC in self.broker.topics else None
        if partition is None:
            return ErrorCode.NOT_COORDINATOR
        code = await partition.wait_for_high_watermark(partition.log.log_end_offset, timeout)
        if code == ErrorCode.NOT_LEADER_OR_FOLLOWER:
            return ErrorCode.NOT_COORDINATOR
        if code != ErrorCode.NONE:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        return None

    def partition_leadership(self, partition: int, leader: bool) -> None:
        """A cluster: this broker became (or stopped being) the leader of ``__transaction_state-<partition>``: load
        its transactional ids and finish the transactions it finds decided (Kafka's onElection), or drop them
        (onResignation)."""
        if self.owned is None:
            self.owned = set()
        if leader and partition not in self.owned:
            self.owned.add(partition)
            self._load_partition(partition)
            mine = [m for m in self.txns.values() if self.state_partition(m.transactional_id) == partition]
            log.info("coordinating the transactional ids of %s-%d (%d loaded)", TRANSACTION_STATE_TOPIC, partition,
                     len(mine))
            for m in mine:
                if m.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
                    self._complete(m, m.state == TxnState.PREPARE_COMMIT)
        elif not leader and partition in self.owned:
            self.owned.discard(partition)
            for tid in [t for t in self.txns if self.state_partition(t) == partition]:
                m = self.txns.pop(tid)
                if self.by_producer.get(m.producer_id) == tid:
                    del self.by_producer[m.producer_id]
                task = self._completing.pop(tid, None)
                if task is not None:
                    task.cancel()
            log.info("no longer coordinating the transactional ids of %s-%d", TRANSACTION_STATE_TOPIC, partition)

    # ------------------------------------------------------------------ persistence

    def _write(self, m: TxnMetadata) -> None:
        """Persist ``m`` (its state after the transition) to __transaction_state; raises CoordinatorError."""
        t = self._state_topic()
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
        if partition is None:
            raise CoordinatorError(ErrorCode.NOT_COORDINATOR, f"no {TRANSACTION_STATE_TOPIC} replica here")
        try:
            partition.append(batch, AppendOrigin.COORDINATOR, required_acks=-1)
        except NotLeaderError as e:
            raise CoordinatorError(ErrorCode.NOT_COORDINATOR, str(e)) from e
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

    def verifier_for(self, tid: str | None):
        """The produce path's transaction verification for a Produce request with transactional id ``tid``: this
        coordinator's :meth:`partition_in_transaction` when it coordinates ``tid``; None (no verification, as Kafka
        before KIP-890) when the coordinator is another broker of the cluster, whose state this broker cannot see
        without the AddPartitionsToTxn verify_only round trip kafkapy does not make."""
        return self.partition_in_transaction if self.coordinates(tid) else None

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
        """Write the markers to every partition of the transaction, then CompleteCommit/CompleteAbort: at once on a
        single broker; in the background in a cluster (:meth:`_complete_in_cluster`, one task per id)."""
        if self.owned is None:
            self._complete_locally(m, commit)
            return
        tid = m.transactional_id
        running = self._completing.get(tid)
        if running is not None and not running.done():
            return
        self._completing[tid] = asyncio.get_running_loop().create_task(
            self._complete_in_cluster(m, commit), name=f"kafkapy-txn-markers-{tid}")

    def _complete_locally(self, m: TxnMetadata, commit: bool) -> None:
        coordinator_epoch = self.coordinator_epoch(m.transactional_id)
        for topic, p in sorted(m.partitions):
            partition = self.broker.partition(topic, p)
            if partition is None:
                continue    # deleted meanwhile: Kafka drops markers for partitions that are gone
            append_marker(self.broker, partition, m.producer_id, m.producer_epoch, commit, coordinator_epoch)
        self._transition(m, state=TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT,
                         partitions=set(), last_update_ms=_now())

    async def _complete_in_cluster(self, m: TxnMetadata, commit: bool) -> None:
        tid = m.transactional_id
        prepare = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        pid, epoch = m.producer_id, m.producer_epoch

        def still_ours() -> bool:
            return (self.txns.get(tid) is m and m.state == prepare and m.producer_epoch == epoch
                    and self.coordinates(tid))
        try:
            # the decision is replicated before any marker carries it: a new coordinator finds it and finishes
            if await self.wait_replicated(tid, MARKER_ATTEMPT_TIME) is not None:
                return          # the timers (or the next leader) try again
            cepoch = self.coordinator_epoch(tid)
            pending = set(m.partitions)
            backoff = MARKER_BACKOFF
            deadline = time.monotonic() + MARKER_ATTEMPT_TIME
            while pending:
                if not still_ours():
                    return
                pending, fenced = await self._send_markers(pending, pid, epoch, commit, cepoch)
                if fenced:
                    log.warning("transaction of %s: markers fenced by a newer coordinator epoch than %d; leaving it",
                                tid, cepoch)
                    return
                if not pending:
                    break
                if time.monotonic() > deadline:
                    log.warning("transaction of %s: markers still missing on %s; retrying later", tid, sorted(pending))
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MARKER_MAX_BACKOFF)
            if not still_ours():
                return
            self._transition(m, state=TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT,
                             partitions=set(), last_update_ms=_now())
            await self.wait_replicated(tid, MARKER_ATTEMPT_TIME)
        except CoordinatorError as e:
            log.warning("transaction of %s: cannot complete it here: %s", tid, e)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the timers retry
            log.exception("transaction of %s: writing its markers failed", tid)
        finally:
            if self._completing.get(tid) is asyncio.current_task():
                del self._completing[tid]

    async def _send_markers(self, partitions: set, pid: int, epoch: int, commit: bool,
                            coordinator_epoch: int) -> tuple[set, bool]:
        """One round: a marker to each partition's current leader. (partitions still without one, fenced)."""
        image = self.broker.cluster.image
        by_leader: dict[int, list] = {}
        left: set = set()
        for tp in partitions:
            info = image.topics.get(tp[0])
            if info is None or tp[1] >= len(info.assignment):
                continue        # deleted meanwhile: Kafka drops markers for partitions that are gone
            s = image.states.get(tp)
            if s is None or s.leader < 0:
                left.add(tp)    # offline: wait for a leader
                continue
            by_leader.setdefault(s.leader, []).append(tp)
        results = await asyncio.gather(*(self._markers_to(node, tps, pid, epoch, commit, coordinator_epoch)
                                         for node, tps in by_leader.items()))
        fenced = False
        for errors in results:
            for tp, code in errors.items():
                if code == ErrorCode.NONE:
                    continue
                if code == ErrorCode.TRANSACTION_COORDINATOR_FENCED:
                    fenced = True
                elif code == ErrorCode.INVALID_PRODUCER_EPOCH:
                    # the partition has seen a newer epoch of this producer: this marker can no longer matter
                    log.warning("%s-%d: marker of producer %d epoch %d refused (newer epoch there)", tp[0], tp[1],
                                pid, epoch)
                elif code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and tp[0] not in image.topics:
                    continue
                else:
                    left.add(tp)
        return left, fenced

    async def _markers_to(self, node: int, tps: list, pid: int, epoch: int, commit: bool,
                          coordinator_epoch: int) -> dict:
        """Markers for ``tps`` on broker ``node``: {(topic, partition): error code}."""
        if node == self.broker.node_id:
            out = {}
            waits = []
            for tp in tps:
                partition = self.broker.partition(*tp)
                if partition is None:
                    out[tp] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    continue
                try:
                    info = append_marker(self.broker, partition, pid, epoch, commit, coordinator_epoch,
                                         required_acks=-1)
                except StorageError as e:
                    out[tp] = ErrorCode(getattr(e, "error_code", ErrorCode.UNKNOWN_SERVER_ERROR))
                    continue
                waits.append((tp, partition, info.last_offset + 1))
            codes = await asyncio.gather(*(p.wait_for_high_watermark(o, MARKER_ATTEMPT_TIME) for _, p, o in waits))
            out.update({tp: ErrorCode(c) for (tp, _, _), c in zip(waits, codes)})
            return out
        from kafkapy.cluster.replica import LeaderConnection
        from wire.messages import write_txn_markers_request as WQ
        info = self.broker.cluster.image.brokers.get(node)
        if info is None:
            return {tp: ErrorCode.NOT_LEADER_OR_FOLLOWER for tp in tps}
        conn, lock = self._marker_conns.get(node, (None, None))
        if conn is None or (conn.host, conn.port) != (info.host, info.port):
            if conn is not None:
                conn.close()
            conn, lock = LeaderConnection(info.host, info.port, f"broker-{self.broker.node_id}-txn-markers",
                                          timeout=MARKER_ATTEMPT_TIME, owner=self.broker, node=node), asyncio.Lock()
            self._marker_conns[node] = (conn, lock)
        by_topic: dict[str, list[int]] = {}
        for t, p in sorted(tps):
            by_topic.setdefault(t, []).append(p)
        req = WQ.WriteTxnMarkersRequest(markers=[WQ.WritableTxnMarker(
            producer_id=pid, producer_epoch=epoch, transaction_result=commit, coordinator_epoch=coordinator_epoch,
            topics=[WQ.WritableTxnMarkerTopic(name=t, partition_indexes=ps) for t, ps in by_topic.items()])])
        try:
            async with lock:
                resp = await conn.request(WRITE_TXN_MARKERS, WRITE_TXN_MARKERS_VERSION, req)
        except asyncio.CancelledError:
            conn.close()
            raise
        except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            log.info("WriteTxnMarkers to broker %d failed (%s)", node, e.__class__.__name__)
            conn.close()
            return {tp: ErrorCode.NETWORK_EXCEPTION for tp in tps}
        out = {tp: ErrorCode.UNKNOWN_SERVER_ERROR for tp in tps}
        for r in resp.markers:
            for t in r.topics:
                for pr in t.partitions:
                    if (t.name, pr.partition_index) in out:
                        code = pr.error_code
                        out[(t.name, pr.partition_index)] = ErrorCode(code) if code in ErrorCode._value2member_map_ \
                            else ErrorCode.UNKNOWN_SERVER_ERROR
        return out

    # ------------------------------------------------------------------ timers

    def abort_timed_out(self) -> int:
        now = _now()
        n = 0
        for m in list(self.txns.values()):
            if m.state == TxnState.ONGOING and m.start_ms >= 0 and now - m.start_ms > m.timeout_ms:
                log.info("aborting transaction of %s (producer %d epoch %d): open for more than %d ms",
                         m.transactional_id, m.producer_id, m.producer_epoch, m.timeout_ms)
                new_epoch = m.producer_epoch if epoch_exhausted(m.producer_epoch) else m.producer_epoch + 1
                try:
                    self._transition(m, producer_epoch=new_epoch, last_producer_epoch=NO_PRODUCER_EPOCH,
                                     state=TxnState.PREPARE_ABORT, last_update_ms=now)
                except CoordinatorError as e:
                    log.warning("could not abort the transaction of %s: %s", m.transactional_id, e)
                    continue
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
                try:
                    self._append(t, m.transactional_id, key, None)
                except CoordinatorError as e:
                    log.warning("could not expire transactional id %s: %s", m.transactional_id, e)
                    continue
            del self.txns[m.transactional_id]
            if self.by_producer.get(m.producer_id) == m.transactional_id:
                del self.by_producer[m.producer_id]
        return len(gone)


def _now() -> int:
    return int(time.time() * 1000)


WRITE_TXN_MARKERS = 27
WRITE_TXN_MARKERS_VERSION = 1
MARKER_BACKOFF = 0.05           # s, doubled up to MARKER_MAX_BACKOFF between rounds of markers
MARKER_MAX_BACKOFF = 1.0
MARKER_ATTEMPT_TIME = 10.0      # s one completion keeps retrying before it leaves it to the timers


def append_marker(broker, partition, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int,
                  required_acks: int = 1):
    """Append a commit/abort marker to ``partition`` (led by this broker) through its one append path, then, for a
    ``__consumer_offsets`` partition, let the group coordinator apply or drop the producer's transactional offsets
    (Kafka's onTransactionCompleted, called where the marker is written: the broker that coordinates the group).
    Raises the append's StorageError."""
    marker = build_control_batch(commit, producer_id, producer_epoch, coordinator_epoch)
    info = partition.append(bytearray(marker), AppendOrigin.COORDINATOR, required_acks=required_acks)
    if partition.topic == OFFSETS_TOPIC:
        try:
            broker.groups.on_transaction_completed(producer_id, commit, {(OFFSETS_TOPIC, partition.index)})
        except Exception:  # noqa: BLE001
            log.exception("applying the transactional offset commits of producer %d failed", producer_id)
    return info


