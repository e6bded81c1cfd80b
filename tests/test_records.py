"""Record batches v2, compression and legacy message sets: round trips, cross-checks with kafka-python and
aiokafka, malformed input, decompression bombs."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import cramjam
import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wire import compression
from wire.errors import DecodeError
from wire.records import (
    BATCH_OVERHEAD,
    CONTROL_ABORT,
    CONTROL_COMMIT,
    Record,
    RecordBatch,
    batch_crc_ok,
    build_batch,
    build_control_batch,
    decode_batch,
    decode_batches,
    decode_legacy_message_set,
    encode_record,
    encode_varint,
    iter_batch_headers,
    parse_control_record,
    read_batch_header,
    set_base_offset,
)

CODECS = [0, 1, 2, 3, 4]

# --- strategies ---------------------------------------------------------------------------------

maybe_bytes = st.none() | st.binary(max_size=300)
headers_st = st.lists(st.tuples(st.text(max_size=20), maybe_bytes), max_size=4)
timestamps = st.integers(min_value=0, max_value=2**41)


@st.composite
def record_lists(draw, min_size=0):
    n = draw(st.integers(min_value=min_size, max_value=12))
    base_ts = draw(timestamps)
    out = []
    for _ in range(n):
        ts = base_ts + draw(st.integers(min_value=-10_000, max_value=10_000))
        out.append(Record(None, ts, draw(maybe_bytes), draw(maybe_bytes), draw(headers_st)))
    return out


def with_offsets(records, base_offset):
    return [Record(base_offset + i, r.timestamp, r.key, r.value, r.headers) for i, r in enumerate(records)]


# --- helpers to forge batches -------------------------------------------------------------------

def forge(payload: bytes, count: int, *, codec: int = 0, attributes: int | None = None, base_offset: int = 0,
          crc: bool = True) -> bytes:
    """A v2 batch around ``payload`` (already compressed if ``codec``), with a correct CRC unless told."""
    attrs = codec if attributes is None else attributes
    out = bytearray(BATCH_OVERHEAD + len(payload))
    struct.pack_into(">qiibIhiqqqhii", out, 0, base_offset, len(out) - 12, -1, 2, 0, attrs, max(count - 1, 0),
                     1000, 1000, -1, -1, -1, count)
    out[BATCH_OVERHEAD:] = payload
    if crc:
        struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


def fix_crc(batch: bytes | bytearray) -> bytes:
    b = bytearray(batch)
    struct.pack_into(">I", b, 17, crc32c(bytes(b[21:])))
    return bytes(b)


def varint_bytes(raw: int) -> bytes:
    """Unsigned (already zigzagged) varint, for forging odd encodings."""
    out = bytearray()
    while raw > 0x7F:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def raw_record(body: bytes) -> bytes:
    return encode_varint(len(body)) + body


# --- round trips --------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(records=record_lists(), codec=st.sampled_from(CODECS), base_offset=st.integers(0, 2**40),
       pid=st.integers(-1, 2**40), epoch=st.integers(-1, 32767), seq=st.integers(-1, 2**31 - 1),
       transactional=st.booleans(), leader_epoch=st.integers(-1, 2**31 - 1))
def test_round_trip(records, codec, base_offset, pid, epoch, seq, transactional, leader_epoch):
    buf = build_batch(records, base_offset=base_offset, compression=codec, producer_id=pid, producer_epoch=epoch,
                      base_sequence=seq, transactional=transactional, partition_leader_epoch=leader_epoch)
    b = decode_batch(buf)
    assert b.records == with_offsets(records, base_offset)
    assert b.base_offset == base_offset
    assert b.record_count == len(records)
    assert b.last_offset_delta == max(len(records) - 1, 0)
    assert b.producer_id == pid and b.producer_epoch == epoch and b.base_sequence == seq
    assert b.partition_leader_epoch == leader_epoch
    assert b.is_transactional == transactional and not b.is_control
    assert b.compression == codec and b.timestamp_type == 0 and b.magic == 2
    assert b.size == len(buf)
    if records:
        assert b.base_timestamp == records[0].timestamp
        assert b.max_timestamp == max(r.timestamp for r in records)
    # header views agree
    h = read_batch_header(buf)
    assert h == b.header and batch_crc_ok(buf, 0, h.size)
    # re-encoding the decoded records gives identical bytes
    again = build_batch(b.records, base_offset=base_offset, compression=codec, producer_id=pid,
                        producer_epoch=epoch, base_sequence=seq, transactional=transactional,
                        partition_leader_epoch=leader_epoch)
    assert decode_batch(again).records == b.records
    if codec in (0, 1, 2, 4):  # deterministic encoders: bytes identical
        assert again == buf


def test_tuple_forms_and_offsets():
    buf = build_batch([(b"k", b"v"), (None, b"v2", [("h", None)]), (7, 123, b"k3", None, [])],
                      base_offset=5, base_timestamp=100)
    b = decode_batch(buf)
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in b] == [
        (5, 100, b"k", b"v", []), (6, 100, None, b"v2", [("h", None)]), (7, 123, b"k3", None, [])]
    assert b.last_offset == 7 and b.next_offset == 8
    # offset gaps (as compaction leaves them) are kept
    buf = build_batch([Record(10, 1, b"a", b"1"), Record(14, 2, b"b", b"2")], base_offset=10)
    b = decode_batch(buf)
    assert [r.offset for r in b] == [10, 14] and b.last_offset_delta == 4
    with pytest.raises(ValueError):
        build_batch([Record(3, 1, None, None)], base_offset=10)
    with pytest.raises(TypeError):
        build_batch([(1, 2, 3, 4)])


def test_empty_batch():
    buf = build_batch([], base_offset=42)
    b = decode_batch(buf)
    assert b.records == [] and b.record_count == 0 and b.base_offset == 42 and b.base_timestamp == -1


def test_log_append_time_uses_max_timestamp():
    recs = [Record(None, 10, b"a", b"1"), Record(None, 20, b"b", b"2")]
    b = decode_batch(build_batch(recs, timestamp_type=1, max_timestamp=999))
    assert b.timestamp_type == 1 and b.max_timestamp == 999
    assert [r.timestamp for r in b] == [999, 999]   # Kafka: every record of a LogAppendTime batch has maxTimestamp


def test_base_offset_patch_keeps_crc():
    buf = bytearray(build_batch([(b"k", b"v")] * 3, compression=3))
    set_base_offset(buf, 0, 1000)
    b = decode_batch(buf)
    assert [r.offset for r in b] == [1000, 1001, 1002]


@settings(max_examples=50, deadline=None)
@given(commit=st.booleans(), pid=st.integers(0, 2**40), epoch=st.integers(0, 32767),
       coord=st.integers(-1, 2**31 - 1), base_offset=st.integers(0, 2**40))
def test_control_batch_round_trip(commit, pid, epoch, coord, base_offset):
    buf = build_control_batch(commit, pid, epoch, coord, base_offset=base_offset, timestamp=1234)
    b = decode_batch(buf)
    assert b.is_control and b.is_transactional
    assert b.producer_id == pid and b.producer_epoch == epoch and b.base_sequence == -1
    assert len(b.records) == 1 and b.records[0].offset == base_offset and b.records[0].timestamp == 1234
    assert parse_control_record(b.records[0]) == (CONTROL_COMMIT if commit else CONTROL_ABORT, coord)


def test_control_record_parse_errors():
    good_value = struct.pack(">hi", 0, 5)
    assert parse_control_record(Record(0, 0, struct.pack(">hh", 0, 2), b"whatever")) == (2, None)
    # newer versions of the key/value with extra bytes are accepted, as Kafka does
    assert parse_control_record(Record(0, 0, struct.pack(">hhh", 1, 1, 9), good_value + b"xx")) == (1, 5)
    for key, value in [(None, good_value), (b"\x00\x00\x00", good_value), (struct.pack(">hh", -1, 0), good_value),
                       (struct.pack(">hh", 0, 1), None), (struct.pack(">hh", 0, 0), b"\x00\x00\x00"),
                       (struct.pack(">hh", 0, 0), struct.pack(">hi", -3, 1))]:
        with pytest.raises(DecodeError):
            parse_control_record(Record(0, 0, key, value))


def test_decode_batches_and_iter_headers():
    a = build_batch([(b"a", b"1"), (b"b", b"2")], base_offset=0)
    b = build_batch([(b"c", b"3")], base_offset=2, compression=4)
    c = build_control_batch(False, 9, 0, 1, base_offset=3)
    whole = a + b + c
    batches = decode_batches(whole)
    assert [x.base_offset for x in batches] == [0, 2, 3]
    assert [r.key for x in batches for r in x] == [b"a", b"b", b"c", b"\x00\x00\x00\x00"]
    assert [(pos, h.record_count) for pos, h in iter_batch_headers(whole)] == [(0, 2), (len(a), 1),
                                                                                (len(a) + len(b), 1)]
    # a trailing partial batch (at any cut) is ignored, as consumers do with a fetch cut at max bytes
    for cut in range(1, len(c)):
        assert len(decode_batches(whole[:-cut])) == 2
        assert len(list(iter_batch_headers(whole[:-cut]))) == 2
        with pytest.raises(DecodeError):
            list(iter_batch_headers(whole[:-cut], allow_partial=False))
    assert decode_batches(b"") == []
    assert decode_batches(memoryview(whole))[1].records[0].value == b"3"
    assert decode_batches(bytearray(whole))[0].records[1].value == b"2"


# --- cross-checks with kafka-python and aiokafka ------------------------------------------------

class _SnappyShim:
    """python-snappy's interface over cramjam, so kafka-python's own xerial code runs without extra packages."""

    @staticmethod
    def compress(data):
        return bytes(cramjam.snappy.compress_raw(bytes(data)))

    @staticmethod
    def decompress(data):
        return bytes(cramjam.snappy.decompress_raw(bytes(data)))


@pytest.fixture(scope="module")
def kafka_python():
    """kafka-python with its codec hooks pointed at cramjam (it would otherwise need python-snappy, lz4 and
    zstandard installed). Its record framing, xerial framing and CRC code are its own."""
    import kafka.codec
    import kafka.record.default_records as dr
    import kafka.record.legacy_records as lr

    def lz4_encode(data):
        return bytes(cramjam.lz4.compress(bytes(data)))

    def lz4_decode(data):
        return bytes(cramjam.lz4.decompress(bytes(data)))

    def zstd_encode(data):
        return bytes(cramjam.zstd.compress(bytes(data)))

    def zstd_decode(data):
        return bytes(cramjam.zstd.decompress(bytes(data)))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kafka.codec, "snappy", _SnappyShim)
        mp.setattr(kafka.codec, "lz4", object())
        mp.setattr(kafka.codec, "zstd", object())
        for mod in (dr, lr):
            mp.setattr(mod, "lz4_encode", lz4_encode, raising=False)
            mp.setattr(mod, "lz4_decode", lz4_decode, raising=False)
        mp.setattr(dr, "zstd_encode", zstd_encode)
        mp.setattr(dr, "zstd_decode", zstd_decode)
        yield dr


def _sample_records(n=40):
    recs = []
    for i in range(n):
        key = None if i % 7 == 3 else b"key-%d" % i
        value = None if i % 11 == 5 else (b"value-%d-" % i) * (i % 13 + 1)
        headers = [("h%d" % j, None if j == 1 else b"hv%d" % (i * j)) for j in range(i % 3)]
        recs.append(Record(i, 1_700_000_000_000 + i * 3 - (i % 4) * 5, key, value, headers))
    return recs


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_builds_we_parse(kafka_python, codec):
    recs = _sample_records()
    builder = kafka_python.DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False,
                                                     producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                                     batch_size=1 << 20)
    builder.set_producer_state(77, 3, 1000, True)
    for r in recs:
        assert builder.append(r.offset, r.timestamp, r.key, r.value, r.headers) is not None
    buf = bytes(builder.build())
    b = decode_batch(buf)
    assert b.compression == codec
    assert b.records == recs
    assert (b.producer_id, b.producer_epoch, b.base_sequence, b.is_transactional) == (77, 3, 1000, True)
    assert b.crc == kafka_python.DefaultRecordBatch(buf).crc
    if codec == 2:  # kafka-python, like the Java client, writes xerial-framed snappy
        assert buf[BATCH_OVERHEAD:BATCH_OVERHEAD + 8] == b"\x82SNAPPY\x00"


def _aiokafka_builders():
    from aiokafka.record import default_records as adr
    out = [pytest.param(adr.DefaultRecordBatchBuilder, adr.DefaultRecordBatch, id="aiokafka")]
    if adr.DefaultRecordBatchBuilder is not adr._DefaultRecordBatchBuilderPy:
        out.append(pytest.param(adr._DefaultRecordBatchBuilderPy, adr._DefaultRecordBatchPy, id="aiokafka-py"))
    return out


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(("builder_cls", "batch_cls"), _aiokafka_builders())
def test_aiokafka_builds_we_parse(builder_cls, batch_cls, codec):
    recs = _sample_records()
    builder = builder_cls(magic=2, compression_type=codec, is_transactional=0, producer_id=-1,
                          producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for r in recs:
        assert builder.append(r.offset, r.timestamp, r.key, r.value, r.headers) is not None
    buf = bytes(builder.build())
    b = decode_batch(buf)
    assert b.compression == codec
    assert b.records == recs
    assert b.crc == batch_cls(buf).crc


def _check_their_batch(batch, ours: bytes, recs, codec):
    assert batch.validate_crc()
    assert batch.compression_type == codec
    assert batch.base_offset == 100
    got = [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in batch]
    assert got == [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in with_offsets(recs, 100)]
    assert batch.crc == read_batch_header(ours).crc


@pytest.mark.parametrize("codec", CODECS)
def test_we_build_kafka_python_parses(kafka_python, codec):
    from kafka.record import MemoryRecords

    recs = _sample_records()
    ours = build_batch(recs, base_offset=0, compression=codec, producer_id=5, producer_epoch=1, base_sequence=0)
    buf = bytearray(ours)
    set_base_offset(buf, 0, 100)
    mr = MemoryRecords(bytes(buf))
    batch = mr.next_batch()
    _check_their_batch(batch, ours, recs, codec)
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (5, 1, 0)
    assert mr.next_batch() is None


@pytest.mark.parametrize("codec", CODECS)
def test_we_build_aiokafka_parses(codec):
    from aiokafka.record.memory_records import MemoryRecords

    recs = _sample_records()
    ours = build_batch(recs, base_offset=0, compression=codec)
    buf = bytearray(ours)
    set_base_offset(buf, 0, 100)
    mr = MemoryRecords(bytes(buf))
    _check_their_batch(mr.next_batch(), ours, recs, codec)
    assert mr.next_batch() is None


def test_control_batch_seen_by_kafka_python(kafka_python):
    buf = build_control_batch(True, 12, 2, 7, base_offset=50, timestamp=5)
    batch = kafka_python.DefaultRecordBatch(buf)
    assert batch.validate_crc() and batch.is_control_batch and batch.is_transactional
    (rec,) = list(batch)
    assert rec.offset == 50 and rec.type == 1 and rec.commit
    from aiokafka.record.memory_records import MemoryRecords
    abatch = MemoryRecords(build_control_batch(False, 12, 2, 7)).next_batch()
    assert abatch.is_control_batch and abatch.validate_crc()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=record_lists(min_size=1), codec=st.sampled_from(CODECS))
def test_hypothesis_cross_check_aiokafka(records, codec):
    from aiokafka.record.memory_records import MemoryRecords

    ours = build_batch(records, compression=codec)
    batch = MemoryRecords(ours).next_batch()
    assert batch.validate_crc()
    got = [Record(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in batch]
    assert got == with_offsets(records, 0)


# --- snappy: xerial and raw ---------------------------------------------------------------------

def test_snappy_xerial_by_hand():
    payload = b"".join(encode_record(i, 0, b"k%d" % i, bytes(200) + b"v%d" % i) for i in range(400))
    assert len(payload) > 2 * compression.XERIAL_BLOCK_SIZE
    blocks = [payload[i:i + 10_000] for i in range(0, len(payload), 10_000)]
    framed = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1) + b"".join(
        struct.pack(">i", len(c)) + c for c in (bytes(cramjam.snappy.compress_raw(b)) for b in blocks))
    assert compression.is_xerial(framed)
    assert compression.decompress(2, framed) == payload
    b = decode_batch(forge(framed, 400, codec=2))
    assert [r.key for r in b] == [b"k%d" % i for i in range(400)]
    # redpanda writes the version ints little-endian: only the magic is checked, as kafka-python does
    odd = framed[:8] + struct.pack("<ii", 1, 1) + framed[16:]
    assert compression.decompress(2, odd) == payload
    # header only: no blocks, empty output
    assert compression.decompress(2, compression.XERIAL_HEADER) == b""
    # what we write is xerial, in 32 KiB blocks, and it reads back
    ours = compression.compress(2, payload)
    assert ours.startswith(compression.XERIAL_HEADER)
    assert compression.decompress(2, ours) == payload


def test_snappy_raw_accepted():
    payload = b"".join(encode_record(i, i, None, b"x" * 50) for i in range(30))
    raw = bytes(cramjam.snappy.compress_raw(payload))
    assert not compression.is_xerial(raw)
    assert len(decode_batch(forge(raw, 30, codec=2)).records) == 30
    assert compression.compress(2, payload, snappy_xerial=False) == raw


@pytest.mark.parametrize("bad", [
    compression.XERIAL_HEADER + b"\x00\x00",                                        # short block length
    compression.XERIAL_HEADER + struct.pack(">i", -5) + b"abc",                     # negative block length
    compression.XERIAL_HEADER + struct.pack(">i", 100) + b"abc",                    # block beyond the data
    compression.XERIAL_HEADER + struct.pack(">i", 3) + b"\x05ab",                   # corrupt block
    b"\xff\xff\xff\xff\x7f",                                                        # raw, absurd length
    b"\x05abc",                                                                     # raw, corrupt
    b"",
])
def test_snappy_malformed(bad):
    with pytest.raises(DecodeError):
        compression.decompress(2, bad)


# --- compression bounds (bombs) -----------------------------------------------------------------

def _stream_compress(codec: int, total: int) -> bytes:
    chunk = bytes(1 << 20)
    if codec == 1:
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        return b"".join([c.compress(chunk) for _ in range(total >> 20)] + [c.flush()])
    c = {3: cramjam.lz4, 4: cramjam.zstd}[codec].Compressor()
    for _ in range(total >> 20):
        c.compress(chunk)
    return bytes(c.finish())


@pytest.mark.parametrize(("codec", "total"), [(4, 1 << 30), (3, 128 << 20), (1, 128 << 20)])
def test_decompression_bomb_bounded(codec, total):
    bomb = _stream_compress(codec, total)
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="limit"):
            compression.decompress(codec, bomb)
        with pytest.raises(DecodeError, match="limit"):
            decode_batch(forge(bomb, 1, codec=codec))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * compression.MAX_DECOMPRESSED_SIZE + (8 << 20)


def test_snappy_bomb_bounded():
    # raw snappy declares its size up front: refused before allocating
    raw = bytes(cramjam.snappy.compress_raw(bytes(8 << 20)))
    with pytest.raises(DecodeError, match="limit"):
        compression.decompress(2, raw, max_size=1 << 20)
    # xerial: many small blocks adding up beyond the limit
    framed = compression.snappy_xerial_compress(bytes(4 << 20))
    with pytest.raises(DecodeError, match="limit"):
        compression.decompress(2, framed, max_size=1 << 20)
    assert len(compression.decompress(2, framed, max_size=4 << 20)) == 4 << 20


@pytest.mark.parametrize("codec", CODECS)
def test_limit_is_exact(codec):
    data = bytes(range(256)) * 4096   # 1 MiB
    z = compression.compress(codec, data)
    assert compression.decompress(codec, z, max_size=len(data)) == data
    with pytest.raises(DecodeError):
        compression.decompress(codec, z, max_size=len(data) - 1)
    batch = build_batch([(None, data)], compression=codec)
    if codec:
        with pytest.raises(DecodeError):
            decode_batch(batch, max_decompressed_size=1000)
    assert decode_batch(batch).records[0].value == data


@pytest.mark.parametrize("codec", [1, 3, 4])
def test_corrupt_compressed_payload(codec):
    payload = b"".join(encode_record(i, 0, None, b"abc" * 30) for i in range(20))
    z = compression.compress(codec, payload)
    for bad in (z[: len(z) // 2], z[:4] + bytes(len(z) - 4), b"garbage!", b"", z + b"trailing"):
        with pytest.raises(DecodeError):
            compression.decompress(codec, bad)
        with pytest.raises(DecodeError):
            decode_batch(forge(bad, 20, codec=codec))


def test_gzip_concatenated_members():
    a, b = b"first " * 100, b"second " * 100
    assert compression.decompress(1, compression.compress(1, a) + compression.compress(1, b)) == a + b


def test_unknown_codec():
    for codec in (5, 6, 7):
        with pytest.raises(DecodeError, match="codec"):
            decode_batch(forge(b"whatever", 1, codec=codec))


# --- malformed batches --------------------------------------------------------------------------

GOOD = build_batch([(b"key", b"value", [("h", b"v")]), (None, None)], base_offset=3)


def test_header_errors():
    with pytest.raises(DecodeError, match="RecordBatch"):
        decode_batch(GOOD[:60])                                  # truncated header
    with pytest.raises(DecodeError, match="batchLength"):
        decode_batch(GOOD[:-1])                                  # length beyond buffer
    short = bytearray(GOOD)
    struct.pack_into(">i", short, 8, 20)
    with pytest.raises(DecodeError, match="batchLength"):
        decode_batch(short)                                      # length shorter than the header
    with pytest.raises(DecodeError, match="batchLength"):
        decode_batches(bytes(short))
    magic = bytearray(GOOD)
    magic[16] = 1
    with pytest.raises(DecodeError, match="magic"):
        decode_batch(magic)
    crc = bytearray(GOOD)
    crc[17] ^= 1
    with pytest.raises(DecodeError, match="crc"):
        decode_batch(crc)
    assert decode_batch(crc, verify_crc=False).records[1].key is None
    with pytest.raises(DecodeError):
        decode_batch(GOOD, pos=len(GOOD) - 10)


def _record_body(key=b"\x02k", value=b"\x02v", headers=b"\x00", ts=b"\x00", off=b"\x00", attrs=b"\x00"):
    return attrs + ts + off + key + value + headers


@pytest.mark.parametrize(("name", "payload", "count", "field"), [
    ("count more than records", raw_record(_record_body()), 2, "RecordBatch.recordCount"),
    ("count fewer than records", raw_record(_record_body()) * 2, 1, "RecordBatch.recordCount"),
    ("count huge", raw_record(_record_body()), 2**31 - 1, "RecordBatch.recordCount"),
    ("count negative", raw_record(_record_body()), -1, "RecordBatch.recordCount"),
    ("record length beyond batch", encode_varint(100) + _record_body(), 1, "Record.length"),
    ("record length negative", encode_varint(-3) + _record_body(), 1, "Record.length"),
    ("record length too short", encode_varint(3) + bytes(10), 1, "Record.length"),
    ("record longer than fields", raw_record(_record_body() + b"xx"), 1, "Record.length"),
    ("key length -2", raw_record(_record_body(key=encode_varint(-2))), 1, "Record.key"),
    ("key length beyond record", raw_record(_record_body(key=encode_varint(50) + b"k")), 1, "Record.key"),
    ("value length -7", raw_record(_record_body(value=encode_varint(-7))), 1, "Record.value"),
    ("varint 6 bytes", raw_record(_record_body(off=b"\x80\x80\x80\x80\x80\x00")), 1, "Record.offsetDelta"),
    ("varint beyond 32 bits", raw_record(_record_body(off=b"\xff\xff\xff\xff\x7f")), 1, "Record.offsetDelta"),
    ("varlong 11 bytes", raw_record(_record_body(ts=b"\x80" * 10 + b"\x00")), 1, "Record.timestampDelta"),
    ("varint truncated", encode_varint(6) + b"\x00" + b"\x80" * 5 + bytes(10), 1, "Record.timestampDelta"),
    ("record length varint truncated", raw_record(_record_body(value=encode_varint(20) + bytes(20))) + b"\x80", 2,
     "Record.length"),
    ("header count huge", raw_record(_record_body(headers=encode_varint(2**30))), 1, "Record.headers"),
    ("header count negative", raw_record(_record_body(headers=encode_varint(-1))), 1, "Record.headers"),
    ("header key null", raw_record(_record_body(headers=b"\x02\x01\x01")), 1, "Record.headerKey"),
    ("header key bad utf8", raw_record(_record_body(headers=b"\x02\x04\xff\xfe\x01")), 1, "Record.headerKey"),
    ("header value -2", raw_record(_record_body(headers=b"\x02\x02h\x03")), 1, "Record.headerValue"),
    ("header count beyond bytes", raw_record(_record_body(headers=b"\x04\x02h\x01")), 1, "Record.headers"),
    ("header truncated", raw_record(_record_body(headers=b"\x04\x02h\x01\x02")), 1, "Record.headerKey"),
])
def test_malformed_records(name, payload, count, field):
    for codec in (0, 4):
        batch = forge(compression.compress(codec, payload), count, codec=codec)
        with pytest.raises(DecodeError) as e:
            decode_batch(batch)
        assert e.value.field == field, (name, str(e.value))


def test_forge_helper_makes_valid_batches():
    payload = raw_record(_record_body()) + raw_record(_record_body(key=b"\x01", headers=b"\x02\x02h\x01"))
    b = decode_batch(forge(payload, 2))
    assert [(r.key, r.value, r.headers) for r in b] == [(b"k", b"v", []), (None, b"v", [("h", None)])]


# --- fuzzing: only DecodeError ever escapes -----------------------------------------------------

SEEDS = [
    GOOD,
    build_batch(_sample_records(6), compression=1),
    build_batch(_sample_records(6), compression=2),
    build_batch(_sample_records(6), compression=3),
    build_batch(_sample_records(6), compression=4),
    build_control_batch(True, 1, 0, 0),
]


def _decode_quietly(buf, verify_crc):
    try:
        for pos, h in iter_batch_headers(buf):
            batch_crc_ok(buf, pos, h.size)
        for b in decode_batches(buf, verify_crc=verify_crc, max_decompressed_size=1 << 20):
            assert isinstance(b, RecordBatch)
            for r in b.records:
                if b.is_control:
                    try:
                        parse_control_record(r)
                    except DecodeError:
                        pass
    except DecodeError:
        pass


@settings(max_examples=400, deadline=None)
@given(seed=st.sampled_from(SEEDS), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                   min_size=1, max_size=6),
       cut=st.integers(0, 10**6), recrc=st.booleans())
def test_fuzz_mutations(seed, edits, cut, recrc):
    buf = bytearray(seed)
    for where, value in edits:
        buf[where % len(buf)] = value
    buf = buf[: len(buf) - cut % 8] if cut % 3 else buf[: cut % (len(buf) + 1)]
    if recrc and len(buf) >= BATCH_OVERHEAD:
        buf = bytearray(fix_crc(buf))
    _decode_quietly(bytes(buf), verify_crc=True)
    _decode_quietly(bytes(buf), verify_crc=False)


@settings(max_examples=400, deadline=None)
@given(payload=st.binary(max_size=200), count=st.integers(-3, 40), codec=st.sampled_from(CODECS))
def test_fuzz_record_payload(payload, count, codec):
    """Random bytes as the (possibly compressed) records section of a batch with a valid CRC."""
    _decode_quietly(forge(payload, count), verify_crc=True)
    if codec:
        _decode_quietly(forge(compression.compress(codec, payload), count, codec=codec), verify_crc=True)
        _decode_quietly(forge(payload, count, codec=codec), verify_crc=True)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), codec=st.sampled_from(CODECS))
def test_fuzz_decompress(data, codec):
    try:
        compression.decompress(codec, data, max_size=1 << 20)
    except DecodeError:
        pass
    try:
        compression.decompress(codec, compression.XERIAL_HEADER + data, max_size=1 << 20)
    except DecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_fuzz_legacy(data):
    try:
        decode_legacy_message_set(data)
    except DecodeError:
        pass


# --- legacy message sets (magic 0 and 1) ------------------------------------------------------

# magic 0 with lz4 is left out: Kafka 0.8-0.9 wrote a broken LZ4 frame-header checksum there, which
# decoding would need xxhash to repair; reading such old data is not supported.
@pytest.mark.parametrize(("magic", "codec"), [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3)])
def test_legacy_message_sets(kafka_python, magic, codec):
    from kafka.record.legacy_records import LegacyRecordBatchBuilder

    builder = LegacyRecordBatchBuilder(magic=magic, compression_type=codec, batch_size=1 << 20)
    expected = []
    for i in range(10):
        key = None if i == 4 else b"k%d" % i
        value = None if i == 6 else b"value %d" % i * 5
        ts = 1_600_000_000_000 + i
        builder.append(i, ts if magic else None, key, value)
        expected.append(Record(i, ts if magic else -1, key, value, []))
    buf = bytes(builder.build())
    if magic == 1 and codec:
        # inner offsets are relative; the wrapper carries the absolute offset of the last inner message,
        # which the broker assigns (the producer leaves 0 there). The CRC does not cover the offset.
        wrapper = bytearray(buf)
        struct.pack_into(">q", wrapper, 0, 1009)
        assert [r.offset for r in decode_legacy_message_set(bytes(wrapper))] == list(range(1000, 1010))
        struct.pack_into(">q", wrapper, 0, 9)
        buf = bytes(wrapper)
    assert decode_legacy_message_set(buf) == expected
    # trailing partial message ignored
    assert decode_legacy_message_set(buf + buf[:20]) == expected
    bad = bytearray(buf)
    bad[-1] ^= 0xFF
    with pytest.raises(DecodeError, match="crc"):
        decode_legacy_message_set(bytes(bad))


def test_legacy_malformed():
    msg = struct.pack(">bb", 1, 0) + struct.pack(">q", 5) + struct.pack(">i", -1) + struct.pack(">i", 3) + b"abc"
    good = struct.pack(">qiI", 0, len(msg) + 4, zlib.crc32(msg)) + msg
    assert decode_legacy_message_set(good) == [Record(0, 5, None, b"abc", [])]
    for bad_msg, field in [
        (msg[:-7] + struct.pack(">i", 9) + b"abc", "Message.value"),
        (msg[:-7] + struct.pack(">i", -2), "Message.value"),
        (msg + b"x", "Message.messageSize"),
        (struct.pack(">bb", 2, 0) + msg[2:], "Message.magic"),
        (struct.pack(">bb", 1, 5) + msg[2:], "Message.attributes"),   # codec 5
    ]:
        forged = struct.pack(">qiI", 0, len(bad_msg) + 4, zlib.crc32(bad_msg)) + bad_msg
        with pytest.raises(DecodeError) as e:
            decode_legacy_message_set(forged)
        assert e.value.field == field
    with pytest.raises(DecodeError, match="messageSize"):
        decode_legacy_message_set(struct.pack(">qi", 0, 3) + b"abc")


# --- validate_records: the produce path's record check ----------------------------------------


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])
def test_validate_records_accepts_what_build_batch_writes(codec):
    from wire.records import validate_records

    recs = [(b"k%d" % i, None if i == 3 else b"v" * i, [("h", b"x"), ("n", None)] if i % 2 else [])
            for i in range(20)]
    assert validate_records(build_batch(recs, compression=codec)) == 20


def _with_crc(b: bytearray) -> bytes:
    from crc32c import crc32c
    struct.pack_into(">I", b, 17, crc32c(bytes(b[21:])))
    return bytes(b)


@pytest.mark.parametrize("corrupt", ["count", "offset-delta", "header-count", "record-length"])
def test_validate_records_refuses_what_kafka_refuses(corrupt):
    from wire.records import validate_records

    b = bytearray(build_batch([(b"k", b"v"), (b"k2", b"v2")]))
    if corrupt == "count":
        struct.pack_into(">i", b, 57, 3)
    elif corrupt == "offset-delta":
        # first record: length, attributes, timestampDelta(0), offsetDelta(0) -> make it 1 (zigzag 2)
        b[61 + 3] = 2
    elif corrupt == "header-count":
        b[-1] = 1                                   # last record's header count: zigzag 1 = -1
    else:
        b[61] = 100                                 # first record's length far too long (zigzag 50)
    with pytest.raises(DecodeError):
        validate_records(_with_crc(b))
