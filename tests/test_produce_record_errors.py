"""KIP-467 per-record produce errors: which records of a batch Kafka's LogValidator refuses (keys on compacted
topics, CreateTime timestamps), the error the batch fails with, and the Produce response that carries them
(record_errors and error_message from v8 on; the error code alone before)."""

from __future__ import annotations

import pytest
from test_admin_handlers import SET, TOPIC, RunningBroker, incremental, topic_name

from storage import InvalidRecordError, InvalidTimestampError, LogConfig, MemoryPartitionLog, PartitionLog
from storage.config import LONG_MAX
from storage.validation import record_problems
from wire.messages import produce_request as PQ
from wire.messages.error_codes import ErrorCode
from wire.records import Record, build_batch, decode_batches, read_batch_header

NOW = 1_700_000_000_000
HOUR = 3_600_000
KEY_MSG = "Compacted topic cannot accept message without key in topic partition t-0."


class Clock:
    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture(params=["memory", "disk"])
def make_log(request, tmp_path):
    def make(**config):
        cfg = LogConfig(**config)
        if request.param == "memory":
            return MemoryPartitionLog(cfg, topic="t", partition=0, clock=Clock())
        return PartitionLog.open(str(tmp_path / "t-0"), cfg, clock=Clock(), fsync=False)
    return make


def keyed_every_tenth_missing(n=100, **kw):
    return build_batch([(None if i % 10 == 0 else b"k%d" % i, b"v%d" % i) for i in range(n)], **kw)


def problems(batch, *, compacted=False, log_append_time=False, now=NOW, before=LONG_MAX, after=LONG_MAX):
    return [(p.index, p.message, p.error_code) for p in record_problems(
        batch, 0, read_batch_header(batch, 0), compacted=compacted, log_append_time=log_append_time, now=now,
        before_max_ms=before, after_max_ms=after, topic_partition="t-0")]


# ------------------------------------------------------------------------------------------ detection


@pytest.mark.parametrize("compression", [0, 1, 3, 4])
def test_keyless_records_of_a_compacted_topic_are_found_by_index(compression):
    found = problems(keyed_every_tenth_missing(compression=compression), compacted=True)
    assert found == [(i, KEY_MSG, ErrorCode.INVALID_RECORD) for i in range(0, 100, 10)]


def test_keyless_records_are_fine_on_a_delete_topic():
    assert problems(keyed_every_tenth_missing()) == []


def test_create_time_outside_before_and_after_bounds():
    ts = [NOW - HOUR - 1, NOW - HOUR, NOW, NOW + 60_000, NOW + 60_001]
    batch = build_batch([Record(None, t, b"k", b"v") for t in ts], base_offset=0)
    found = problems(batch, before=HOUR, after=60_000)
    bounds = f"[{NOW - HOUR}, {NOW + 60_000}]"
    assert found == [
        (0, f"Timestamp {NOW - HOUR - 1} of message with offset 0 is out of range. The timestamp should be within "
            f"{bounds}", ErrorCode.INVALID_TIMESTAMP),
        (4, f"Timestamp {NOW + 60_001} of message with offset 4 is out of range. The timestamp should be within "
            f"{bounds}", ErrorCode.INVALID_TIMESTAMP),
    ]


def test_timestamp_bound_message_wraps_like_a_java_long():
    # after.max.ms left at Long.MAX_VALUE: Kafka prints now + Long.MAX_VALUE as the (wrapped) long it is
    found = problems(build_batch([Record(None, NOW - HOUR - 1, b"k", b"v")]), before=HOUR)
    assert found[0][1].endswith(f"within [{NOW - HOUR}, {NOW + LONG_MAX - (1 << 64)}]")


def test_no_timestamp_and_log_append_time_topics_are_not_range_checked():
    batch = build_batch([Record(None, 5, b"k", b"v"), Record(None, -1, b"k", b"v")], base_timestamp=5)
    assert [i for i, *_ in problems(batch, before=HOUR, after=HOUR)] == [0]   # -1 (no timestamp) passes
    assert problems(batch, before=HOUR, after=HOUR, log_append_time=True) == []


