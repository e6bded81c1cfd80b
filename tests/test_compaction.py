"""Log compaction (storage/cleaner.py): Kafka's log cleaner semantics, on the disk and the memory backend."""

from __future__ import annotations

import os

import pytest

from storage import InvalidRecordError, LogConfig, LogManager, MemoryPartitionLog, PartitionLog
from storage import cleaner as cleaner_mod
from storage.cleaner import first_dirty_offset, log_to_clean
from storage.producer_state import AppendOrigin
from storage.manager import CLEANER_OFFSET_FILE
from wire.records import (
    DELETE_HORIZON_FLAG,
    build_batch,
    build_control_batch,
    decode_batches,
    read_batch_header,
)

T0 = 1_700_000_000_000
DAY = 86_400_000


class Clock:
    def __init__(self, now: int = T0):
        self.now = now

    def __call__(self) -> int:
        return self.now


def compact_config(**kw) -> LogConfig:
    base = dict(cleanup_policy="compact", min_cleanable_dirty_ratio=0.0, delete_retention_ms=1000,
                segment_ms=1 << 50)
    base.update(kw)
    return LogConfig(**base)


@pytest.fixture(params=["disk", "memory"])
def make_log(request, tmp_path):
    made = []

    def make(config: LogConfig | None = None, clock: Clock | None = None):
        cfg = config or compact_config()
        clock = clock or Clock()
        if request.param == "memory":
            lg = MemoryPartitionLog(cfg, topic="t", partition=0, clock=clock)
        else:
            lg = PartitionLog.open(str(tmp_path / "t-0"), cfg, clock=clock, fsync=False)
        made.append(lg)
        return lg

    make.backend = request.param
    make.dir = str(tmp_path / "t-0")
    yield make
    for lg in made:
        if not lg.closed:
            lg.close()


def put(lg, pairs, ts=T0, **kw) -> int:
    recs = [(None, ts, k, v, []) for k, v in pairs]
    return lg.append(build_batch(recs, **kw), leader_epoch=0).base_offset


def marker(lg, commit: bool, pid: int, epoch: int = 0) -> int:
    return lg.append(build_control_batch(commit, pid, epoch, 0, timestamp=T0), leader_epoch=0,
                     origin=AppendOrigin.COORDINATOR).base_offset


def read_all(lg):
    """Every batch from the log start, decoded (empty batches included)."""
    out = []
    offset = lg.log_start_offset
    while offset < lg.log_end_offset:
        data = bytes(lg.read(offset, 1 << 20))
        if not data:
            break
        batches = decode_batches(data)
        out.extend(batches)
        offset = batches[-1].last_offset + 1
    return out


def records(lg):
    return [(r.offset, r.key, r.value) for b in read_all(lg) if not b.is_control for r in b.records]


# ---------------------------------------------------------------------------------------------------------- basics


def test_latest_value_per_key_offsets_and_order_kept(make_log):
    lg = make_log()
    put(lg, [(b"a", b"a0"), (b"b", b"b0"), (b"c", b"c0")])       # 0-2
    put(lg, [(b"a", b"a1"), (b"b", b"b1")])                      # 3-4
    lg.roll()
    put(lg, [(b"a", b"a2"), (b"d", b"d0")])                      # 5-6
    lg.roll()
    put(lg, [(b"b", b"b2")])                                     # 7, active segment: not cleaned
    before = records(lg)
    reclaimed = lg.compact()
    assert reclaimed > 0
    assert records(lg) == [(2, b"c", b"c0"), (4, b"b", b"b1"), (5, b"a", b"a2"), (6, b"d", b"d0"),
                           (7, b"b", b"b2")]
    # the active segment is untouched; the first dirty offset is the active segment's base
    assert lg.first_dirty_offset == 7
    assert lg.log_end_offset == 8 and lg.log_start_offset == 0
    # reads from an offset that was removed start at the next record kept
    data = decode_batches(bytes(lg.read(1, 1 << 20)))
    assert data[0].records[0].offset == 2
    assert len(before) == 8
    # two inactive segments were grouped into one
    assert [s.base_offset for s in lg.segments] == [0, 7]
    # appends continue at the log end
    assert put(lg, [(b"e", b"e0")]) == 8


