"""The one append path (storage/log.py PartitionLog.append, driven through kafkapy/partition.py Partition.append):
producer state checked and updated inside the append for every origin, producer-state snapshots and transaction
indexes on disk (Kafka's formats), truncation, replication appends, the high watermark rule."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest
from crc32c import crc32c

from kafkapy import handlers as handler_registry
from kafkapy.broker import Broker
from kafkapy.config import BrokerConfig
from kafkapy.groups.group import OffsetAndMetadata
from kafkapy.internal_topics import OFFSETS_TOPIC
from kafkapy.partition import AppendOrigin, Partition
from storage import LogConfig, LogManager, MemoryPartitionLog, PartitionLog
from storage.errors import (
    InvalidProducerEpochError,
    OutOfOrderSequenceError,
    TransactionCoordinatorFencedError,
    UnexpectedAppendOffsetError,
)
from wire.records import build_batch, build_control_batch, read_batch_header

PID = 4000


def batch(seq: int, n: int = 1, pid: int = PID, epoch: int = 0, transactional: bool = False, key=None) -> bytearray:
    return bytearray(build_batch([(key, b"v%d" % (seq + i)) for i in range(n)], producer_id=pid, producer_epoch=epoch,
                                 base_sequence=seq, transactional=transactional))


def marker(pid: int, commit: bool, coordinator_epoch: int = 0, epoch: int = 0) -> bytearray:
    return bytearray(build_control_batch(commit, pid, epoch, coordinator_epoch))


def open_log(d, **cfg) -> PartitionLog:
    return PartitionLog.open(str(d), LogConfig(**cfg) if cfg else None, fsync=False)


def leader(plog, epoch: int = 0) -> Partition:
    return Partition(plog.topic, plog.partition, plog, epoch, node_id=1)


def snapshot_files(d) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.endswith(".snapshot"))


# ------------------------------------------------------------------------------------------------- high watermark

def test_the_log_does_not_move_the_high_watermark_the_partition_does():
    plog = MemoryPartitionLog(topic="t", partition=0)
    plog.append(batch(0, 3), leader_epoch=0)
    assert plog.log_end_offset == 3 and plog.high_watermark == 0
    p = leader(plog)                      # one replica: the whole ISR, so HW = its log end offset
    assert plog.high_watermark == 3
    p.append(batch(3, 2), AppendOrigin.CLIENT)
    assert plog.high_watermark == 5
    dup = p.append(batch(3, 2), AppendOrigin.CLIENT)
    assert dup.duplicate and (dup.base_offset, dup.last_offset) == (3, 4) and plog.log_end_offset == 5


def test_leader_epoch_is_stamped_per_partition():
    a, b = MemoryPartitionLog(topic="t", partition=0), MemoryPartitionLog(topic="t", partition=1)
    leader(a, epoch=3).append(batch(0), AppendOrigin.CLIENT)
    leader(b, epoch=7).append(batch(0), AppendOrigin.CLIENT)
    assert read_batch_header(bytes(a.read(0, 1 << 20)), 0).partition_leader_epoch == 3
    assert read_batch_header(bytes(b.read(0, 1 << 20)), 0).partition_leader_epoch == 7
    assert (a.latest_epoch, b.latest_epoch) == (3, 7)


# ------------------------------------------------------------------------------------------------- origins

def test_coordinator_appends_go_through_producer_state():
    """A transactional batch written by a coordinator (TxnOffsetCommit into __consumer_offsets) opens a transaction
    that holds back the last stable offset until its marker, exactly as a producer's would."""
    plog = MemoryPartitionLog(topic=OFFSETS_TOPIC, partition=0)
    p = leader(plog)
    p.append(bytearray(build_batch([(b"k", b"v")])), AppendOrigin.COORDINATOR)                 # offset 0
    p.append(bytearray(build_batch([(b"k", b"offset")], producer_id=9, producer_epoch=2, transactional=True)),
             AppendOrigin.COORDINATOR)                                                       # offset 1
    assert plog.producer_state.ongoing == {9: 1}
    assert plog.last_stable_offset() == 1
    with pytest.raises(InvalidProducerEpochError):      # an older epoch is fenced for coordinator appends too
        p.append(bytearray(build_batch([(b"k", b"x")], producer_id=9, producer_epoch=1, transactional=True)),
                 AppendOrigin.COORDINATOR)
    p.append(marker(9, commit=True, epoch=2, coordinator_epoch=4), AppendOrigin.COORDINATOR)   # offset 2
    assert plog.last_stable_offset() == 3 and plog.producer_state.ongoing == {}
    with pytest.raises(TransactionCoordinatorFencedError):   # a marker from an older coordinator epoch
        p.append(marker(9, commit=False, epoch=2, coordinator_epoch=3), AppendOrigin.COORDINATOR)
    assert plog.log_end_offset == 3