def test_producer_may_not_mark_a_batch_log_append_time():
    batch = build_batch([(b"k", b"value")], timestamp_type=1, max_timestamp=NOW)
    assert problems(batch) == []    # CreateTime topic: the batch's max timestamp is the record's and is in range
    assert problems(batch, log_append_time=True) == [
        (0, f"Invalid timestamp type in message DefaultRecord(offset=0, timestamp={NOW}, key=1 bytes, value=5 bytes)"
            ". Producer should not set timestamp type to LogAppendTime.", ErrorCode.INVALID_TIMESTAMP)]


def test_key_error_hides_the_timestamp_error_of_the_same_record():
    batch = build_batch([Record(None, 0, None, b"v"), Record(None, 0, b"k", b"v")])
    found = problems(batch, compacted=True, before=HOUR)
    assert [(i, code) for i, _, code in found] == [(0, ErrorCode.INVALID_RECORD), (1, ErrorCode.INVALID_TIMESTAMP)]


# ------------------------------------------------------------------------------------------ append


def test_append_rejects_the_whole_batch_with_every_record_error(make_log):
    lg = make_log(cleanup_policy="compact")
    with pytest.raises(InvalidRecordError) as err:
        lg.append(keyed_every_tenth_missing(), leader_epoch=0)
    e = err.value
    assert e.record_errors == [(i, KEY_MSG) for i in range(0, 100, 10)]
    first3 = ", ".join(f"RecordError(batchIndex={i}, message='{KEY_MSG}')" for i in (0, 10, 20))
    assert str(e) == ("One or more records have been rejected due to 10 record errors in total, and only showing "
                      f"the first three errors at most: [{first3}]")
    assert lg.log_end_offset == 0
    lg.append(build_batch([(b"k", b"v")]), leader_epoch=0)
    assert lg.log_end_offset == 1


def test_append_timestamp_errors_win_over_key_errors(make_log):
    lg = make_log(cleanup_policy="compact", message_timestamp_difference_max_ms=HOUR)
    batch = build_batch([Record(None, NOW, None, b"v"), Record(None, NOW + HOUR + 1, b"k", b"v")])
    with pytest.raises(InvalidTimestampError) as err:
        lg.append(batch, leader_epoch=0)
    assert str(err.value) == "One or more records have been rejected due to invalid timestamp"
    assert [i for i, _ in err.value.record_errors] == [0, 1]
    assert err.value.error_code == ErrorCode.INVALID_TIMESTAMP
    assert lg.log_end_offset == 0


def test_difference_max_ms_applies_only_to_a_bound_left_at_its_default(make_log):
    lg = make_log(message_timestamp_difference_max_ms=HOUR, message_timestamp_after_max_ms=10 * HOUR)
    lg.append(build_batch([Record(None, NOW + 5 * HOUR, b"k", b"v")]), leader_epoch=0)   # after: 10 h
    with pytest.raises(InvalidTimestampError):
        lg.append(build_batch([Record(None, NOW - 2 * HOUR, b"k", b"v")]), leader_epoch=0)  # before: 1 h
    assert lg.log_end_offset == 1


def test_log_append_time_topic_overwrites_instead_of_checking(make_log):
    lg = make_log(message_timestamp_type="LogAppendTime", message_timestamp_before_max_ms=1)
    info = lg.append(build_batch([Record(None, 0, b"k", b"v")]), leader_epoch=0)
    assert info.log_append_time == NOW
    [b] = decode_batches(bytes(lg.read(0, 1 << 20)))
    assert b.records[0].timestamp == NOW


def test_log_config_reads_the_kafka_names():
    cfg = LogConfig.from_kafka({"message.timestamp.before.max.ms": "10", "message.timestamp.after.max.ms": str(LONG_MAX),
                                "message.timestamp.difference.max.ms": "20"})
    assert (cfg.timestamp_before_max_ms, cfg.timestamp_after_max_ms) == (10, 20)


# ------------------------------------------------------------------------------------------ Produce handler


@pytest.fixture
def rb():
    b = RunningBroker(storage="memory")
    yield b
    b.close()


