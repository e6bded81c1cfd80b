"""Producer state (sequences, duplicates, epochs, transactions, snapshots) and the transaction coordinator.

Producer state is checked and updated inside the partition log's one append (storage/producer_state.py); these tests
drive it as the broker does, through kafkapy.partition.Partition.append."""

from __future__ import annotations

import asyncio

import pytest

from kafkapy.broker import Broker
from kafkapy.config import BrokerConfig
from kafkapy.producers.coordinator import TRANSACTION_STATE_TOPIC, TxnState
from kafkapy.producers.ids import BLOCK_SIZE, ProducerIdManager
from kafkapy.partition import AppendOrigin, Partition
from storage.errors import InvalidProducerEpochError, InvalidTxnStateError, OutOfOrderSequenceError
from storage.log import MemoryPartitionLog, PartitionLog
from wire.messages.error_codes import ErrorCode
from wire.records import build_batch, build_control_batch, decode_batches

PID = 1000


def batch(seq: int, n: int = 1, pid: int = PID, epoch: int = 0, transactional: bool = False) -> bytearray:
    return bytearray(build_batch([(None, b"v%d" % (seq + i)) for i in range(n)], producer_id=pid,
                                 producer_epoch=epoch, base_sequence=seq, transactional=transactional))


class PartitionUnderTest:
    """A partition (its log and leader state) with the producer state of its log, driven as the broker drives it."""

    def __init__(self, plog):
        self.log = plog
        self.partition = Partition(plog.topic, plog.partition, plog, leader_epoch=0, node_id=1)

    @property
    def producers(self):
        return self.log.producer_state.producers

    def last_stable_offset(self) -> int:
        return self.log.last_stable_offset()

    def aborted_transactions(self, fetch_offset: int, upper: int):
        return self.log.aborted_transactions(fetch_offset, upper)

    def write_marker(self, pid: int, epoch: int, commit: bool, coordinator_epoch: int, leader_epoch: int) -> int:
        """What the transaction coordinator does (WriteTxnMarkers, local)."""
        marker = bytearray(build_control_batch(commit, pid, epoch, coordinator_epoch))
        return self.partition.append(marker, AppendOrigin.COORDINATOR).base_offset

    def remove_expired(self, now_ms: int, expiration_ms: int) -> int:
        return self.log.remove_expired_producers(now_ms, expiration_ms)


def produce(state: PartitionUnderTest, records, verifier=None):
    """What the Produce handler does: one append; a retried batch answers with its original offsets."""
    info = state.partition.append(records, AppendOrigin.CLIENT, txn_verifier=verifier)
    return ("dup" if info.duplicate else "ok", info.base_offset)


@pytest.fixture
def state():
    return PartitionUnderTest(MemoryPartitionLog(topic="t", partition=0))


def test_in_order_sequences_are_appended(state):
    assert produce(state, batch(0, 3)) == ("ok", 0)
    assert produce(state, batch(3, 2)) == ("ok", 3)
    assert state.producers[PID].last_seq == 4
    assert state.log.log_end_offset == 5


def test_retried_batch_answers_original_offset_and_is_not_appended(state):
    produce(state, batch(0, 3))
    produce(state, batch(3, 2))
    produce(state, batch(5, 1))
    assert produce(state, batch(3, 2)) == ("dup", 3)
    assert produce(state, batch(0, 3)) == ("dup", 0)
    assert state.log.log_end_offset == 6


def test_only_the_last_five_batches_are_remembered(state):
    for i in range(6):
        produce(state, batch(i))
    assert produce(state, batch(1)) == ("dup", 1)
    with pytest.raises(OutOfOrderSequenceError):   # batch 0 fell out of the window: Kafka calls it out of order
        produce(state, batch(0))


def test_gap_in_sequence_is_out_of_order(state):
    produce(state, batch(0, 2))
    with pytest.raises(OutOfOrderSequenceError):
        produce(state, batch(3))
    assert state.log.log_end_offset == 2


def test_unknown_producer_may_start_at_any_sequence(state):
    assert produce(state, batch(42)) == ("ok", 0)     # Kafka 3.x: no UNKNOWN_PRODUCER_ID from Produce
    assert produce(state, batch(43)) == ("ok", 1)


def test_epochs(state):
    produce(state, batch(0, 2, epoch=1))
    with pytest.raises(InvalidProducerEpochError):
        produce(state, batch(2, epoch=0))
    with pytest.raises(OutOfOrderSequenceError):
        produce(state, batch(5, epoch=2))   # a new epoch starts at sequence 0
    assert produce(state, batch(0, epoch=2)) == ("ok", 2)
    assert state.producers[PID].producer_epoch == 2
    assert produce(state, batch(0, epoch=2)) == ("dup", 2)