def test_client_may_not_write_markers_but_coordinator_may():
    from storage.errors import InvalidRecordError
    p = leader(MemoryPartitionLog(topic="t", partition=0))
    with pytest.raises(InvalidRecordError):
        p.append(marker(1, commit=True), AppendOrigin.CLIENT)
    assert p.append(marker(1, commit=True), AppendOrigin.COORDINATOR).base_offset == 0


def test_replication_keeps_offsets_and_epochs_and_builds_producer_state():
    lead = MemoryPartitionLog(topic="t", partition=0)
    lp = leader(lead, epoch=5)
    lp.append(batch(0, 2), AppendOrigin.CLIENT)
    lp.append(batch(0, pid=77, transactional=True), AppendOrigin.CLIENT, txn_verifier=lambda *a: True)
    lp.append(marker(77, commit=False), AppendOrigin.COORDINATOR)
    lp.append(batch(2, 3), AppendOrigin.CLIENT)
    data = bytes(lead.read(0, 1 << 20))

    follower = MemoryPartitionLog(topic="t", partition=0)
    info = follower.append(bytearray(data), leader_epoch=-1, origin=AppendOrigin.REPLICATION)
    assert (info.base_offset, info.last_offset) == (0, 6)
    assert bytes(follower.read(0, 1 << 20)) == data            # byte for byte: offsets and epochs as the leader's
    assert follower.latest_epoch == 5
    assert follower.aborted_transactions(0, 10) == [(77, 2)]
    # the follower, made leader, still recognises a retried batch of the producer
    fp = leader(follower, epoch=6)
    dup = fp.append(batch(2, 3), AppendOrigin.CLIENT)
    assert dup.duplicate and dup.base_offset == 4
    with pytest.raises(UnexpectedAppendOffsetError):           # going backwards is refused
        follower.append(bytearray(data), leader_epoch=-1, origin=AppendOrigin.REPLICATION)


# ------------------------------------------------------------------------------------------------- snapshots

def _snapshot_entries(path) -> list[tuple]:
    data = open(path, "rb").read()
    version, crc = struct.unpack_from(">hI", data, 0)
    assert version == 1 and crc32c(data[6:]) == crc
    (n,) = struct.unpack_from(">i", data, 6)
    return [struct.unpack_from(">qhiqiqiq", data, 10 + 46 * i) for i in range(n)]


def test_snapshot_at_roll_and_clean_close_in_kafkas_format(tmp_path):
    d = tmp_path / "t-0"
    plog = open_log(d, segment_bytes=300)
    p = leader(plog)
    for seq in range(0, 12, 2):
        p.append(batch(seq, 2), AppendOrigin.CLIENT)
    assert len(plog.segments) > 1
    rolled = snapshot_files(d)
    assert rolled and all(int(n[:20]) in [s.base_offset for s in plog.segments] for n in rolled)
    plog.close()
    names = snapshot_files(d)
    assert names[-1] == "%020d.snapshot" % 12
    (entry,) = _snapshot_entries(d / names[-1])
    # producer id, epoch, last sequence, last offset, offset delta, timestamp, coordinator epoch, txn first offset
    assert entry[:5] == (PID, 0, 11, 11, 1) and entry[6:] == (-1, -1)