def test_next_pass_dedupes_the_clean_part_and_resumes_from_checkpoint(make_log):
    lg = make_log()
    put(lg, [(b"a", b"1"), (b"b", b"1")])
    lg.roll()
    put(lg, [(b"x", b"1")])
    lg.compact()
    assert lg.first_dirty_offset == 2
    assert records(lg) == [(0, b"a", b"1"), (1, b"b", b"1"), (2, b"x", b"1")]
    lg.roll()
    put(lg, [(b"a", b"2")])
    lg.roll()
    lg.compact()
    assert records(lg) == [(1, b"b", b"1"), (2, b"x", b"1"), (3, b"a", b"2")]
    assert lg.first_dirty_offset == 4
    # nothing dirty: nothing to do
    assert lg.compact() == 0


def test_all_kept_batches_are_copied_byte_for_byte(make_log):
    lg = make_log()
    raw = build_batch([(None, T0, b"k%d" % i, b"v", []) for i in range(3)], compression=1)
    lg.append(raw, leader_epoch=0)
    lg.roll()
    put(lg, [(b"z", b"z")])
    stored_before = bytes(lg.read(0, 1 << 20))
    lg.compact(force=True)
    assert bytes(lg.read(0, 1 << 20)) == stored_before


def test_rebuilt_batch_keeps_base_offset_producer_fields_and_compression(make_log):
    lg = make_log()
    raw = build_batch([(None, T0 + i, b"k%d" % (i % 2), b"v%d" % i, [("h", b"x")]) for i in range(4)],
                      compression=1, producer_id=42, producer_epoch=3, base_sequence=10)
    lg.append(raw, leader_epoch=5)
    put(lg, [(b"other", b"1")], producer_id=42, producer_epoch=3, base_sequence=14)
    lg.roll()
    put(lg, [(b"z", b"z")])
    lg.compact()
    b = read_all(lg)[0]
    assert (b.base_offset, b.last_offset_delta, b.producer_id, b.producer_epoch, b.base_sequence) == (0, 3, 42, 3, 10)
    assert b.compression == 1 and b.partition_leader_epoch == 5
    assert [(r.offset, r.key, r.value, r.timestamp, r.headers) for r in b.records] == [
        (2, b"k0", b"v2", T0 + 2, [("h", b"x")]), (3, b"k1", b"v3", T0 + 3, [("h", b"x")])]
    assert not b.has_delete_horizon


def test_dirty_ratio_and_min_compaction_lag(make_log):
    clock = Clock()
    lg = make_log(compact_config(min_cleanable_dirty_ratio=0.5, min_compaction_lag_ms=10_000), clock)
    put(lg, [(b"a", b"1")], ts=T0)
    lg.roll()
    put(lg, [(b"a", b"2")], ts=T0)
    # within min.compaction.lag.ms of the record timestamps: uncleanable
    assert lg.compact() == 0
    clock.now = T0 + 20_000
    plan = log_to_clean(lg, clock.now)
    assert plan.first_uncleanable_offset == 1 and plan.cleanable_ratio == 1.0
    lg.compact()
    assert lg.first_dirty_offset == 1
    assert records(lg) == [(0, b"a", b"1"), (1, b"a", b"2")]   # nothing to drop yet: one dirty key
    # clean part now 1 segment; one more small dirty segment makes a ratio of 0.5: not above the minimum
    lg.roll()
    put(lg, [(b"a", b"3")], ts=T0)
    lg.roll()
    plan = log_to_clean(lg, clock.now)
    assert plan.clean_bytes * 2 == plan.cleanable_bytes    # one clean segment, two dirty ones: ratio 2/3
    lg.config.min_cleanable_dirty_ratio = 0.7
    assert lg.compact() == 0 and lg.first_dirty_offset == 1
    lg.config.min_cleanable_dirty_ratio = 0.6
    assert lg.compact() > 0
    assert records(lg) == [(2, b"a", b"3")]


def test_max_offset_upper_bound_is_not_cleaned(make_log):
    lg = make_log()
    put(lg, [(b"a", b"1")])
    lg.roll()
    put(lg, [(b"a", b"2")])
    lg.roll()
    put(lg, [(b"a", b"3")])
    lg.compact(upper_bound=1)       # the last stable offset is 1: only segment 0 is cleanable
    assert records(lg) == [(0, b"a", b"1"), (1, b"a", b"2"), (2, b"a", b"3")]
    assert lg.first_dirty_offset == 1
    lg.compact(upper_bound=3)
    assert records(lg) == [(1, b"a", b"2"), (2, b"a", b"3")]