def test_sequence_wraps_at_int32_max(state):
    top = (1 << 31) - 1
    produce(state, batch(top - 1, 2))
    assert produce(state, batch(0)) == ("ok", 2)


def test_transaction_holds_back_lso_and_abort_is_indexed(state):
    produce(state, batch(0, 2))                             # offsets 0-1, idempotent only
    verifier_calls = []

    def verifier(pid, epoch, topic, partition):
        verifier_calls.append((pid, epoch, topic, partition))
        return True

    produce(state, batch(0, 3, pid=7, transactional=True), verifier)    # offsets 2-4
    assert verifier_calls == [(7, 0, "t", 0)]
    assert state.last_stable_offset() == 2
    produce(state, batch(2, 1))                                          # offset 5
    assert state.last_stable_offset() == 2
    marker = state.write_marker(7, 0, False, 0, 0)                        # offset 6
    assert marker == 6
    assert state.last_stable_offset() == 7
    assert state.aborted_transactions(0, 7) == [(7, 2)]
    assert state.aborted_transactions(7, 10) == []
    # a committed transaction adds nothing to the index
    produce(state, batch(3, 1, pid=7, transactional=True), verifier)
    state.write_marker(7, 0, True, 0, 0)
    assert state.aborted_transactions(0, 100) == [(7, 2)]


def test_transactional_batch_needs_an_ongoing_transaction(state):
    with pytest.raises(InvalidTxnStateError):
        produce(state, batch(0, pid=7, transactional=True), lambda *a: False)
    produce(state, batch(0, pid=7, transactional=True), lambda *a: True)
    with pytest.raises(InvalidTxnStateError):                          # non-transactional write inside a txn
        produce(state, batch(1, pid=7))


def test_state_rebuilt_from_the_log_after_restart(tmp_path):
    d = str(tmp_path / "t-0")
    plog = PartitionLog.open(d, fsync=False)
    s = PartitionUnderTest(plog)
    produce(s, batch(0, 2))
    produce(s, batch(0, 1, pid=7, transactional=True), lambda *a: True)
    s.write_marker(7, 0, False, 3, 0)
    produce(s, batch(0, 1, pid=8, transactional=True), lambda *a: True)   # left open at offset 4
    plog.close()

    plog = PartitionLog.open(d, fsync=False)
    s2 = PartitionUnderTest(plog)     # producer state: the snapshot written at close, loaded on first use
    assert produce(s2, batch(0, 2)) == ("dup", 0)
    assert s2.producers[PID].last_seq == 1
    assert s2.producers[7].coordinator_epoch == 3
    assert s2.aborted_transactions(0, 10) == [(7, 2)]
    assert s2.last_stable_offset() == 4
    assert produce(s2, batch(2, 1)) == ("ok", 5)
    plog.close()


def test_expiry_keeps_open_transactions(state):
    produce(state, batch(0))
    produce(state, batch(0, pid=7, transactional=True), lambda *a: True)
    now = max(e.last_timestamp for e in state.producers.values())
    assert state.remove_expired(now + 10_000, 5_000) == 1
    assert list(state.producers) == [7]


def test_producer_ids_survive_restarts(tmp_path):
    a = ProducerIdManager(str(tmp_path))
    first = [a.generate() for _ in range(3)]
    assert first == [0, 1, 2]
    b = ProducerIdManager(str(tmp_path))       # restart (even after kill -9: the block was persisted first)
    assert b.generate() == BLOCK_SIZE
    b.observe(5000)
    assert b.generate() == 5001
    c = ProducerIdManager(str(tmp_path))
    assert c.generate() >= 5002


# ---------------------------------------------------------------- the coordinator inside a broker

def run_broker(fn, data_dir=None, **props):
    async def main():
        cfg = BrokerConfig(host="127.0.0.1", port=0, storage="disk" if data_dir else "memory",
                           data_dir=str(data_dir) if data_dir else None, properties=dict(props))
        b = Broker(cfg)
        await b.start()
        try:
            return await fn(b)
        finally:
            await b.stop()
    return asyncio.run(main())


