"""Produce (key 0): validate and append the producers' record batches, answer per partition."""

from __future__ import annotations

import logging

from kafkapy.handlers import api
from storage.errors import StorageError
from wire.messages import produce_response as R
from wire.messages.error_codes import ErrorCode

log = logging.getLogger("kafkapy.produce")


def _partition(index: int, code: int, base_offset: int = -1, log_append_time: int = -1, log_start_offset: int = -1,
               message: str | None = None) -> R.PartitionProduceResponse:
    return R.PartitionProduceResponse(index=index, error_code=int(code), base_offset=base_offset,
                                      log_append_time_ms=log_append_time, log_start_offset=log_start_offset,
                                      record_errors=[], error_message=message)


@api("Produce", 3, 11)
async def handle(ctx, req):
    broker = ctx.broker
    v = ctx.api_version
    acks = req.acks
    topics = []
    appended = False
    for td in req.topic_data:
        name = td.name
        topic = broker.topics.get(name)
        parts = []
        for pd in td.partition_data:
            idx = pd.index
            if acks not in (0, 1, -1):
                parts.append(_partition(idx, ErrorCode.INVALID_REQUIRED_ACKS))
                continue
            if topic is None or not 0 <= idx < topic.partitions:
                parts.append(_partition(idx, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            if topic.internal:
                parts.append(_partition(idx, ErrorCode.INVALID_TOPIC_EXCEPTION,
                                        message=f"Cannot append to internal topic {name}"))
                continue
            records = pd.records
            if records is None or len(records) == 0:
                parts.append(_partition(idx, ErrorCode.INVALID_RECORD if v >= 8 else ErrorCode.CORRUPT_MESSAGE,
                                        message="no record batches"))
                continue
            lg = broker.logs.get(name, idx)
            check = broker.producer_check
            try:
                if check is not None:
                    dup = check(name, idx, records, req.transactional_id)
                    if dup is not None:   # a retried batch that is already in the log: answer with its offsets
                        parts.append(_partition(idx, 0, dup, -1, lg.log_start_offset))
                        continue
                info = lg.append(records, leader_epoch=topic.leader_epoch)
            except StorageError as e:
                code = e.error_code
                if code == ErrorCode.INVALID_RECORD and v < 8:
                    code = ErrorCode.CORRUPT_MESSAGE
                log.info("produce to %s-%d from %s rejected: %s %s", name, idx, ctx.client_id, e.error_name, e)
                parts.append(_partition(idx, code, message=str(e) if v >= 8 else None))
                continue
            if check is not None:
                broker.producer_appended(name, idx, lg, info)
            appended = True
            parts.append(_partition(idx, 0, info.base_offset, info.log_append_time, info.log_start_offset))
        topics.append(R.TopicProduceResponse(name=name, partition_responses=parts))
    if appended:
        broker.notify_appended()
    if acks == 0:
        return None
    return R.ProduceResponse(responses=topics, throttle_time_ms=0)