# ---------------------------------------------------------------------------------------------------------- tombstones


def test_tombstones_kept_for_delete_retention_then_removed(make_log):
    clock = Clock()
    lg = make_log(compact_config(delete_retention_ms=5000), clock)
    put(lg, [(b"a", b"1"), (b"b", b"1")])
    put(lg, [(b"a", None)])                                     # tombstone at 2
    lg.roll()
    put(lg, [(b"c", b"1")])
    lg.compact()
    assert records(lg) == [(1, b"b", b"1"), (2, b"a", None), (3, b"c", b"1")]
    tomb = [b for b in read_all(lg) if b.base_offset == 2][0]
    assert tomb.attributes & DELETE_HORIZON_FLAG
    assert tomb.base_timestamp == T0 + 5000                     # delete horizon = clean time + delete.retention.ms
    assert tomb.records[0].timestamp == T0                      # record timestamps unchanged
    # before the horizon: kept by another pass
    clock.now = T0 + 4999
    lg.compact(force=True)
    lg.roll()
    put(lg, [(b"d", b"1")])
    lg.compact()
    assert (2, b"a", None) in records(lg)
    # past the horizon: the next pass removes it
    clock.now = T0 + 5001
    lg.roll()
    put(lg, [(b"e", b"1")])
    lg.compact()
    assert records(lg) == [(1, b"b", b"1"), (3, b"c", b"1"), (4, b"d", b"1"), (5, b"e", b"1")]


def test_keyless_records_rejected_on_compacted_topics(make_log):
    lg = make_log()
    with pytest.raises(InvalidRecordError, match="Compacted topic cannot accept message without key"):
        lg.append(build_batch([(b"k", b"v"), (None, b"v")]), leader_epoch=0)
    with pytest.raises(InvalidRecordError):
        lg.append(build_batch([(None, b"v")], compression=1), leader_epoch=0)
    assert lg.log_end_offset == 0
    lg.config.cleanup_policy = "delete"
    lg.append(build_batch([(None, b"v")]), leader_epoch=0)
    assert lg.log_end_offset == 1


# ---------------------------------------------------------------------------------------------------------- transactions


def test_aborted_transactions_removed_markers_later(make_log):
    clock = Clock()
    lg = make_log(compact_config(delete_retention_ms=1000), clock)
    txn = dict(producer_id=7, producer_epoch=0, transactional=True)
    put(lg, [(b"a", b"committed")], base_sequence=0, **txn)      # 0
    marker(lg, True, 7)                                          # 1 commit
    put(lg, [(b"a", b"aborted"), (b"b", b"aborted")], base_sequence=1, **txn)   # 2-3
    put(lg, [(b"x", b"plain")])                                  # 4
    marker(lg, False, 7)                                         # 5 abort
    put(lg, [(b"y", b"plain")])                                  # 6
    put(lg, [(b"q", b"q")], base_sequence=3, **txn)              # 7: the producer's last batch is a later one
    marker(lg, True, 7)                                          # 8 commit
    lg.roll()
    put(lg, [(b"z", b"z")])                                      # 9 (active)
    lg.compact()
    assert records(lg) == [(0, b"a", b"committed"), (4, b"x", b"plain"), (6, b"y", b"plain"), (7, b"q", b"q"),
                           (9, b"z", b"z")]
    controls = [b for b in read_all(lg) if b.is_control]
    # commit markers: their data is still there; abort marker: its data was seen in this pass, kept
    assert [b.base_offset for b in controls] == [1, 5, 8]
    assert not any(b.base_offset in (2, 3) for b in read_all(lg))
    # next pass: the abort marker's data is gone -> delete horizon stamped; later pass past the horizon drops it
    lg.compact(force=True)
    lg.roll()
    put(lg, [(b"w", b"1")])
    lg.compact()
    abort = [b for b in read_all(lg) if b.is_control and b.base_offset == 5]
    assert abort and abort[0].attributes & DELETE_HORIZON_FLAG
    clock.now = T0 + 2000
    lg.roll()
    put(lg, [(b"v", b"1")])
    lg.compact()
    assert [b.base_offset for b in read_all(lg) if b.is_control] == [1, 8]
    assert records(lg)[0] == (0, b"a", b"committed")