def test_coordinator_fencing_commit_and_restart(tmp_path):
    async def first(b):
        coord = b.transactions
        b.create_topic("out", 2)
        code, pid, epoch = coord.init_producer_id("tx", 60000, -1, -1)
        assert (code, epoch) == (ErrorCode.NONE, 0)
        assert coord.add_partitions("tx", pid, epoch, {("out", 0), ("out", 1)}) == ErrorCode.NONE
        assert coord.txns["tx"].state == TxnState.ONGOING
        assert coord.end_transaction("tx", pid, epoch, True) == ErrorCode.NONE
        assert coord.txns["tx"].state == TxnState.COMPLETE_COMMIT
        # retrying the commit is fine, aborting it now is not
        assert coord.end_transaction("tx", pid, epoch, True) == ErrorCode.NONE
        assert coord.end_transaction("tx", pid, epoch, False) == ErrorCode.INVALID_TXN_STATE
        # a second producer with the same transactional id: new epoch, the old one is fenced
        code, pid2, epoch2 = coord.init_producer_id("tx", 60000, -1, -1)
        assert (code, pid2, epoch2) == (ErrorCode.NONE, pid, 1)
        assert coord.add_partitions("tx", pid, 0, {("out", 0)}) == ErrorCode.PRODUCER_FENCED
        # open a transaction, then fence it: the open transaction is aborted, the client must retry
        assert coord.add_partitions("tx", pid, 1, {("out", 0)}) == ErrorCode.NONE
        code, _, _ = coord.init_producer_id("tx", 60000, -1, -1)
        assert code == ErrorCode.CONCURRENT_TRANSACTIONS
        assert coord.txns["tx"].state == TxnState.COMPLETE_ABORT
        code, _, epoch3 = coord.init_producer_id("tx", 60000, -1, -1)
        assert (code, epoch3) == (ErrorCode.NONE, 3)
        # KIP-360: a retry of a bump that succeeded gets the same epoch back
        code, _, epoch4 = coord.init_producer_id("tx", 60000, pid, 3)
        assert (code, epoch4) == (ErrorCode.NONE, 4)
        code, _, epoch5 = coord.init_producer_id("tx", 60000, pid, 3)
        assert (code, epoch5) == (ErrorCode.NONE, 4)
        code, _, _ = coord.init_producer_id("tx", 60000, pid, 1)
        assert code == ErrorCode.PRODUCER_FENCED
        assert coord.add_partitions("tx", pid, 4, {("out", 1)}) == ErrorCode.NONE   # left open
        markers = []
        for p in (0, 1):
            data = b.partition_log("out", p).read(0, 1 << 20)
            markers += [bt for bt in decode_batches(bytes(data)) if bt.attributes & 0x20]
        assert len(markers) == 3    # commit on 0 and 1, abort on 0
        return pid

    pid = run_broker(first, tmp_path)

    async def second(b):
        coord = b.transactions
        m = coord.txns["tx"]
        assert (m.producer_id, m.producer_epoch, m.state, m.partitions) == (pid, 4, TxnState.ONGOING, {("out", 1)})
        assert b.topics[TRANSACTION_STATE_TOPIC].internal
        _, other, _ = coord.init_producer_id(None, 0, -1, -1)
        assert other > pid                          # ids are not handed out twice across restarts
        m.start_ms -= 120_000                       # the open transaction times out: aborted, epoch bumped
        assert coord.abort_timed_out() == 1
        assert (m.state, m.producer_epoch) == (TxnState.COMPLETE_ABORT, 5)

    run_broker(second, tmp_path)


def test_invalid_init_requests():
    async def go(b):
        coord = b.transactions
        assert coord.init_producer_id("tx", 0, -1, -1)[0] == ErrorCode.INVALID_TRANSACTION_TIMEOUT
        assert coord.init_producer_id("tx", 900001, -1, -1)[0] == ErrorCode.INVALID_TRANSACTION_TIMEOUT
        assert coord.init_producer_id("tx", 1000, 5, -1)[0] == ErrorCode.INVALID_REQUEST
        assert coord.init_producer_id("", 1000, -1, -1)[0] == ErrorCode.INVALID_REQUEST
        assert coord.end_transaction("nope", 1, 0, True) == ErrorCode.INVALID_PRODUCER_ID_MAPPING
        code, pid, epoch = coord.init_producer_id("tx", 1000, -1, -1)
        assert coord.end_transaction("tx", pid, epoch, True) == ErrorCode.INVALID_TXN_STATE
        assert coord.add_partitions("tx", pid + 1, epoch, {("x", 0)}) == ErrorCode.INVALID_PRODUCER_ID_MAPPING
    run_broker(go)


def test_aborted_index_with_interleaved_transactions(state):
    yes = lambda *a: True  # noqa: E731
    produce(state, batch(0, pid=1, transactional=True), yes)      # 0: txn of 1 starts
    produce(state, batch(0, pid=2, transactional=True), yes)      # 1: txn of 2 starts
    state.write_marker(2, 0, False, 0, 0)                           # 2: 2 aborts while 1 is open
    produce(state, batch(0, pid=3, transactional=True), yes)      # 3: txn of 3 starts
    state.write_marker(1, 0, False, 0, 0)                           # 4: 1 aborts
    state.write_marker(3, 0, True, 0, 0)                            # 5: 3 commits
    assert state.last_stable_offset() == 6
    assert state.aborted_transactions(0, 1) == [(1, 0)]
    assert sorted(state.aborted_transactions(0, 6)) == [(1, 0), (2, 1)]
    assert state.aborted_transactions(3, 6) == [(1, 0)]
    assert state.aborted_transactions(5, 6) == []