def test_clean_restarts_do_not_pile_up_snapshots(tmp_path):
    d = tmp_path / "t-0"
    for seq in range(0, 12, 3):      # four clean restarts, each appending and closing (a snapshot at the end)
        plog = open_log(d)
        leader(plog).append(batch(seq, 3), AppendOrigin.CLIENT)
        plog.close()
    # as Kafka: the stray snapshots of earlier closes are removed when producer state loads; the previous close's
    # (the latest when it loaded) and this close's remain
    assert snapshot_files(d) == ["%020d.snapshot" % 9, "%020d.snapshot" % 12]


def test_restart_loads_the_snapshot_and_replays_only_what_follows(tmp_path, monkeypatch):
    d = tmp_path / "t-0"
    plog = open_log(d)
    p = leader(plog)
    for seq in range(0, 40, 4):
        p.append(batch(seq, 4), AppendOrigin.CLIENT)
    plog.close()

    plog = open_log(d)
    replayed = []
    real = PartitionLog.batches

    def counting(self, start=None):
        for h in real(self, start):
            replayed.append(h.base_offset)
            yield h
    monkeypatch.setattr(PartitionLog, "batches", counting)
    p = leader(plog)
    assert p.append(batch(36, 4), AppendOrigin.CLIENT).duplicate        # the last batch is known without a scan
    assert replayed == []
    assert p.append(batch(40, 1), AppendOrigin.CLIENT).base_offset == 40
    with pytest.raises(OutOfOrderSequenceError):
        p.append(batch(50, 1), AppendOrigin.CLIENT)
    plog.close()


def test_unclean_restart_replays_from_the_last_snapshot_below_the_end(tmp_path):
    d = tmp_path / "t-0"
    plog = open_log(d, segment_bytes=250)
    p = leader(plog)
    for seq in range(10):
        p.append(batch(seq), AppendOrigin.CLIENT)
    p.append(batch(0, pid=8, transactional=True), AppendOrigin.CLIENT, txn_verifier=lambda *a: True)
    leo = plog.log_end_offset
    for seg in plog.segments:       # a kill -9: no close, no final snapshot
        seg.store.flush()
    plog2 = open_log(d, segment_bytes=250)
    assert all(int(n[:20]) < leo for n in snapshot_files(d))
    p2 = leader(plog2)
    assert p2.append(batch(9), AppendOrigin.CLIENT).duplicate
    assert plog2.producer_state.ongoing == {8: 10}
    assert plog2.last_stable_offset() == 10


def test_corrupt_snapshot_is_ignored_and_the_log_replayed(tmp_path):
    d = tmp_path / "t-0"
    plog = open_log(d)
    p = leader(plog)
    p.append(batch(0, 3), AppendOrigin.CLIENT)
    plog.close()
    (name,) = snapshot_files(d)
    raw = bytearray(open(d / name, "rb").read())
    raw[-1] ^= 0xFF
    open(d / name, "wb").write(raw)
    plog = open_log(d)
    assert leader(plog).append(batch(0, 3), AppendOrigin.CLIENT).duplicate
    plog.close()


def test_aborted_transactions_survive_restart_through_txnindex(tmp_path):
    d = tmp_path / "t-0"
    plog = open_log(d, segment_bytes=300)
    p = leader(plog)
    yes = lambda *a: True  # noqa: E731
    p.append(batch(0, pid=1, transactional=True), AppendOrigin.CLIENT, txn_verifier=yes)   # 0
    p.append(batch(0, pid=2, transactional=True), AppendOrigin.CLIENT, txn_verifier=yes)   # 1
    p.append(marker(2, commit=False), AppendOrigin.COORDINATOR)                              # 2
    p.append(marker(1, commit=False), AppendOrigin.COORDINATOR)                              # 3
    for seq in range(6):
        p.append(batch(seq), AppendOrigin.CLIENT)                                            # 4..9
    before = plog.aborted_transactions(0, 10)
    assert sorted(before) == [(1, 0), (2, 1)]
    assert any(n.endswith(".txnindex") for n in os.listdir(d))
    plog.close()
    plog = open_log(d, segment_bytes=300)
    leader(plog)
    assert sorted(plog.aborted_transactions(0, 10)) == sorted(before)
    assert plog.producer_state.map_end_offset == 10
    plog.close()