def test_last_batch_of_active_producer_kept_empty(make_log):
    lg = make_log()
    put(lg, [(b"a", b"1")], producer_id=9, producer_epoch=2, base_sequence=0)   # 0
    put(lg, [(b"a", b"2")])                                                     # 1
    lg.roll()
    put(lg, [(b"z", b"z")])
    lg.compact()
    batches = read_all(lg)
    b0 = batches[0]
    assert (b0.base_offset, b0.producer_id, b0.producer_epoch, b0.base_sequence, len(b0.records)) == (0, 9, 2, 0, 0)
    assert records(lg) == [(1, b"a", b"2"), (2, b"z", b"z")]
    # an expired producer (no batch for producer.id.expiration.ms) loses the empty batch
    lg.clock.now = T0 + 2 * DAY
    lg.roll()
    put(lg, [(b"y", b"y")])
    lg.compact(force=True)
    assert read_all(lg)[0].base_offset == 1


# ---------------------------------------------------------------------------------------------------------- crash safety


@pytest.mark.parametrize("point", ["swap", "deleted", "renamed"])
def test_crash_during_swap_leaves_a_valid_log(tmp_path, point, monkeypatch):
    d = str(tmp_path / "t-0")
    cfg = compact_config(segment_bytes=1 << 20)
    lg = PartitionLog.open(d, cfg, clock=Clock(), fsync=True)
    for i in range(3):
        for k in range(5):
            put(lg, [(b"k%d" % k, b"v%d" % i)])
        lg.roll()
    put(lg, [(b"tail", b"t")])
    expected_old = records(lg)

    class Crash(Exception):
        pass

    def hook(name):
        if name == point:
            raise Crash(name)

    monkeypatch.setattr(cleaner_mod, "swap_crash_hook", hook)
    with pytest.raises(Crash):
        lg.compact()
    monkeypatch.setattr(cleaner_mod, "swap_crash_hook", None)
    # the process "dies": drop the object without closing, reopen from the files
    for s in lg.segments:
        s.store.close() if hasattr(s.store, "fd") and s.store.fd >= 0 else None
        s.close_index_files()
    lg2 = PartitionLog.open(d, cfg, clock=Clock(), fsync=True)
    assert not [n for n in os.listdir(d) if n.endswith((".cleaned", ".swap", ".deleted"))]
    got = records(lg2)
    compacted = [(10 + k, b"k%d" % k, b"v2") for k in range(5)] + [(15, b"tail", b"t")]
    if point == "swap":
        assert got == compacted            # the .log.swap was there: the swap is finished on open
    else:
        assert got == compacted
    assert got != expected_old
    assert lg2.log_end_offset == 16
    assert put(lg2, [(b"after", b"1")]) == 16
    lg2.close()


def test_interrupted_clean_before_the_swap_keeps_the_old_segments(tmp_path):
    d = str(tmp_path / "t-0")
    cfg = compact_config()
    lg = PartitionLog.open(d, cfg, clock=Clock(), fsync=False)
    put(lg, [(b"a", b"1")])
    put(lg, [(b"a", b"2")])
    lg.roll()
    put(lg, [(b"b", b"1")])
    lg.close()
    # leftovers of a clean that never reached the swap
    for suffix in (".log.cleaned", ".index.cleaned", ".timeindex.swap"):
        with open(os.path.join(d, "00000000000000000000" + suffix), "wb") as f:
            f.write(b"garbage")
    lg2 = PartitionLog.open(d, cfg, clock=Clock(), fsync=False)
    assert records(lg2) == [(0, b"a", b"1"), (1, b"a", b"2"), (2, b"b", b"1")]
    assert sorted(os.listdir(d)) == sorted(n for n in os.listdir(d) if not n.endswith((".cleaned", ".swap")))
    lg2.close()


def test_pass_abandoned_when_segments_change_between_steps(make_log):
    lg = make_log(compact_config(cleanup_policy="compact,delete", retention_ms=1000))
    put(lg, [(b"a", b"1")])
    lg.roll()
    put(lg, [(b"a", b"2")])
    lg.roll()
    put(lg, [(b"b", b"1")])
    plan = log_to_clean(lg, T0)
    p = cleaner_mod.CleanPass(lg, plan, T0)
    assert p.step()                         # transactions scanned
    lg.delete_old_segments(now_ms=T0 + 10_000)   # retention removes the segments under the pass
    with pytest.raises(cleaner_mod.CleanAborted):
        while p.step():
            pass
    if make_log.backend == "disk":
        assert not [n for n in os.listdir(make_log.dir) if n.endswith(".cleaned")]


