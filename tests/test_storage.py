"""Storage engine tests: every behaviour runs against the disk and the memory backend where it makes sense."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest
from crc32c import crc32c

from storage import (
    CorruptRecordError,
    InvalidRecordError,
    LogConfig,
    LogManager,
    MemoryPartitionLog,
    OffsetOutOfRangeError,
    PartitionLog,
    RecordBatchTooLargeError,
    RecordTooLargeError,
)
from storage.checkpoint import LeaderEpochCache
from storage.producer_state import AppendOrigin
from storage.manager import CLEAN_SHUTDOWN_FILE
from wire.records import batch_crc_ok, read_batch_header

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------------------------------- batch builder


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _bytes_field(b: bytes | None) -> bytes:
    return _zigzag(-1) if b is None else _zigzag(len(b)) + b


def make_batch(values, *, timestamps=None, base_ts=1_000_000, producer_id=-1, producer_epoch=-1, base_sequence=-1,
               attributes=0, base_offset=0, magic=2, epoch=-1) -> bytearray:
    """A v2 batch (uncompressed) holding one record per value; timestamps default to base_ts + index."""
    if timestamps is None:
        timestamps = [base_ts + i for i in range(len(values))]
    first_ts = timestamps[0]
    recs = bytearray()
    for i, (v, ts) in enumerate(zip(values, timestamps)):
        body = b"\x00" + _zigzag(ts - first_ts) + _zigzag(i) + _bytes_field(b"k%d" % i) + _bytes_field(v) + _zigzag(0)
        recs += _zigzag(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", attributes, len(values) - 1, first_ts, max(timestamps), producer_id,
                            producer_epoch, base_sequence, len(values)) + recs
    crc = crc32c(after_crc)
    body = struct.pack(">ibI", epoch, magic, crc) + after_crc
    return bytearray(struct.pack(">qi", base_offset, len(body)) + body)


def iter_batches(buf):
    buf = bytes(buf)
    pos = 0
    while pos < len(buf):
        h = read_batch_header(buf, pos)
        yield h, buf[pos:pos + h.size]
        pos += h.size


def record_offsets(buf) -> list[int]:
    out = []
    for h, _ in iter_batches(buf):
        out.extend(range(h.base_offset, h.last_offset + 1))
    return out


class Clock:
    def __init__(self, now=10_000_000):
        self.now = now

    def __call__(self):
        return self.now


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(params=["disk", "memory"])
def backend(request):
    return request.param


@pytest.fixture
def make_log(backend, tmp_path):
    def make(config=None, clock=None, name="t-0"):
        cfg = config or LogConfig()
        if backend == "memory":
            return MemoryPartitionLog(cfg, topic="t", partition=0, clock=clock)
        return PartitionLog.open(str(tmp_path / name), cfg, clock=clock, fsync=False)
    return make


def small(**kw) -> LogConfig:
    base = dict(segment_bytes=1000, index_interval_bytes=100)
    base.update(kw)
    return LogConfig(**base)


def fill(log, n, *, records_per_batch=3, epoch=0, value_size=20, base_ts=1_000_000):
    """Append n batches; return list of (base_offset, last_offset, stored bytes)."""
    out = []
    for i in range(n):
        values = [bytes([65 + (i + j) % 26]) * (value_size + (i * 7 + j) % 30) for j in range(records_per_batch)]
        b = make_batch(values, base_ts=base_ts + i * 10)
        info = log.append(b, leader_epoch=epoch)
        log.update_high_watermark(log.log_end_offset)   # the partition's rule with one replica (kafkapy/partition.py)
        out.append((info.base_offset, info.last_offset, bytes(b)))
    return out


def read_all(log, start=None) -> bytes:
    off = log.log_start_offset if start is None else start
    out = bytearray()
    while off < log.log_end_offset:
        chunk = log.read(off, 1 << 20)
        assert len(chunk) > 0
        out += chunk
        off = list(iter_batches(chunk))[-1][0].last_offset + 1
    return bytes(out)


# ----------------------------------------------------------------------------------------------------- append / read


def test_append_read_round_trip_across_rolls(make_log):
    log = make_log(small())
    written = fill(log, 60)
    assert len(log.segments) > 5
    assert written[0][0] == 0
    for (b0, l0, _), (b1, _l1, _) in zip(written, written[1:]):
        assert b1 == l0 + 1 and l0 - b0 == 2
    assert log.log_end_offset == written[-1][1] + 1 == log.high_watermark
    # every stored batch is the producer's bytes with the offset patched in, CRC still valid
    assert read_all(log) == b"".join(w[2] for w in written)
    for h, raw in iter_batches(read_all(log)):
        assert batch_crc_ok(raw, 0, len(raw)) and h.partition_leader_epoch == 0
    # a read at any offset starts with the batch holding it
    for base, last, raw in written:
        for off in range(base, last + 1):
            got = bytes(log.read(off, 1))
            assert got == raw


def test_segment_base_offsets_and_file_names(backend, make_log, tmp_path):
    log = make_log(small())
    fill(log, 30)
    bases = [s.base_offset for s in log.segments]
    assert bases == sorted(bases) and bases[0] == 0
    for prev, seg in zip(log.segments, log.segments[1:]):
        assert prev.next_offset == seg.base_offset
        assert prev.size <= 1000
    if backend == "disk":
        names = sorted(os.listdir(tmp_path / "t-0"))
        for b in bases:
            assert f"{b:020d}.log" in names and f"{b:020d}.index" in names and f"{b:020d}.timeindex" in names


def test_max_bytes_semantics(make_log):
    log = make_log(small(segment_bytes=1 << 20))
    written = fill(log, 10)
    sizes = [len(w[2]) for w in written]
    # first batch always whole, even when max_bytes is smaller
    assert bytes(log.read(0, 1)) == written[0][2]
    # ... unless the caller says it already has data (min_one_message=False)
    assert bytes(log.read(0, 1, min_one_message=False)) == b""
    # later batches only while they fit
    budget = sizes[0] + sizes[1] + sizes[2] - 1
    assert bytes(log.read(0, budget)) == written[0][2] + written[1][2]
    assert bytes(log.read(0, budget + 1)) == b"".join(w[2] for w in written[:3])
    # from the middle of a batch: the whole batch
    assert bytes(log.read(written[4][0] + 1, sizes[4])) == written[4][2]


def test_max_offset_bounds_the_read(make_log):
    log = make_log()
    written = fill(log, 5)
    got = bytes(log.read(0, 1 << 20, max_offset=written[2][0]))
    assert got == written[0][2] + written[1][2]
    assert bytes(log.read(written[3][0], 1 << 20, max_offset=written[3][0])) == b""


def test_offset_out_of_range(make_log):
    log = make_log(small())
    fill(log, 10)
    leo = log.log_end_offset
    assert bytes(log.read(leo, 100)) == b""
    with pytest.raises(OffsetOutOfRangeError) as e:
        log.read(leo + 1, 100)
    assert e.value.error_code == 1 and e.value.log_end_offset == leo
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)
    log.delete_records_before(7)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(6, 100)
    assert record_offsets(log.read(7, 1))[0] <= 7


def test_empty_log(make_log):
    log = make_log()
    assert log.log_start_offset == log.log_end_offset == log.high_watermark == 0
    assert bytes(log.read(0, 100)) == b""
    assert log.offset_for_timestamp(0) is None
    assert log.max_timestamp_offset() is None
    assert log.append(b"", leader_epoch=0).base_offset == -1


def test_several_batches_in_one_append(make_log):
    log = make_log()
    fill(log, 1)
    b = make_batch([b"a", b"b"]) + make_batch([b"c"]) + make_batch([b"d", b"e", b"f"])
    info = log.append(b, leader_epoch=0)
    assert (info.base_offset, info.last_offset, info.record_count, info.batch_count) == (3, 8, 6, 3)
    assert record_offsets(log.read(3, 1 << 20)) == list(range(3, 9))
    assert bytes(log.read(3, 1 << 20)) == bytes(b)  # patched in place


def test_readonly_bytes_are_accepted(make_log):
    log = make_log()
    info = log.append(bytes(make_batch([b"x"])), leader_epoch=3)
    assert info.base_offset == 0
    h = read_batch_header(bytes(log.read(0, 100)), 0)
    assert h.partition_leader_epoch == 3


# ----------------------------------------------------------------------------------------------------- validation


def _corrupt(b: bytearray, pos: int) -> bytearray:
    b = bytearray(b)
    b[pos] ^= 0xFF
    return b


@pytest.mark.parametrize("case", ["crc", "truncated", "length_past_end", "short_length", "magic", "trailing",
                                  "too_large", "control", "count", "sequence", "too_large_for_segment"])
def test_invalid_appends_write_nothing(make_log, case):
    log = make_log(LogConfig(max_message_bytes=2000, segment_bytes=3000))
    fill(log, 2)
    leo, size = log.log_end_offset, log.size_in_bytes
    good = make_batch([b"ok"])
    bad, exc = {
        "crc": (_corrupt(make_batch([b"v"]), 70), CorruptRecordError),
        "truncated": (make_batch([b"v"])[:-1], CorruptRecordError),
        "length_past_end": (make_batch([b"v"])[:40], CorruptRecordError),
        "short_length": (bytearray(struct.pack(">qi", 0, 10)) + make_batch([b"v"])[12:], CorruptRecordError),
        "magic": (make_batch([b"v"], magic=1), InvalidRecordError),
        "trailing": (make_batch([b"v"]) + b"\x00\x00\x00", CorruptRecordError),
        "too_large": (make_batch([b"v" * 2100]), RecordTooLargeError),
        "control": (make_batch([b"v"], attributes=0x20), InvalidRecordError),
        "count": (_fix_crc(_set_count(make_batch([b"v", b"w"]), 5)), InvalidRecordError),
        "sequence": (make_batch([b"v"], producer_id=7, producer_epoch=0, base_sequence=-1), InvalidRecordError),
        "too_large_for_segment": (make_batch([b"v" * 1500]) + make_batch([b"w" * 1500]), RecordBatchTooLargeError),
    }[case]
    with pytest.raises(exc) as e:
        log.append(good + bad, leader_epoch=0)
    assert e.value.error_code in (2, 10, 18, 87)
    assert (log.log_end_offset, log.size_in_bytes) == (leo, size)
    assert log.append(good, leader_epoch=0).base_offset == leo


def _set_count(b: bytearray, count: int) -> bytearray:
    struct.pack_into(">i", b, 57, count)
    return b


def _fix_crc(b: bytearray) -> bytearray:
    struct.pack_into(">I", b, 17, crc32c(bytes(b[21:])))
    return b


def test_control_batches_allowed_from_coordinator(make_log):
    log = make_log()
    info = log.append(make_batch([b""], attributes=0x30, producer_id=5, producer_epoch=0, base_sequence=-1 + 1),
                      leader_epoch=0, origin=AppendOrigin.COORDINATOR)
    assert info.base_offset == 0


def test_log_append_time(make_log):
    log = make_log(LogConfig(message_timestamp_type="LogAppendTime"))
    b = make_batch([b"a", b"b", b"c"], base_ts=5)
    info = log.append(b, leader_epoch=1, log_append_time_ms=123_456_789)
    assert info.log_append_time == 123_456_789
    raw = bytes(log.read(0, 1000))
    h = read_batch_header(raw, 0)
    assert h.log_append_time and h.max_timestamp == 123_456_789
    assert batch_crc_ok(raw, 0, len(raw))
    assert log.offset_for_timestamp(123_456_789) == (123_456_789, 0)
    # the clock is used when no time is given
    info2 = log.append(make_batch([b"d"]), leader_epoch=1)
    assert info2.log_append_time > 1_000_000_000_000
    # CreateTime topics report -1
    log2 = make_log(LogConfig(), name="t-1")
    assert log2.append(make_batch([b"x"]), leader_epoch=0).log_append_time == -1


def test_config_changes_apply_at_once(make_log):
    cfg = LogConfig()
    log = make_log(cfg)
    fill(log, 3)
    assert len(log.segments) == 1
    cfg.update(segment_bytes=200)
    fill(log, 3)
    assert len(log.segments) >= 3
    with pytest.raises(TypeError):
        cfg.update(nonsense=1)
    assert LogConfig.from_kafka({"segment.bytes": "5", "message.timestamp.type": "LogAppendTime",
                                 "flush.messages": str(2**63 - 1)}).segment_bytes == 5


# ----------------------------------------------------------------------------------------------------- timestamps


def test_offset_for_timestamp(make_log):
    log = make_log(small())
    # batch i holds 3 records with timestamps 1000*i + (0, 1, 2)
    for i in range(40):
        log.append(make_batch([b"v" * 30] * 3, timestamps=[1000 * i, 1000 * i + 1, 1000 * i + 2]), leader_epoch=0)
    assert len(log.segments) > 3
    assert log.offset_for_timestamp(0) == (0, 0)
    assert log.offset_for_timestamp(-5) == (0, 0)
    assert log.offset_for_timestamp(1) == (1, 1)
    for i in range(40):
        assert log.offset_for_timestamp(1000 * i + 1) == (1000 * i + 1, 3 * i + 1)
        assert log.offset_for_timestamp(1000 * i + 2) == (1000 * i + 2, 3 * i + 2)
        assert log.offset_for_timestamp(1000 * i + 3) == ((1000 * (i + 1), 3 * (i + 1)) if i < 39 else None)
    assert log.max_timestamp_offset() == (39002, 119)


def test_timestamps_out_of_order(make_log):
    log = make_log(small())
    log.append(make_batch([b"a", b"b"], timestamps=[50, 500]), leader_epoch=0)   # 0, 1
    log.append(make_batch([b"c", b"d"], timestamps=[100, 90]), leader_epoch=0)   # 2, 3
    log.append(make_batch([b"e"], timestamps=[700]), leader_epoch=0)             # 4
    log.append(make_batch([b"f"], timestamps=[600]), leader_epoch=0)             # 5
    assert log.offset_for_timestamp(60) == (500, 1)    # first batch with max >= 60, first record >= 60
    assert log.offset_for_timestamp(501) == (700, 4)
    assert log.offset_for_timestamp(650) == (700, 4)
    assert log.max_timestamp_offset() == (700, 4)
    assert log.offset_for_timestamp(701) is None
    log.update_high_watermark(log.log_end_offset)
    log.delete_records_before(1)
    assert log.offset_for_timestamp(0) == (500, 1)


def test_time_index_survives_restart(tmp_path):
    cfg = small()
    log = PartitionLog.open(str(tmp_path / "t-0"), cfg, fsync=False)
    for i in range(30):
        log.append(make_batch([b"v" * 40] * 2, timestamps=[10 * i, 10 * i + 5]), leader_epoch=0)
    expected = [log.offset_for_timestamp(t) for t in range(0, 300, 3)]
    mx = log.max_timestamp_offset()
    log.close()
    for clean in (True, False):
        log = PartitionLog.open(str(tmp_path / "t-0"), cfg, clean_shutdown=clean, recovery_point=0, fsync=False)
        assert [log.offset_for_timestamp(t) for t in range(0, 300, 3)] == expected
        assert log.max_timestamp_offset() == mx
        log.close()


# ----------------------------------------------------------------------------------------------------- index files


def test_index_files_have_kafkas_format(tmp_path):
    d = tmp_path / "t-0"
    log = PartitionLog.open(str(d), LogConfig(segment_bytes=5000, index_interval_bytes=200), fsync=False)
    fill(log, 80)
    log.close()
    assert len(log.segments) > 3
    for seg in log.segments:
        base = seg.base_offset
        data = (d / f"{base:020d}.log").read_bytes()
        idx = (d / f"{base:020d}.index").read_bytes()
        tidx = (d / f"{base:020d}.timeindex").read_bytes()
        assert len(idx) % 8 == 0 and len(tidx) % 12 == 0
        if seg is not log.segments[-1]:
            assert len(idx) >= 8 and len(tidx) >= 12
        batches = {}
        pos = 0
        while pos < len(data):
            h = read_batch_header(data, pos)
            batches[pos] = h
            pos += h.size
        last_max = -1
        for rel, p in struct.iter_unpack(">ii", idx):
            assert p in batches and batches[p].last_offset == base + rel     # Kafka: last offset -> batch start
        prev = -1
        for ts, rel in struct.iter_unpack(">qi", tidx):
            assert ts > prev
            prev = ts
            holder = [h for h in batches.values() if h.last_offset == base + rel]
            assert holder and holder[0].max_timestamp == ts
            last_max = ts
        assert last_max == max(h.max_timestamp for h in batches.values())   # final entry at roll / close


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate_entry", "zero"])
def test_missing_or_corrupt_indexes_are_rebuilt(tmp_path, damage):
    d = tmp_path / "t-0"
    cfg = LogConfig(segment_bytes=3000, index_interval_bytes=200)
    log = PartitionLog.open(str(d), cfg, fsync=False)
    written = fill(log, 60)
    log.close()
    originals = {p.name: p.read_bytes() for p in d.iterdir() if p.suffix in (".index", ".timeindex")}
    for name in originals:
        p = d / name
        if damage == "delete":
            p.unlink()
        elif damage == "garbage":
            p.write_bytes(p.read_bytes() + b"\x01\x02\x03")
        elif damage == "truncate_entry":
            p.write_bytes(p.read_bytes()[:-3])
        else:
            p.write_bytes(b"\x00" * 48)
    log = PartitionLog.open(str(d), cfg, clean_shutdown=True, fsync=False)
    assert read_all(log) == b"".join(w[2] for w in written)
    for _base, last, raw in written[::7]:
        assert bytes(log.read(last, 1)) == raw
    log.close()
    rebuilt = {p.name: p.read_bytes() for p in d.iterdir() if p.suffix in (".index", ".timeindex")}
    assert rebuilt == originals


# ----------------------------------------------------------------------------------------------------- recovery


def _log_files(d):
    return sorted(p for p in d.iterdir() if p.suffix == ".log")


@pytest.mark.parametrize("clean", [True, False])
def test_restart_keeps_every_batch(tmp_path, clean):
    data = tmp_path / "data"
    mgr = LogManager(str(data), small(), fsync=False)
    log = mgr.create("orders", 2)
    written = fill(log, 25, epoch=4)
    mgr.flush()                       # recovery point checkpoint in the middle
    assert "orders 2 75" in (data / "recovery-point-offset-checkpoint").read_text()
    written += fill(log, 25, epoch=4)
    if clean:
        mgr.close()
        assert (data / CLEAN_SHUTDOWN_FILE).exists()
    # unclean: the process just "dies" (files were written with os.write, nothing closed)
    mgr2 = LogManager(str(data), small(), fsync=False)
    assert mgr2.had_clean_shutdown is clean
    assert not (data / CLEAN_SHUTDOWN_FILE).exists()
    log2 = mgr2.get("orders", 2)
    assert log2.log_end_offset == written[-1][1] + 1
    assert read_all(log2) == b"".join(w[2] for w in written)
    assert log2.append(make_batch([b"more"]), leader_epoch=4).base_offset == written[-1][1] + 1
    mgr2.close()


@pytest.mark.parametrize("clean", [True, False])
def test_garbage_appended_to_the_log_is_truncated(tmp_path, clean):
    d = tmp_path / "t-0"
    log = PartitionLog.open(str(d), small(), fsync=False)
    written = fill(log, 20)
    log.close()
    last = _log_files(d)[-1]
    good_size = last.stat().st_size
    with open(last, "ab") as f:
        f.write(b"\x00" * 7 + os.urandom(100))
    log = PartitionLog.open(str(d), small(), clean_shutdown=clean, recovery_point=log.log_end_offset, fsync=False)
    assert last.stat().st_size == good_size
    assert read_all(log) == b"".join(w[2] for w in written)
    info = log.append(make_batch([b"after"]), leader_epoch=0)
    assert info.base_offset == written[-1][1] + 1
    assert record_offsets(log.read(info.base_offset, 100)) == [info.base_offset]


@pytest.mark.parametrize("cut", [1, 12, 30, 61, -1])
def test_torn_last_batch_is_dropped(tmp_path, cut):
    d = tmp_path / "t-0"
    log = PartitionLog.open(str(d), LogConfig(), fsync=False)
    written = fill(log, 10)
    last = _log_files(d)[-1]
    size = last.stat().st_size
    keep = size - len(written[-1][2]) + (cut if cut > 0 else len(written[-1][2]) + cut)
    os.truncate(last, keep)
    log = PartitionLog.open(str(d), LogConfig(), fsync=False)
    assert last.stat().st_size == size - len(written[-1][2])
    assert read_all(log) == b"".join(w[2] for w in written[:-1])
    assert log.log_end_offset == written[-1][0]


def test_corruption_in_an_old_segment_cuts_the_log_there(tmp_path):
    d = tmp_path / "t-0"
    cfg = small()
    log = PartitionLog.open(str(d), cfg, fsync=False)
    written = fill(log, 40)
    files = _log_files(d)
    assert len(files) > 4
    victim = files[2]
    base = int(victim.stem)
    data = bytearray(victim.read_bytes())
    h0 = read_batch_header(data, 0)
    data[h0.size + 70] ^= 0x55        # second batch of the third segment: CRC no longer matches
    victim.write_bytes(bytes(data))
    log = PartitionLog.open(str(d), cfg, fsync=False)        # unclean, recovery point 0
    assert [s.base_offset for s in log.segments][-1] == base
    assert _log_files(d)[-1] == victim and victim.stat().st_size == h0.size
    assert log.log_end_offset == h0.last_offset + 1
    kept = [w for w in written if w[1] <= h0.last_offset]
    assert read_all(log) == b"".join(w[2] for w in kept)
    # appends continue from there
    assert log.append(make_batch([b"x"]), leader_epoch=0).base_offset == h0.last_offset + 1


def test_recovery_point_limits_the_rescan(tmp_path):
    d = tmp_path / "t-0"
    cfg = small()
    log = PartitionLog.open(str(d), cfg, fsync=False)
    fill(log, 40)
    files = _log_files(d)
    # corrupt an old segment *below* the recovery point: not re-checked (Kafka trusts flushed segments)
    data = bytearray(files[1].read_bytes())
    data[80] ^= 0x55
    files[1].write_bytes(bytes(data))
    leo = log.log_end_offset
    log = PartitionLog.open(str(d), cfg, recovery_point=int(files[-1].stem), fsync=False)
    assert log.log_end_offset == leo


def test_orphans_and_leftovers_are_cleaned(tmp_path):
    d = tmp_path / "t-0"
    log = PartitionLog.open(str(d), small(), fsync=False)
    fill(log, 5)
    log.close()
    (d / f"{999:020d}.index").write_bytes(b"\x00" * 8)
    (d / f"{999:020d}.timeindex").write_bytes(b"")
    (d / f"{0:020d}.log.deleted").write_bytes(b"junk")
    (d / "leader-epoch-checkpoint.tmp").write_bytes(b"junk")
    log = PartitionLog.open(str(d), small(), fsync=False)
    names = set(os.listdir(d))
    assert f"{999:020d}.index" not in names and f"{0:020d}.log.deleted" not in names
    assert "leader-epoch-checkpoint.tmp" not in names
    assert log.log_end_offset == 15


# ----------------------------------------------------------------------------------------------------- leader epochs


def test_leader_epochs(make_log, backend, tmp_path):
    log = make_log()
    fill(log, 2, epoch=1)     # 0..5
    fill(log, 1, epoch=3)     # 6..8
    fill(log, 2, epoch=5)     # 9..14
    assert log.epochs.entries() == [(1, 0), (3, 6), (5, 9)]
    assert log.end_offset_for_epoch(5) == (5, 15)
    assert log.end_offset_for_epoch(1) == (1, 6)
    assert log.end_offset_for_epoch(2) == (1, 6)
    assert log.end_offset_for_epoch(4) == (3, 9)
    assert log.end_offset_for_epoch(0) == (0, 0)
    assert log.end_offset_for_epoch(6) == (-1, -1)
    assert log.end_offset_for_epoch(-1) == (-1, -1)
    if backend == "disk":
        text = (tmp_path / "t-0" / "leader-epoch-checkpoint").read_text()
        assert text == "0\n3\n1 0\n3 6\n5 9\n"
        log.close()
        log = PartitionLog.open(str(tmp_path / "t-0"), LogConfig(), fsync=False)
        assert log.epochs.entries() == [(1, 0), (3, 6), (5, 9)]
    log.truncate_to(7)
    assert log.log_end_offset == 6 and log.epochs.entries() == [(1, 0)]


def test_epoch_cache_rebuilt_from_batches_when_file_lost(tmp_path):
    d = tmp_path / "t-0"
    log = PartitionLog.open(str(d), small(), fsync=False)
    fill(log, 3, epoch=2)
    fill(log, 3, epoch=7)
    (d / "leader-epoch-checkpoint").unlink()
    log = PartitionLog.open(str(d), small(), fsync=False)
    assert log.epochs.entries() == [(2, 0), (7, 9)]


def test_epoch_checkpoint_truncated_past_lost_data(tmp_path):
    d = tmp_path / "t-0"
    log = PartitionLog.open(str(d), LogConfig(), fsync=False)
    fill(log, 3, epoch=2)
    cache = LeaderEpochCache(str(d / "leader-epoch-checkpoint"), fsync=False)
    cache.assign(9, 100)                  # the epoch was written, the batch never was
    log = PartitionLog.open(str(d), LogConfig(), fsync=False)
    assert log.epochs.entries() == [(2, 0)]


# ----------------------------------------------------------------------------------------------------- retention


def test_retention_by_time(make_log):
    clock = Clock()
    log = make_log(small(), clock=clock)
    for i in range(40):
        # batch i has timestamp 1000 * i
        log.append(make_batch([b"v" * 40] * 2, timestamps=[1000 * i, 1000 * i]), leader_epoch=0)
    nseg = len(log.segments)
    assert nseg > 4
    # nothing is old enough
    assert log.delete_old_segments(retention_ms=100_000, now_ms=40_000) == 0
    # everything older than 20s at t=40s: segments whose max timestamp < 20000 go, never the active one
    deleted = log.delete_old_segments(retention_ms=20_000, now_ms=40_000)
    assert deleted > 0
    assert all(s.max_timestamp >= 20_000 for s in log.segments[:-1])
    assert log.log_start_offset == log.segments[0].base_offset > 0
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 100)
    # far future: all but the active segment
    log.delete_old_segments(retention_ms=1, now_ms=10**12)
    assert len(log.segments) == 1
    assert log.log_start_offset == log.segments[0].base_offset
    assert record_offsets(log.read(log.log_start_offset, 1 << 20))[-1] == log.log_end_offset - 1
    # retention -1 keeps forever; compact-only topics keep too
    log2 = make_log(small(retention_ms=-1), clock=clock, name="t-1")
    fill(log2, 20)
    assert log2.delete_old_segments(now_ms=10**12) == 0
    log2.config.update(retention_ms=1, cleanup_policy="compact")
    assert log2.delete_old_segments(now_ms=10**12) == 0
    log2.config.update(cleanup_policy="compact,delete")
    assert log2.delete_old_segments(now_ms=10**12) > 0


def test_retention_by_size(make_log):
    log = make_log(small())
    fill(log, 60)
    total = log.size_in_bytes
    assert log.delete_old_segments(retention_ms=-1, retention_bytes=total) == 0
    log.delete_old_segments(retention_ms=-1, retention_bytes=2500)
    assert log.size_in_bytes <= 2500 + log.active_segment.size
    assert log.size_in_bytes > 2500 - 1000
    assert read_all(log)  # still readable from the new start
    log.delete_old_segments(retention_ms=-1, retention_bytes=0)
    assert len(log.segments) == 1


def test_segment_roll_by_time(make_log):
    clock = Clock(1_000)
    log = make_log(LogConfig(segment_ms=1000), clock=clock)
    log.append(make_batch([b"a"], timestamps=[1_000]), leader_epoch=0)
    log.append(make_batch([b"b"], timestamps=[1_900]), leader_epoch=0)
    assert len(log.segments) == 1
    log.append(make_batch([b"c"], timestamps=[2_100]), leader_epoch=0)   # 1100 ms after the first batch
    assert [s.base_offset for s in log.segments] == [0, 2]
    log.append(make_batch([b"d"], timestamps=[2_200]), leader_epoch=0)
    assert len(log.segments) == 2


def test_delete_records(make_log):
    log = make_log(small())
    written = fill(log, 40)
    hw = log.high_watermark
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records_before(hw + 1)
    nseg = len(log.segments)
    assert log.delete_records_before(50) == 50
    assert log.log_start_offset == 50
    assert len(log.segments) < nseg
    assert log.segments[0].base_offset <= 50 < log.segments[0].next_offset or log.segments[0].base_offset == 50
    got = log.read(50, 1)
    h = read_batch_header(bytes(got), 0)
    assert h.base_offset <= 50 <= h.last_offset
    assert log.delete_records_before(10) == 50          # never moves back
    assert log.delete_records_before(hw) == hw
    assert len(log.segments) == 1
    assert bytes(log.read(hw, 100)) == b""
    info = log.append(make_batch([b"x"]), leader_epoch=0)
    assert info.base_offset == hw and info.log_start_offset == hw
    assert written


def test_log_start_offset_persisted(tmp_path):
    data = tmp_path / "data"
    for clean in (True, False):
        mgr = LogManager(str(data / str(clean)), small(), fsync=False)
        log = mgr.create("t", 0)
        fill(log, 30)
        log.delete_records_before(31)
        text = (data / str(clean) / "log-start-offset-checkpoint").read_text()
        assert text == "0\n1\nt 0 31\n"
        if clean:
            mgr.close()
        mgr = LogManager(str(data / str(clean)), small(), fsync=False)
        assert mgr.get("t", 0).log_start_offset == 31
        with pytest.raises(OffsetOutOfRangeError):
            mgr.get("t", 0).read(30, 100)
        mgr.close()


def test_truncate_fully(make_log):
    log = make_log(small())
    fill(log, 20)
    log.truncate_fully(1000)
    assert (log.log_start_offset, log.log_end_offset, len(log.segments)) == (1000, 1000, 1)
    assert log.append(make_batch([b"x"]), leader_epoch=0).base_offset == 1000


# ----------------------------------------------------------------------------------------------------- log manager


def test_log_manager(backend, tmp_path):
    data = tmp_path / "data"
    mgr = LogManager(str(data), fsync=False) if backend == "disk" else LogManager.memory()
    a = mgr.create("my.topic-x", 0)
    b = mgr.create("my.topic-x", 1)
    c = mgr.create("other", 0, LogConfig(segment_bytes=500))
    assert mgr.create("my.topic-x", 0) is a
    assert mgr.get("nope", 0) is None
    fill(a, 3)
    fill(b, 1)
    fill(c, 10)
    assert len(c.segments) > 1
    assert mgr.topics() == {"my.topic-x", "other"}
    new_cfg = LogConfig(segment_bytes=10**6)
    mgr.update_config("my.topic-x", new_cfg)
    assert a.config is new_cfg and b.config is new_cfg and c.config is not new_cfg
    assert mgr.delete("other", 0) and not mgr.delete("other", 0)
    if backend == "disk":
        assert not (data / "other-0").exists()
        assert sorted(os.listdir(data)) == ["log-start-offset-checkpoint", "my.topic-x-0", "my.topic-x-1"]
    mgr.flush()
    mgr.close()
    if backend == "disk":
        (data / "gone-0.0123abc-delete").mkdir()
        mgr = LogManager(str(data), fsync=False)
        assert set(tp for tp, _ in mgr) == {("my.topic-x", 0), ("my.topic-x", 1)}
        assert mgr.get("my.topic-x", 0).log_end_offset == 9
        assert not (data / "gone-0.0123abc-delete").exists()
        assert "my.topic-x 0 9" in (data / "recovery-point-offset-checkpoint").read_text()
        mgr.close()


def test_retention_pass_and_flush_policy(tmp_path):
    mgr = LogManager(str(tmp_path / "d"), small(retention_bytes=2000), fsync=False)
    log = mgr.create("t", 0)
    fill(log, 60)
    assert mgr.run_retention() > 0
    assert log.size_in_bytes <= 2000 + log.active_segment.size
    mgr.flush()
    assert log.recovery_point == log.log_end_offset
    log.config.update(flush_interval_messages=10)
    rp = log.recovery_point
    fill(log, 3)    # 9 records: no flush yet
    assert log.recovery_point == rp
    fill(log, 1)    # 12 records: flush
    assert log.recovery_point == log.log_end_offset
    mgr.close()


# ----------------------------------------------------------------------------------------------------- kill -9

CHILD = textwrap.dedent("""
    import sys, struct
    sys.path.insert(0, {root!r})
    from crc32c import crc32c
    from storage import LogManager, LogConfig
    sys.path.insert(0, {tests!r})
    from test_storage import make_batch

    mgr = LogManager({data!r}, LogConfig(segment_bytes=4000, index_interval_bytes=300))
    log = mgr.get_or_create("k", 0)
    print("start", log.log_end_offset, flush=True)
    i = 0
    while True:
        values = [(b"%d-%d" % (i, j)) * (1 + (i * 13 + j) % 20) for j in range(1 + i % 4)]
        info = log.append(make_batch(values), leader_epoch=1 + i // 50)
        print(info.base_offset, info.last_offset, flush=True)
        i += 1
        if i % 97 == 0:
            log.delete_old_segments(retention_bytes=40_000, retention_ms=-1)
""")


def test_kill_9_loses_no_acknowledged_batch(tmp_path):
    data = str(tmp_path / "data")
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=ROOT, tests=os.path.join(ROOT, "tests"), data=data))
    acked: dict[int, int] = {}
    for it in range(5):
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline().split()
        assert first[0] == "start"
        # batches written but killed before the "ack" line may be there too
        assert int(first[1]) >= (max(acked.values()) + 1 if acked else 0)
        time.sleep(0.15 + 0.1 * it)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:       # a torn last line was not acknowledged
                acked[int(parts[0])] = int(parts[1])
    assert len(acked) > 20
    mgr = LogManager(data, fsync=False)
    log = mgr.get("k", 0)
    assert not mgr.had_clean_shutdown
    assert log.log_end_offset >= max(acked.values()) + 1
    stored = {}
    off = log.log_start_offset
    while off < log.log_end_offset:
        chunk = bytes(log.read(off, 1 << 20))
        for h, raw in iter_batches(chunk):
            assert batch_crc_ok(raw, 0, len(raw))
            stored[h.base_offset] = h.last_offset
            off = h.last_offset + 1
    for base, last in acked.items():
        if base >= log.log_start_offset:
            assert stored.get(base) == last
    # offsets are contiguous: every batch follows the previous one
    bases = sorted(stored)
    for a, b in zip(bases, bases[1:]):
        assert stored[a] + 1 == b
    mgr.close()


@pytest.mark.parametrize("seed", range(30))
def test_random_tail_damage_leaves_a_valid_prefix(tmp_path, seed):
    import random
    rnd = random.Random(seed)
    d = tmp_path / "t-0"
    cfg = small(segment_bytes=2500)
    log = PartitionLog.open(str(d), cfg, fsync=False)
    written = fill(log, 40)
    files = _log_files(d)
    victim = files[rnd.randrange(len(files))]
    data = bytearray(victim.read_bytes())
    action = rnd.choice(["flip", "cut", "garbage"])
    at = rnd.randrange(len(data))
    if action == "flip":
        data[at] ^= 1 << rnd.randrange(8)
    elif action == "cut":
        data = data[:at]
    else:
        data = data[:at] + bytearray(rnd.randbytes(rnd.randrange(1, 300)))
    victim.write_bytes(bytes(data))
    log = PartitionLog.open(str(d), cfg, fsync=False)
    got = read_all(log)
    expected = b"".join(w[2] for w in written)
    assert expected.startswith(got)
    assert log.log_end_offset == (list(iter_batches(got))[-1][0].last_offset + 1 if got else 0)
    for _h, raw in iter_batches(got):
        assert batch_crc_ok(raw, 0, len(raw))
    # the recovered log takes appends and survives another restart
    log.append(make_batch([b"again"]), leader_epoch=0)
    leo = log.log_end_offset
    log.close()
    assert PartitionLog.open(str(d), cfg, fsync=False).log_end_offset == leo
