"""Produce (key 0): validate and append the producers' record batches, answer per partition.

error_message (v8+) is filled as Kafka fills it: only for a batch refused because of some of its records
(ReplicaManager's RecordValidationException, KIP-467), together with record_errors; every other partition error is
the code alone (Kafka's LogAppendResult.errorMessage is null unless hasCustomErrorMessage). Our messages go to the
log instead.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING

from kafkapy import acl
from kafkapy.handlers import api
from kafkapy.partition import AppendOrigin
from storage.errors import (
    CorruptRecordError,
    KafkaStorageError,
    RecordBatchTooLargeError,
    RecordTooLargeError,
    StorageError,
)
from wire.messages import produce_response as R
from wire.messages.error_codes import ErrorCode
from wire.records import ATTRIBUTES_OFFSET, BATCH_OVERHEAD, COMPRESSION_MASK, LOG_OVERHEAD, MAGIC_OFFSET

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import produce_request
    from wire.messages import produce_response

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")

log = logging.getLogger("kafkapy.produce")


def _partition(index: int, code: int, base_offset: int = -1, log_append_time: int = -1, log_start_offset: int = -1,
               message: str | None = None, record_errors=()) -> R.PartitionProduceResponse:
    """``record_errors``: [(batch index, message)] (KIP-467, v8+; older versions do not have the field and the
    encoder leaves it out)."""
    return R.PartitionProduceResponse(index=index, error_code=int(code), base_offset=base_offset,
                                      log_append_time_ms=log_append_time, log_start_offset=log_start_offset,
                                      record_errors=[R.BatchIndexAndErrorMessage(batch_index=i,
                                                                                 batch_index_error_message=m)
                                                     for i, m in record_errors],
                                      error_message=message)


# the exceptions ReplicaManager.appendToLocalLog answers with LogAppendInfo.UNKNOWN_LOG_APPEND_INFO (log start
# offset -1); any other append error carries the partition's log start offset
_NO_LOG_START_OFFSET = (CorruptRecordError, RecordTooLargeError, RecordBatchTooLargeError, KafkaStorageError)

def _not_leader(broker, topic, idx: int, leaders: set[int]) -> R.PartitionProduceResponse:
    leader, epoch, _replicas, _isr, _offline = broker.partition_metadata(topic, idx)
    answer = _partition(idx, ErrorCode.NOT_LEADER_OR_FOLLOWER)
    answer.current_leader = R.LeaderIdAndEpoch(leader_id=leader, leader_epoch=epoch)
    if leader >= 0:
        leaders.add(leader)
    return answer


MIN_BATCH_SIZE = 14   # Kafka's LegacyRecord.RECORD_OVERHEAD_V0: a smaller size field is a corrupt batch


def validate_records(version: int, records):
    """Kafka's ProduceRequest.validateRecords, reading batches as its MemoryRecords iterator does: from v3 on,
    exactly one complete record batch of magic 2 per partition (zstd only from v7). Trailing bytes too short to be
    a batch are ignored, and trimmed as Kafka's log trims them. Returns (error code, message, records): error code
    None when the records may go on to storage (which checks the CRC and the batch header)."""
    n = 0 if records is None else len(records)
    first = _I32.unpack_from(records, 8)[0] if n >= LOG_OVERHEAD else None
    if first is not None and first < MIN_BATCH_SIZE:
        return ErrorCode.CORRUPT_MESSAGE, f"Record size {first} is less than the minimum record overhead (14)", records
    if first is None or n < LOG_OVERHEAD + first:
        return ErrorCode.INVALID_RECORD, (f"Produce requests with version {version} must have at least one "
                                          "record batch per partition"), records
    if records[MAGIC_OFFSET] != 2:
        return ErrorCode.INVALID_RECORD, (f"Produce requests with version {version} are only allowed to contain "
                                          "record batches with magic version 2"), records
    end = LOG_OVERHEAD + first
    if version < 7 and end >= BATCH_OVERHEAD and \
            _I16.unpack_from(records, ATTRIBUTES_OFFSET)[0] & COMPRESSION_MASK == 4:
        return ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, (f"Produce requests with version {version} are not allowed "
                                                        "to use ZStandard compression"), records
    rest = n - end
    if rest >= LOG_OVERHEAD:
        second = _I32.unpack_from(records, end + 8)[0]
        if second < MIN_BATCH_SIZE:
            return ErrorCode.CORRUPT_MESSAGE, (f"Record size {second} is less than the minimum record overhead "
                                               "(14)"), records
        if rest >= LOG_OVERHEAD + second:
            return ErrorCode.INVALID_RECORD, (f"Produce requests with version {version} are only allowed to "
                                              "contain exactly one record batch per partition"), records
    if rest:
        records = memoryview(records)[:end]
    return None, None, records


@api("Produce", 3, 11)
async def produce(ctx: RequestContext, req: produce_request.ProduceRequest) -> produce_response.ProduceResponse | None:
    """Version notes: v0-2 (magic 0/1 message sets) are not implemented: from v3 every partition carries exactly one
    magic-2 batch (validate_records); Kafka 4.0 refuses v0-2 as well (KIP-896). zstd before v7 gets
    UNSUPPORTED_COMPRESSION_TYPE; v<8 gets CORRUPT_MESSAGE for INVALID_RECORD; record_errors and error_message are v8+.

    Behaviour: per partition, INVALID_REQUIRED_ACKS for acks outside 0/1/-1, then as KafkaApis WRITE on the
    transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED) and on the topic (TOPIC_AUTHORIZATION_FAILED),
    UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION for internal topics; then Partition.append (verifying
    transactional batches with TransactionCoordinator.partition_in_transaction when this broker coordinates the
    request's transactional id; in a cluster whose coordinator of that id is another broker, no verification, as
    Kafka before KIP-890), a StorageError answering its code.
    acks=0 sends no response.
    """
    broker = ctx.broker
    v = ctx.api_version
    acks = req.acks
    topics = []
    waits = []        # acks=all answers waiting for the high watermark: (answer, partition, offset after the batch)
    leaders: set[int] = set()   # leaders named in NOT_LEADER_OR_FOLLOWER answers (their endpoints go in the answer)
    # KIP-890 part 1 verification only when this broker coordinates the transactional id (see verifier_for)
    verifier = broker.transactions.verifier_for(req.transactional_id)
    txn_denied = req.transactional_id is not None and not acl.allowed(ctx, acl.WRITE, acl.R_TRANSACTIONAL_ID,
                                                                      req.transactional_id)
    for td in req.topic_data:
        name = td.name
        topic = broker.topics.get(name)
        parts = []
        write_denied = not acl.topic_allowed(ctx, acl.WRITE, name)
        for pd in td.partition_data:
            idx = pd.index
            if acks not in (0, 1, -1):
                parts.append(_partition(idx, ErrorCode.INVALID_REQUIRED_ACKS))
                continue
            if txn_denied:
                parts.append(_partition(idx, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
                continue
            if write_denied:
                parts.append(_partition(idx, ErrorCode.TOPIC_AUTHORIZATION_FAILED))
                continue
            if topic is None or not 0 <= idx < topic.partitions:
                parts.append(_partition(idx, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            if topic.internal:
                log.info("produce to %s-%d from %s rejected: Cannot append to internal topic %s", name, idx,
                         ctx.client_id, name)
                parts.append(_partition(idx, ErrorCode.INVALID_TOPIC_EXCEPTION))
                continue
            code, message, records = validate_records(v, pd.records)
            if code is not None:
                if code == ErrorCode.INVALID_RECORD and v < 8:
                    code = ErrorCode.CORRUPT_MESSAGE   # INVALID_RECORD is unknown to clients before Produce v8
                log.info("produce to %s-%d from %s rejected: %s", name, idx, ctx.client_id, message)
                parts.append(_partition(idx, code))   # KafkaApis: PartitionResponse(Errors.forException(e))
                continue
            partition = broker.partition(name, idx)
            if partition is None or not partition.is_leader:
                # KIP-951 (v10+): where the leader is, so the client need not wait for a Metadata round trip
                parts.append(_not_leader(broker, topic, idx, leaders))
                continue
            try:
                info = partition.append(records, AppendOrigin.CLIENT, txn_verifier=verifier, required_acks=acks)
            except StorageError as e:
                code = e.error_code
                if code == ErrorCode.INVALID_RECORD and v < 8:
                    code = ErrorCode.CORRUPT_MESSAGE
                log.info("produce to %s-%d from %s rejected: %s %s", name, idx, ctx.client_id, e.error_name, e)
                # ReplicaManager.appendToLocalLog: the log start offset with every error but the few it expects
                lso = -1 if isinstance(e, _NO_LOG_START_OFFSET) else partition.log.log_start_offset
                if e.record_errors:
                    # KIP-467, as ReplicaManager answers a RecordValidationException: the offending records' indexes
                    # and messages, and the batch-level message
                    parts.append(_partition(idx, code, log_start_offset=lso, message=str(e) if v >= 8 else None,
                                            record_errors=e.record_errors if v >= 8 else ()))
                else:   # ReplicaManager sends no error_message for other errors (hasCustomErrorMessage=false)
                    parts.append(_partition(idx, code, log_start_offset=lso))
                continue
            answer = _partition(idx, 0, info.base_offset, info.log_append_time, info.log_start_offset)
            parts.append(answer)
            if acks == -1:
                done, err = partition.check_enough_replicas_reach_offset(info.last_offset + 1)
                if not done:
                    waits.append((answer, partition, info.last_offset + 1))
                elif err:
                    answer.error_code = int(err)
        topics.append(R.TopicProduceResponse(name=name, partition_responses=parts))
    if waits:
        # acks=all: until the high watermark passes each batch (woken by its moves) or the request's timeout
        codes = await asyncio.gather(*(p.wait_for_high_watermark(offset, req.timeout_ms / 1000)
                                       for _a, p, offset in waits))
        for (answer, _p, _o), code in zip(waits, codes):
            if code:
                answer.error_code = int(code)
    if acks == 0:
        return None
    endpoints = [R.NodeEndpoint(node_id=n, host=h, port=p, rack=r) for n, h, p, r in broker.live_brokers(ctx.connection)
                 if n in leaders] if v >= 10 and leaders else []
    return R.ProduceResponse(responses=topics, throttle_time_ms=0, node_endpoints=endpoints)