def test_truncation_drops_producer_state_past_the_cut(tmp_path):
    d = tmp_path / "t-0"
    plog = open_log(d, segment_bytes=250)
    p = leader(plog)
    for seq in range(8):
        p.append(batch(seq), AppendOrigin.CLIENT)
    p.append(batch(0, pid=8, transactional=True), AppendOrigin.CLIENT, txn_verifier=lambda *a: True)   # 8
    p.append(marker(8, commit=False), AppendOrigin.COORDINATOR)                                        # 9
    assert plog.aborted_transactions(0, 10) == [(8, 8)]
    plog.truncate_to(5)
    assert all(int(n[:20]) <= 5 for n in snapshot_files(d))
    assert plog.aborted_transactions(0, 10) == []
    # sequence 5 is the next one again: the batches at 5-7 are gone
    assert p.append(batch(5), AppendOrigin.CLIENT).base_offset == 5
    plog.close()


def test_log_manager_restart_keeps_producer_state(tmp_path):
    m = LogManager(str(tmp_path), fsync=False)
    plog = m.create("t", 0, LogConfig())
    leader(plog).append(batch(0, 5), AppendOrigin.CLIENT)
    m.close()
    m = LogManager(str(tmp_path), fsync=False)
    plog = m.get("t", 0)
    assert leader(plog).append(batch(0, 5), AppendOrigin.CLIENT).duplicate
    m.close()


# ------------------------------------------------------------------------------------------------- the broker

def test_txn_offset_commit_holds_back_the_offsets_partition_until_the_marker():
    async def main():
        b = Broker(BrokerConfig(host="127.0.0.1", port=0, storage="memory"))
        await b.start()
        try:
            b.create_topic("in", 1)
            coord = b.transactions
            _, pid, epoch = coord.init_producer_id("tx", 60000, -1, -1)
            group_partition = coord.group_partition("g")
            assert coord.add_partitions("tx", pid, epoch, {group_partition}) == 0
            b.groups.txn_offset_commit("g", pid, epoch, {("in", 0): OffsetAndMetadata(42, -1, "", 0)})
            plog = b.partition_log(*group_partition)
            assert pid in plog.producer_state.ongoing
            assert plog.last_stable_offset() < plog.log_end_offset
            assert coord.end_transaction("tx", pid, epoch, True) == 0
            assert plog.producer_state.ongoing == {}
            assert plog.last_stable_offset() == plog.log_end_offset
            assert b.groups.groups["g"].offsets[("in", 0)].offset == 42
        finally:
            await b.stop()
    asyncio.run(main())


def test_a_handler_module_that_fails_to_import_stops_the_broker(monkeypatch):
    monkeypatch.setattr(handler_registry, "MODULES", handler_registry.MODULES + ["no_such_handlers"])
    with pytest.raises(handler_registry.HandlerImportError, match="no_such_handlers"):
        Broker(BrokerConfig(host="127.0.0.1", port=0, storage="memory"))


def test_truncation_at_the_end_forgets_an_epoch_without_data():
    """A follower that led for a moment (its epoch assigned at the log end, nothing appended) and is told by the new
    leader that its epoch diverges at the log end: the empty epoch goes, so the next fetch does not diverge again."""
    plog = MemoryPartitionLog(topic="t", partition=0)
    leader(plog).append(batch(0, 3), AppendOrigin.CLIENT)
    plog.epochs.assign(1, 3)                 # made leader at epoch 1, then follower before any append
    assert plog.latest_epoch == 1
    plog.truncate_to(3)
    assert plog.latest_epoch == 0 and plog.log_end_offset == 3


def test_high_watermark_checkpoint_survives_a_restart(tmp_path):
    """Kafka's replication-offset-checkpoint: a restarted log starts at the high watermark its partition had, not at
    its log end offset (a follower's unreplicated tail stays above it)."""
    m = LogManager(str(tmp_path), fsync=False)
    plog = m.create("t", 0, LogConfig())
    plog.append(batch(0, 5), leader_epoch=0)
    plog.update_high_watermark(3)
    m.close()
    m = LogManager(str(tmp_path), fsync=False)
    assert (m.get("t", 0).high_watermark, m.get("t", 0).log_end_offset) == (3, 5)
    m.close()
