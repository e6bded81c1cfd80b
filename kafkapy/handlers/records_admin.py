"""DeleteRecords (21): move partitions' log start offsets forward (ReplicaManager.deleteRecords)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kafkapy import acl
from kafkapy.handlers import api
from storage.errors import OffsetOutOfRangeError, StorageError
from wire.messages import delete_records_response as R
from wire.messages.error_codes import ErrorCode

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import delete_records_request
    from wire.messages import delete_records_response

log = logging.getLogger("kafkapy.records_admin")

HIGH_WATERMARK = -1          # DeleteRecordsRequest.HIGH_WATERMARK
INVALID_LOW_WATERMARK = -1


def _delete_partition_records(broker, topic_name: str, partition: int, offset: int) -> tuple[int, int]:
    """(error code, low watermark) of one partition, as Partition.deleteRecordsOnLeader answers."""
    topic = broker.topics.get(topic_name)
    if topic is None or not 0 <= partition < topic.partitions:
        return int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), INVALID_LOW_WATERMARK
    leader = broker.partition(topic_name, partition)
    if leader is None or not leader.is_leader:
        return int(ErrorCode.NOT_LEADER_OR_FOLLOWER), INVALID_LOW_WATERMARK
    lg = leader.log
    if topic.internal:
        return int(ErrorCode.INVALID_TOPIC_EXCEPTION), INVALID_LOW_WATERMARK
    if "delete" not in str(broker.effective_topic_configs(topic).get("cleanup.policy", "delete")).split(","):
        return int(ErrorCode.POLICY_VIOLATION), INVALID_LOW_WATERMARK
    if offset == HIGH_WATERMARK:
        offset = lg.high_watermark
    if offset < 0 or offset > lg.high_watermark:
        return int(ErrorCode.OFFSET_OUT_OF_RANGE), INVALID_LOW_WATERMARK
    try:
        low = lg.delete_records_before(offset)
    except OffsetOutOfRangeError:
        return int(ErrorCode.OFFSET_OUT_OF_RANGE), INVALID_LOW_WATERMARK
    except StorageError as e:
        return int(e.error_code), INVALID_LOW_WATERMARK
    log.info("deleted records of %s-%d before offset %d; log start offset now %d", topic_name, partition, offset, low)
    return 0, low


@api("DeleteRecords", 0, 2)
async def delete_records(ctx: RequestContext, req: delete_records_request.DeleteRecordsRequest) -> delete_records_response.DeleteRecordsResponse:
    """Version notes: none; v2 is flexible.

    Behaviour: DELETE on the topic (TOPIC_AUTHORIZATION_FAILED), as KafkaApis; then, as Partition.deleteRecordsOnLeader:
    UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION for internal topics, POLICY_VIOLATION without "delete" in
    cleanup.policy, offset -1 meaning the high watermark, OFFSET_OUT_OF_RANGE below 0 or past it;
    PartitionLog.delete_records_before answers the new low watermark. Wakes long-polling fetches afterwards.
    """
    broker = ctx.broker
    topics = []
    for t in req.topics:
        parts = []
        may = acl.topic_allowed(ctx, acl.DELETE, t.name)
        for p in t.partitions:
            if not may:
                code, low = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED), INVALID_LOW_WATERMARK
            else:
                code, low = _delete_partition_records(broker, t.name, p.partition_index, p.offset)
            parts.append(R.DeleteRecordsPartitionResult(partition_index=p.partition_index, low_watermark=low,
                                                        error_code=code))
        topics.append(R.DeleteRecordsTopicResult(name=t.name, partitions=parts))
    broker.notify_appended()   # long-polling fetchers below the new log start offset should find out now
    return R.DeleteRecordsResponse(throttle_time_ms=0, topics=topics)
