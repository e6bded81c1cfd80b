"""Per-record checks of a batch a leader appends, as Kafka's LogValidator makes them (KIP-467).

Kafka looks at every record of a batch (``validateRecord``): on a compacted topic each record needs a key
(``validateKey``), and on a CreateTime topic each timestamp must lie within ``message.timestamp.before.max.ms``
before and ``message.timestamp.after.max.ms`` after the broker's clock (``validateTimestamp``; a producer may not
mark a batch LogAppendTime). A record that fails is not an error on its own: Kafka collects (record index, message)
for the whole batch and then rejects the batch (``processRecordErrors``) with

- INVALID_TIMESTAMP, "One or more records have been rejected due to invalid timestamp", when any of them is a
  timestamp problem,
- otherwise INVALID_RECORD, "One or more records have been rejected due to N record errors in total, and only
  showing the first three errors at most: [RecordError(batchIndex=.., message='..'), ...]",

and the Produce response (v8+) carries the indexes and messages as ``record_errors`` and that text as
``error_message`` (ReplicaManager: only a RecordValidationException has a "custom" error message).

Java does the timestamp arithmetic in 64-bit longs; so do we (``_long``), so the bounds in the messages (for example
``now + Long.MAX_VALUE``, which wraps) read as Kafka's do.
"""

from __future__ import annotations

from typing import NamedTuple

from wire.records import CONTROL_FLAG, TIMESTAMP_TYPE_MASK, BatchHeader, decode_batch

from .config import LONG_MAX
from .errors import InvalidRecordError, InvalidTimestampError, StorageError

INVALID_RECORD = InvalidRecordError.error_code
INVALID_TIMESTAMP = InvalidTimestampError.error_code
NO_TIMESTAMP = -1


class RecordProblem(NamedTuple):
    index: int          # position of the record in its batch (Kafka's batchIndex)
    message: str        # Kafka's RecordError message
    error_code: int     # INVALID_RECORD or INVALID_TIMESTAMP (Kafka's ApiRecordError.apiError)


def _long(x: int) -> int:
    """x as a Java long (two's complement wrap-around)."""
    return ((x + (1 << 63)) & ((1 << 64) - 1)) - (1 << 63)


def _record_str(offset: int, timestamp: int, key, value) -> str:
    """Java's DefaultRecord.toString."""
    return (f"DefaultRecord(offset={offset}, timestamp={timestamp}, key={0 if key is None else len(key)} bytes, "
            f"value={0 if value is None else len(value)} bytes)")


def record_problems(buf, pos: int, header: BatchHeader, *, compacted: bool, log_append_time: bool, now: int,
                    before_max_ms: int, after_max_ms: int, topic_partition: str) -> list[RecordProblem]:
    """The records of the v2 batch at ``pos`` that Kafka's LogValidator would refuse, in batch order (empty when
    the batch is fine). ``log_append_time``: the topic's message.timestamp.type is LogAppendTime. Decodes the
    batch only when a check applies; raises wire.errors.DecodeError when it does not decode."""
    if header.attributes & CONTROL_FLAG:
        return []   # only coordinators write control batches; their records always have a key and a current time
    batch_log_append_time = bool(header.attributes & TIMESTAMP_TYPE_MASK)
    check_time = not log_append_time and (before_max_ms != LONG_MAX or after_max_ms != LONG_MAX)
    if not (compacted or check_time or batch_log_append_time):
        return []   # nothing can fail: the default bounds (Long.MAX_VALUE) accept every timestamp
    batch = decode_batch(buf, pos, verify_crc=False)
    problems: list[RecordProblem] = []
    lower, upper = _long(now - before_max_ms), _long(now + after_max_ms)
    for index, record in enumerate(batch.records):
        if compacted and record.key is None:
            problems.append(RecordProblem(index, "Compacted topic cannot accept message without key in topic "
                                                 f"partition {topic_partition}.", INVALID_RECORD))
            continue
        timestamp = _long(record.timestamp)
        if not log_append_time and timestamp != NO_TIMESTAMP:
            diff = _long(now - timestamp)
            if diff > before_max_ms or _long(-diff) > after_max_ms:
                problems.append(RecordProblem(
                    index, f"Timestamp {timestamp} of message with offset {record.offset} is out of range. The "
                           f"timestamp should be within [{lower}, {upper}]", INVALID_TIMESTAMP))
        elif batch_log_append_time:
            shown = _record_str(record.offset, timestamp, record.key, record.value)
            problems.append(RecordProblem(index, f"Invalid timestamp type in message {shown}. Producer should not set "
                                                 "timestamp type to LogAppendTime.", INVALID_TIMESTAMP))
    return problems


def record_validation_error(problems: list[RecordProblem]) -> StorageError:
    """Kafka's processRecordErrors: the error that rejects the whole batch, carrying every record error."""
    errors = [(p.index, p.message) for p in problems]
    if any(p.error_code == INVALID_TIMESTAMP for p in problems):
        return InvalidTimestampError("One or more records have been rejected due to invalid timestamp", errors)
    shown = ", ".join(f"RecordError(batchIndex={i}, message='{m}')" for i, m in errors[:3])
    return InvalidRecordError(f"One or more records have been rejected due to {len(errors)} record errors in total, "
                              f"and only showing the first three errors at most: [{shown}]", errors)
