"""Clean failure modes of the storage: a full disk answers KAFKA_STORAGE_ERROR for the partitions it affects and
the broker keeps serving the others; a corrupt batch in an old (flushed, not re-scanned) segment is found when
read, reported, and its partition fenced instead of served wrong; a data dir of an incompatible format is refused
at start with a clear message."""

from __future__ import annotations

import json
import sys
import time

import pytest
from confluent_kafka import Producer

from harness import BrokerError, BrokerProcess
from inprocess import connect, request
from wire.messages import fetch_request as FQ
from wire.messages import produce_request as PQ
from wire.messages.error_codes import ErrorCode
from wire.records import build_batch, iter_batch_headers

KAFKA_STORAGE_ERROR = ErrorCode.KAFKA_STORAGE_ERROR

# runs kafkapy with RLIMIT_FSIZE: no file of the broker may grow past the limit (EFBIG, like a full disk)
_LIMITED = """
import resource, runpy, sys
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv[0] = "kafkapy"
runpy.run_module("kafkapy", run_name="__main__")
"""


def _produce(s, topic, partition=0, value_size=100, corr=1):
    batch = build_batch([(None, b"x" * value_size)])
    body = PQ.ProduceRequest(transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
        PQ.TopicProduceData(name=topic, partition_data=[PQ.PartitionProduceData(index=partition, records=batch)])])
    return request(s, 0, 9, body, correlation_id=corr).responses[0].partition_responses[0]


def _fetch(s, topic, offset, partition=0, max_bytes=1 << 20):
    body = FQ.FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=max_bytes, isolation_level=0,
                           session_id=0, session_epoch=-1, topics=[FQ.FetchTopic(topic=topic, partitions=[
                               FQ.FetchPartition(partition=partition, current_leader_epoch=-1, fetch_offset=offset,
                                                 log_start_offset=-1, partition_max_bytes=max_bytes)])],
                           forgotten_topics_data=[], rack_id="")
    return request(s, 1, 12, body).responses[0].partitions[0]


def _create(s, name, configs=None):
    from wire import protocol
    mod = protocol.API[19].request
    r = request(s, 19, 7, mod.MESSAGE(topics=[mod.CreatableTopic(
        name=name, num_partitions=1, replication_factor=1,
        configs=[mod.CreatableTopicConfig(name=k, value=v) for k, v in (configs or {}).items()])], timeout_ms=5000))
    assert r.topics[0].error_code == 0, r.topics[0]


def test_full_disk_fails_only_the_affected_partition(tmp_path):
    wrapper = tmp_path / "limited_kafkapy.py"
    wrapper.write_text(_LIMITED)
    limit = 2 * 1024 * 1024
    cmd = (f"{sys.executable} {wrapper} {limit} --host 127.0.0.1 --port {{port}} --data-dir {{data_dir}} "
           "--storage disk")
    b = BrokerProcess(storage="disk", cmd=cmd).start(tmp_path / "data")
    try:
        s = connect(b.bootstrap)
        _create(s, "full")
        _create(s, "fine")
        codes = []
        for i in range(40):                       # 40 x 100 KB into one file that may not pass 2 MiB
            codes.append(_produce(s, "full", value_size=100_000, corr=i + 10).error_code)
        assert codes[0] == 0 and KAFKA_STORAGE_ERROR in codes, codes
        first_bad = codes.index(KAFKA_STORAGE_ERROR)
        assert all(c == 0 for c in codes[:first_bad]) and all(c == KAFKA_STORAGE_ERROR for c in codes[first_bad:])
        # the failed partition answers KAFKA_STORAGE_ERROR to reads too (offline, as Kafka takes the dir offline)
        assert _fetch(s, "full", 0).error_code == KAFKA_STORAGE_ERROR
        # the others are served: raw protocol and a real client
        assert _produce(s, "fine", corr=99).error_code == 0
        fetched = _fetch(s, "fine", 0)
        assert fetched.error_code == 0 and fetched.records
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
        delivered = []
        for _ in range(20):
            p.produce("fine", b"v", partition=0, on_delivery=lambda e, m: delivered.append(e))
        assert p.flush(10) == 0 and delivered == [None] * 20
        s.close()
        assert b.is_running()
        assert b.log_contains("offline")
        # nothing half-written: the stored batches of the full partition are whole and intact
        data = (b.data_dir / "full-0" / "00000000000000000000.log").read_bytes()
        assert sum(h.size for _, h in iter_batch_headers(data)) == len(data)
        assert len(list(iter_batch_headers(data))) == first_bad
    finally:
        b.stop()


def test_corrupt_batch_in_an_old_segment_fences_the_partition(broker_factory):
    b = broker_factory("disk")
    s = connect(b.bootstrap)
    _create(s, "rot", {"segment.bytes": "4096"})
    _create(s, "healthy")
    for i in range(40):                            # ~1.2 KB batches: several segments
        assert _produce(s, "rot", value_size=1200, corr=i + 1).error_code == 0
    assert _produce(s, "healthy").error_code == 0
    s.close()
    b.stop()                                        # clean shutdown: old segments are trusted, not re-scanned
    logs = sorted((b.data_dir / "rot-0").glob("*.log"))
    assert len(logs) >= 4
    victim = logs[1]
    data = bytearray(victim.read_bytes())
    batches = list(iter_batch_headers(data))
    pos, h = batches[1]
    data[pos + h.size - 10] ^= 0xFF                  # one flipped bit-pattern inside a record value
    victim.write_bytes(bytes(data))
    bad_offset = h.base_offset
    b.start(b.data_dir, port=b.port)
    s = connect(b.bootstrap)
    # the segment before the corruption is served normally
    first = _fetch(s, "rot", 0, max_bytes=1000)
    assert first.error_code == 0 and first.records
    # reading into the corrupt batch: an error, not wrong data ...
    r = _fetch(s, "rot", bad_offset)
    assert r.error_code == KAFKA_STORAGE_ERROR and not r.records
    # ... and from then on the partition is fenced, for reads anywhere and for writes
    assert _fetch(s, "rot", 0).error_code == KAFKA_STORAGE_ERROR
    assert _produce(s, "rot", corr=77).error_code == KAFKA_STORAGE_ERROR
    # other partitions are unaffected
    assert _produce(s, "healthy", corr=78).error_code == 0
    assert _fetch(s, "healthy", 0).error_code == 0
    s.close()
    assert b.log_contains("CRC32C mismatch")
    tail = b.log_tail(20000)
    assert "offline" in tail and "CRC32C mismatch" in tail and victim.name in tail


@pytest.mark.parametrize(("file", "content", "message"), [
    ("meta.properties", "version=7\nnode.id=1\ncluster.id=abc\n", "unsupported meta.properties version"),
    ("kafkapy-topics.json", json.dumps({"format": 99, "topics": []}), "metadata format 99"),
])
def test_incompatible_data_dir_is_refused(tmp_path, file, content, message):
    d = tmp_path / "data"
    d.mkdir()
    if file != "meta.properties":
        (d / "meta.properties").write_text("version=1\nnode.id=1\ncluster.id=abc\n")
    (d / file).write_text(content)
    b = BrokerProcess(storage="disk", start_timeout=20)
    started = time.monotonic()
    with pytest.raises(BrokerError) as err:
        b.start(d)
    assert time.monotonic() - started < 15
    assert "exited with code 2" in str(err.value)
    assert message in str(err.value)
    assert (d / file).read_text() == content        # left as it was