def produce(rb, topic, batch, version):
    body = PQ.ProduceRequest(transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
        PQ.TopicProduceData(name=topic, partition_data=[PQ.PartitionProduceData(index=0, records=batch)])])
    return rb.request("Produce", version, body).responses[0].partition_responses[0]


@pytest.mark.parametrize("version", range(3, 12))
def test_produce_answers_record_errors_from_v8(rb, version):
    t = topic_name()
    rb.create_topic(t, configs={"cleanup.policy": "compact"})
    ok = produce(rb, t, build_batch([(b"k", b"v")]), version)
    assert ok.error_code == 0 and ok.base_offset == 0
    r = produce(rb, t, keyed_every_tenth_missing(), version)
    msg = f"Compacted topic cannot accept message without key in topic partition {t}-0."
    assert r.base_offset == -1
    if version >= 8:
        assert r.error_code == ErrorCode.INVALID_RECORD
        assert [(e.batch_index, e.batch_index_error_message) for e in r.record_errors] == \
            [(i, msg) for i in range(0, 100, 10)]
        assert r.error_message.startswith("One or more records have been rejected due to 10 record errors in total")
        assert r.log_start_offset == 0
    else:   # no such fields before v8, and INVALID_RECORD is unknown there: CORRUPT_MESSAGE
        assert r.error_code == ErrorCode.CORRUPT_MESSAGE
        assert not r.record_errors and r.error_message is None
    assert produce(rb, t, build_batch([(b"k2", b"v")]), version).base_offset == 1   # nothing of the batch stayed


@pytest.mark.parametrize("version", [7, 8, 11])
def test_produce_answers_invalid_timestamp(rb, version):
    t = topic_name()
    rb.create_topic(t, configs={"message.timestamp.before.max.ms": str(HOUR)})
    r = produce(rb, t, build_batch([Record(None, 1000, b"k", b"v"), Record(None, None, b"k", b"v")],
                                   base_timestamp=1000), version)
    assert r.error_code == ErrorCode.INVALID_TIMESTAMP
    if version >= 8:
        assert [e.batch_index for e in r.record_errors] == [0, 1]
        assert r.record_errors[0].batch_index_error_message.startswith("Timestamp 1000 of message with offset 0 is "
                                                                       "out of range. The timestamp should be within [")
        assert r.error_message == "One or more records have been rejected due to invalid timestamp"
    else:
        assert not r.record_errors and r.error_message is None


def test_altered_timestamp_bound_takes_effect(rb):
    t = topic_name()
    rb.create_topic(t)
    old = build_batch([Record(None, 1000, b"k", b"v")])
    assert produce(rb, t, old, 9).error_code == 0
    r = incremental(rb, 1, TOPIC, t, [("message.timestamp.difference.max.ms", SET, str(HOUR))])
    assert r.error_code == 0, r.error_message
    assert produce(rb, t, old, 9).error_code == ErrorCode.INVALID_TIMESTAMP


def test_other_produce_errors_carry_no_error_message(rb):
    """Kafka fills error_message only for record errors; and the log start offset for every append error but
    the corrupt / too large / storage ones (ReplicaManager.appendToLocalLog)."""
    t = topic_name()
    rb.create_topic(t)
    produce(rb, t, build_batch([(b"k", b"v")]), 9)
    rb.call_sync(rb.broker.logs.get(t, 0).delete_records_before, 1)
    lso = rb.call_sync(lambda: rb.broker.logs.get(t, 0).log_start_offset)
    assert lso == 1
    good = build_batch([(b"k", b"v")])
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    cases = {
        "control batch": (build_batch([(b"k", b"v")], control=True), ErrorCode.INVALID_RECORD, lso),
        "CRC": (bytes(corrupt), ErrorCode.CORRUPT_MESSAGE, -1),
        "two batches": (good + good, ErrorCode.INVALID_RECORD, -1),
    }
    for name, (records, code, expected_lso) in cases.items():
        r = produce(rb, t, records, 9)
        assert (r.error_code, r.error_message, r.record_errors, r.log_start_offset) == \
            (code, None, [], expected_lso), name
    r = produce(rb, "__consumer_offsets", good, 9)
    assert (r.error_code, r.error_message) in ((ErrorCode.INVALID_TOPIC_EXCEPTION, None),
                                               (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None))