# ---------------------------------------------------------------------------------------------------------- manager


@pytest.mark.parametrize("backend", ["disk", "memory"])
def test_manager_runs_compaction_and_checkpoints(tmp_path, backend):
    cfg = compact_config()
    d = str(tmp_path / "data") if backend == "disk" else None
    m = LogManager(d, cfg, fsync=False)
    lg = m.create("compacted", 0, cfg.copy())
    other = m.create("plain", 0, LogConfig())
    for i in range(3):
        put(lg, [(b"k", b"%d" % i)])
        lg.roll()
        put(other, [(None, b"x")])
        other.roll()
    put(lg, [(b"k", b"last")])
    assert m.run_compaction() is False
    assert records(lg) == [(2, b"k", b"2"), (3, b"k", b"last")]
    assert len(records(other)) == 3
    assert lg.first_dirty_offset == 3
    # bounded steps: a tiny time budget still finishes over several calls
    lg.roll()
    put(lg, [(b"k", b"later")])
    lg.roll()
    calls = 0
    while m.run_compaction(max_ms=0):
        calls += 1
        assert calls < 1000
    assert calls >= 1
    assert records(lg) == [(4, b"k", b"later")]
    m.close()
    if d is not None:
        with open(os.path.join(d, CLEANER_OFFSET_FILE)) as f:
            assert "compacted 0 5" in f.read()
        m2 = LogManager(d, cfg, fsync=False)
        lg2 = m2.get("compacted", 0)
        assert lg2.first_dirty_offset == 5 and first_dirty_offset(lg2) == 5
        assert records(lg2) == [(4, b"k", b"later")]
        m2.close()


def test_upper_bound_hook_and_ongoing_transaction(tmp_path):
    cfg = compact_config()
    m = LogManager.memory(cfg)
    lg = m.create("t", 0, cfg.copy())
    put(lg, [(b"a", b"1")])
    lg.roll()
    put(lg, [(b"a", b"open")], producer_id=3, producer_epoch=0, base_sequence=0, transactional=True)
    lg.roll()
    put(lg, [(b"b", b"1")])
    m.run_compaction(upper_bound_for=lambda _log: 1)
    assert records(lg)[:2] == [(0, b"a", b"1"), (1, b"a", b"open")]
    m.run_compaction(upper_bound_for=lambda _log: 1)
    assert lg.first_dirty_offset == 1


def test_read_batch_header_of_empty_batch():
    h = read_batch_header(cleaner_mod.empty_batch(read_batch_header(build_batch([(b"k", b"v")], base_offset=5,
                                                                                 producer_id=1, producer_epoch=0,
                                                                                 base_sequence=3))))
    assert (h.base_offset, h.record_count, h.producer_id, h.base_sequence, h.last_offset) == (5, 0, 1, 3, 5)


def test_compacted_log_recovers_whole_after_its_policy_changes_to_delete(tmp_path):
    """Gaps left by compaction are legal offsets: an unclean reopen under cleanup.policy=delete keeps them all."""
    d = str(tmp_path / "t-0")
    lg = PartitionLog.open(d, compact_config(), clock=Clock(), fsync=False)
    put(lg, [(b"a", b"a0")])          # 0: a whole batch that compaction removes
    put(lg, [(b"b", b"b0")])          # 1
    put(lg, [(b"a", b"a1")])          # 2
    lg.roll()
    put(lg, [(b"a", b"a2")])          # 3: removes batch 2 as well
    put(lg, [(b"c", b"c0")])          # 4
    lg.roll()
    put(lg, [(b"d", b"d0")])          # 5
    lg.compact()
    kept = records(lg)
    assert [o for o, _, _ in kept] == [1, 3, 4, 5]
    for seg in lg.segments:          # no clean close: the next open re-checks every segment
        seg.store.flush()
    reopened = PartitionLog.open(d, compact_config(cleanup_policy="delete"), clock=Clock(), fsync=False)
    try:
        assert records(reopened) == kept
        assert reopened.log_end_offset == 6
    finally:
        reopened.close()
