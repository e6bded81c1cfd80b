"""Fuzzing a live broker over sockets: mutated valid request frames (hypothesis) and random bytes, thousands of
bad connections, while a confluent-kafka producer keeps producing. The broker must close only the bad
connections, keep serving the good client without an error, leak no connection task, and not grow in memory.
Plus hostile record batches on the produce path, answered with Kafka's error codes."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import socket
import struct
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "compat_tests"))

from inprocess import InProcessBroker, connect, request  # noqa: E402
from wire import protocol  # noqa: E402
from wire.messages import fetch_request as FQ  # noqa: E402
from wire.messages import produce_request as PQ  # noqa: E402
from wire.messages.error_codes import ErrorCode  # noqa: E402
from wire.records import build_batch, decode_batch  # noqa: E402

confluent_kafka = pytest.importorskip("confluent_kafka")

FUZZ_TOPIC = "fuzz"
GOOD_TOPIC = "good"
N_MUTATED = int(os.environ.get("KAFKAPY_FUZZ_EXAMPLES", "1000"))
N_RANDOM = int(os.environ.get("KAFKAPY_FUZZ_RANDOM", "1000"))


def _seed_frames() -> list[bytes]:
    """Real request frames of several apis and versions, as clients send them."""
    msg = lambda key: protocol.API[key].request.MESSAGE  # noqa: E731
    batch = build_batch([(b"k", b"v" * 20), (None, b"w")])
    produce = PQ.ProduceRequest(transactional_id=None, acks=-1, timeout_ms=1000, topic_data=[
        PQ.TopicProduceData(name=FUZZ_TOPIC, partition_data=[PQ.PartitionProduceData(index=0, records=batch)])])
    fetch = FQ.FetchRequest(replica_id=-1, max_wait_ms=100, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
                            session_id=0, session_epoch=-1, topics=[FQ.FetchTopic(topic=FUZZ_TOPIC, partitions=[
                                FQ.FetchPartition(partition=0, current_leader_epoch=-1, fetch_offset=0,
                                                  log_start_offset=-1, partition_max_bytes=1 << 20)])],
                            forgotten_topics_data=[], rack_id="")
    md_mod = protocol.API[3].request
    metadata = md_mod.MESSAGE(topics=[md_mod.MetadataRequestTopic(name=FUZZ_TOPIC)],
                              allow_auto_topic_creation=False)
    api_versions = msg(18)(client_software_name="fuzz", client_software_version="1.0")
    frames = [
        protocol.encode_request(18, 0, 1, "fuzz", msg(18)()),
        protocol.encode_request(18, 3, 1, "fuzz", api_versions),
        protocol.encode_request(3, 1, 2, "fuzz", md_mod.MESSAGE(topics=[md_mod.MetadataRequestTopic(name=FUZZ_TOPIC)])),
        protocol.encode_request(3, 12, 2, "fuzz", metadata),
        protocol.encode_request(0, 3, 3, "fuzz", produce),
        protocol.encode_request(0, 9, 3, "fuzz", produce),
        protocol.encode_request(1, 4, 4, "fuzz", fetch),
        protocol.encode_request(1, 12, 4, "fuzz", fetch),
    ]
    for key, version in ((2, 1), (2, 7), (8, 8), (9, 8), (10, 4), (11, 5), (12, 4), (13, 4), (14, 5), (15, 5),
                         (16, 4), (19, 7), (22, 4), (32, 4), (36, 1), (37, 3), (42, 2), (60, 1), (61, 0)):
        try:
            frames.append(protocol.encode_request(key, version, 5, "fuzz", msg(key)()))
        except Exception:  # noqa: BLE001 - an api the codec cannot default-construct at that version
            pass
    return frames


SEEDS = _seed_frames()


def _with_size(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


@st.composite
def mutated_frames(draw) -> bytes:
    seed = bytearray(draw(st.sampled_from(SEEDS))[4:])   # without its size prefix
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "int16", "int32"]))
        if not seed:
            break
        i = draw(st.integers(0, len(seed) - 1))
        if kind == "flip":
            seed[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            seed[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
        elif kind == "insert":
            seed[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del seed[i:i + draw(st.integers(1, 8))]
        elif kind == "int16" and i + 2 <= len(seed):
            struct.pack_into(">h", seed, i, draw(st.sampled_from([-1, 0, 0x7FFF, -0x8000, 1000])))
        elif kind == "int32" and i + 4 <= len(seed):
            struct.pack_into(">i", seed, i, draw(st.sampled_from([-1, 0, 0x7FFFFFFF, -0x80000000, 1 << 24])))
    tail = draw(st.sampled_from(["exact", "truncate", "extend", "lie"]))
    body = bytes(seed)
    if tail == "exact":
        return _with_size(body)
    if tail == "truncate":
        return _with_size(body)[:draw(st.integers(0, len(body) + 3))]
    if tail == "extend":
        return _with_size(body) + draw(st.binary(max_size=64))
    return struct.pack(">i", draw(st.sampled_from([len(body) + 1, len(body) - 1, 0, 1 << 20]))) + body


def _poke(bootstrap: str, payload: bytes, read_for: float = 0.05) -> None:
    """One bad connection: send ``payload``, read whatever comes back for a moment, close."""
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    try:
        s.sendall(payload)
        s.settimeout(read_for)
        try:
            while s.recv(65536):
                pass
        except (socket.timeout, ConnectionResetError):
            pass
    except (BrokenPipeError, ConnectionResetError):
        pass                                   # the broker closed first: fine
    finally:
        s.close()


class GoodProducer:
    """confluent-kafka producing acks=all in a thread; every delivery must succeed, offsets contiguous."""

    def __init__(self, bootstrap: str):
        self.p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                                           "enable.idempotence": True})
        self.errors: list = []
        self.offsets: list[int] = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _cb(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.offsets.append(msg.offset())

    def _run(self):
        i = 0
        while not self.stop.is_set():
            self.p.produce(GOOD_TOPIC, value=str(i).encode(), partition=0, on_delivery=self._cb)
            i += 1
            self.p.poll(0.01)
        self.p.flush(15)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(30)
        del self.p


@pytest.fixture(scope="module")
def fuzz_broker():
    with InProcessBroker({"auto.create.topics.enable": "false", "connections.max.idle.ms": "5000"}) as b:
        b.run(b.broker.create_topic, FUZZ_TOPIC, 2)
        b.run(b.broker.create_topic, GOOD_TOPIC, 1)
        yield b


def _filtered_size(snapshot) -> int:
    """Heap held by the broker's code and the event loop (not storage/: the records the good producer and the
    mutated-but-valid Produce requests append are data, not a leak)."""
    keep = [tracemalloc.Filter(True, f"*{os.sep}{d}{os.sep}*") for d in ("kafkapy", "wire", "asyncio")]
    return sum(s.size for s in snapshot.filter_traces(keep).statistics("filename"))


def test_broker_survives_mutated_frames_and_random_bytes(fuzz_broker):
    b = fuzz_broker
    loop_tasks = lambda: len(asyncio.all_tasks(b.loop))  # noqa: E731
    assert not b.server.connections
    tasks_before = b.run(loop_tasks)
    tried = {"mutated": 0, "random": 0}
    tracemalloc.start(1)
    try:
        with GoodProducer(b.bootstrap) as good:
            time.sleep(0.5)

            @settings(max_examples=N_MUTATED, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(mutated_frames())
            def fuzz(frame):
                _poke(b.bootstrap, frame)
                tried["mutated"] += 1

            rnd = random.Random(7)

            def random_bytes(n):
                for _ in range(n):
                    kind = rnd.random()
                    if kind < 0.4:
                        payload = rnd.randbytes(rnd.randint(0, 300))
                    elif kind < 0.8:   # a plausible size prefix, then garbage
                        body = rnd.randbytes(rnd.randint(0, 300))
                        payload = _with_size(body)
                    else:              # a real header, garbage body
                        seed = rnd.choice(SEEDS)
                        cut = rnd.randint(12, len(seed))
                        payload = _with_size(seed[4:cut] + rnd.randbytes(rnd.randint(0, 200)))
                    _poke(b.bootstrap, payload, read_for=0.02)
                    tried["random"] += 1

            random_bytes(N_RANDOM // 4)               # warm up: caches, interned names, first allocations
            gc.collect()
            warm_snap = tracemalloc.take_snapshot()
            warm = _filtered_size(warm_snap)
            fuzz()
            random_bytes(N_RANDOM - N_RANDOM // 4)
            # the good client is still served promptly, on a fresh connection too
            s = connect(b.bootstrap, 5)
            started = time.monotonic()
            assert request(s, 3, 12, protocol.API[3].request.MESSAGE(topics=None)).brokers
            assert time.monotonic() - started < 1.0
            s.close()
        time.sleep(0.5)
        gc.collect()
        after_snap = tracemalloc.take_snapshot()
        after = _filtered_size(after_snap)
        top = after_snap.compare_to(warm_snap, "lineno")[:6]
    finally:
        tracemalloc.stop()
    assert not good.errors, good.errors[:3]
    assert len(good.offsets) > 50 and good.offsets == list(range(len(good.offsets)))
    # no connection task left behind once every client is gone
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (b.server.connections or b.server._tasks):
        time.sleep(0.05)
    assert not b.server.connections and not b.server._tasks
    assert b.run(loop_tasks) <= tasks_before
    growth = after - warm
    print("largest heap differences:\n" + "\n".join(str(t) for t in top))
    print(f"fuzz: {tried['mutated']} mutated frames, {tried['random']} random payloads; "
          f"broker-side heap growth after warm-up {growth / 1e6:.2f} MB; {len(good.offsets)} good records acked")
    assert tried["mutated"] >= N_MUTATED // 2
    assert growth < 2_000_000, f"broker heap grew by {growth} bytes across {sum(tried.values())} bad connections"


# ---------------------------------------------------------------------------------------- hostile record batches

def _produce(bootstrap, records: bytes, topic=FUZZ_TOPIC, version=9):
    s = connect(bootstrap)
    try:
        body = PQ.ProduceRequest(transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
            PQ.TopicProduceData(name=topic, partition_data=[PQ.PartitionProduceData(index=1, records=records)])])
        return request(s, 0, version, body).responses[0].partition_responses[0]
    finally:
        s.close()


def _recrc(batch: bytearray) -> bytes:
    from crc32c import crc32c
    struct.pack_into(">I", batch, 17, crc32c(bytes(batch[21:])))
    return bytes(batch)


def test_hostile_batches_get_kafka_error_codes(fuzz_broker):
    b = fuzz_broker
    good = build_batch([(b"k", b"v"), (b"k2", b"v2")])
    assert _produce(b.bootstrap, good).error_code == 0
    end_before = b.broker.partition_log(FUZZ_TOPIC, 1).log_end_offset

    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0x55
    assert _produce(b.bootstrap, bytes(bad_crc)).error_code == ErrorCode.CORRUPT_MESSAGE

    wrong = bytearray(good)                       # batchLength one short: the CRC no longer matches
    struct.pack_into(">i", wrong, 8, len(good) - 12 - 1)
    assert _produce(b.bootstrap, bytes(wrong)).error_code == ErrorCode.CORRUPT_MESSAGE

    lying = bytearray(good)                       # recordCount 5 with lastOffsetDelta 1 (CRC recomputed)
    struct.pack_into(">i", lying, 57, 5)
    assert _produce(b.bootstrap, _recrc(lying)).error_code == ErrorCode.INVALID_RECORD

    negative = bytearray(good)                    # lastOffsetDelta -1
    struct.pack_into(">i", negative, 23, -1)
    assert _produce(b.bootstrap, _recrc(negative)).error_code == ErrorCode.INVALID_RECORD

    for records in (good[:40], good + b"\x00" * 20, good[:-1]):   # cut short, trailing garbage
        code = _produce(b.bootstrap, records).error_code
        assert code in (ErrorCode.CORRUPT_MESSAGE, ErrorCode.INVALID_RECORD), code

    assert b.broker.partition_log(FUZZ_TOPIC, 1).log_end_offset == end_before, "nothing bad was stored"


def test_compressed_bomb_is_refused_with_bounded_memory(fuzz_broker):
    """A zstd batch whose records would inflate to 1 GiB: the produce path decompresses to validate the records
    (as Kafka's LogValidator does) but only up to wire.compression.MAX_DECOMPRESSED_SIZE, then answers
    INVALID_RECORD; nothing is stored and memory stays bounded by that limit."""
    import cramjam

    from wire import DecodeError
    from wire.compression import MAX_DECOMPRESSED_SIZE

    raw_size = 1 << 30
    comp = bytes(cramjam.zstd.compress(b"\x00" * (64 << 20)))   # 64 MiB of zeros: a few KB compressed
    # repeat the frame: zstd decompresses concatenated frames, so 16 frames inflate to 1 GiB
    bomb_payload = comp * (raw_size // (64 << 20))
    assert len(bomb_payload) < 1 << 20
    batch = bytearray(build_batch([(None, b"x")], compression=4))
    header = batch[:61]
    new = header + bomb_payload
    struct.pack_into(">i", new, 8, len(new) - 12)
    bomb = _recrc(new)
    b = fuzz_broker
    end_before = b.broker.partition_log(FUZZ_TOPIC, 1).log_end_offset
    tracemalloc.start(1)
    try:
        r = _produce(b.bootstrap, bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.error_code == ErrorCode.INVALID_RECORD
    assert peak < 2 * MAX_DECOMPRESSED_SIZE + (16 << 20), f"the produce path allocated {peak} bytes"
    assert b.broker.partition_log(FUZZ_TOPIC, 1).log_end_offset == end_before
    with pytest.raises(DecodeError):
        decode_batch(bomb, 0, max_decompressed_size=16 << 20)


# Record-level checks (Kafka's LogValidator iterating the records: "Incorrect declared batch size", "Found invalid
# number of record headers"); the CRC is recomputed so only the records are wrong.

def _lying_count() -> bytes:
    one = bytearray(build_batch([(b"k", b"v")]))
    struct.pack_into(">i", one, 23, 1)            # lastOffsetDelta 1
    struct.pack_into(">i", one, 57, 2)            # recordCount 2, one record present
    return _recrc(one)


def _negative_header_count() -> bytes:
    one = bytearray(build_batch([(b"k", b"v")]))
    assert one[-1] == 0                           # the record's header count (varint 0) is its last byte
    one[-1] = 1                                   # zigzag 1 = -1 headers
    return _recrc(one)


@pytest.mark.parametrize("make", [_lying_count, _negative_header_count],
                         ids=["record-count-lies", "negative-header-count"])
def test_kafka_rejects_these_batches_with_invalid_record(fuzz_broker, make):
    assert _produce(fuzz_broker.bootstrap, make()).error_code == ErrorCode.INVALID_RECORD


@pytest.mark.parametrize("make", [
    lambda: build_batch([(None, b"a")]) + build_batch([(None, b"b")]),    # two batches in one partition
    lambda: build_batch([(None, b"a")])[:-1],                            # only a partial batch
], ids=["two-batches", "partial-batch-only"])
def test_one_complete_batch_per_partition(fuzz_broker, make):
    """ProduceRequest.validateRecords: from v3 on exactly one complete v2 batch per partition, else INVALID_RECORD."""
    assert _produce(fuzz_broker.bootstrap, make()).error_code == ErrorCode.INVALID_RECORD


def test_trailing_bytes_shorter_than_a_batch_are_dropped(fuzz_broker):
    """Kafka's batch iterator stops at bytes too short to be a batch, and its log trims them: the batch is stored,
    the trailing bytes are not."""
    lg = fuzz_broker.broker.partition_log(FUZZ_TOPIC, 1)
    before = lg.size_in_bytes
    batch = build_batch([(None, b"kept")])
    r = _produce(fuzz_broker.bootstrap, batch + b"\x00" * 5)
    assert r.error_code == 0
    assert lg.size_in_bytes == before + len(batch)
    assert [rec.value for rec in decode_batch(bytes(lg.read(r.base_offset, 1 << 16)), 0).records] == [b"kept"]
