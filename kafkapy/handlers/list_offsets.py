"""ListOffsets (key 2): earliest, latest, by timestamp (time index), max timestamp."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafkapy import acl
from kafkapy.handlers import api
from wire.messages import list_offsets_response as R
from wire.messages.error_codes import ErrorCode

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import list_offsets_request
    from wire.messages import list_offsets_response

LATEST, EARLIEST, MAX_TIMESTAMP, EARLIEST_LOCAL, LATEST_TIERED = -1, -2, -3, -4, -5
READ_COMMITTED = 1


def _answer(idx, code, ts=-1, offset=-1, epoch=-1, old=None):
    return R.ListOffsetsPartitionResponse(partition_index=idx, error_code=int(code), old_style_offsets=old or [],
                                          timestamp=ts, offset=offset, leader_epoch=epoch)


@api("ListOffsets", 0, 9)
async def list_offsets(ctx: RequestContext, req: list_offsets_request.ListOffsetsRequest) -> list_offsets_response.ListOffsetsResponse:
    """Version notes: v0 answers old_style_offsets (up to max_num_offsets; LATEST adds the log start offset), v1+ one
    timestamp/offset; v2+ isolation_level (LATEST under read_committed is the last stable offset); v4+
    current_leader_epoch (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH) and the leader epoch in the answer. The special
    timestamps -3 (max timestamp, v7), -4 (local log start = log start, v8) and -5 (latest tiered: -1, v9) are accepted
    at every version; another negative timestamp gets INVALID_REQUEST (UNKNOWN_SERVER_ERROR on v0).

    Behaviour: DESCRIBE on the topic (TOPIC_AUTHORIZATION_FAILED), UNKNOWN_TOPIC_OR_PARTITION, then the partition's log:
    high watermark, log start offset, PartitionLog.max_timestamp_offset or offset_for_timestamp (-1/-1 when none).
    """
    broker = ctx.broker
    v = ctx.api_version
    committed = v >= 2 and req.isolation_level == READ_COMMITTED
    topics = []
    for rt in req.topics:
        parts = []
        if not acl.topic_allowed(ctx, acl.DESCRIBE, rt.name):
            topics.append(R.ListOffsetsTopicResponse(name=rt.name, partitions=[
                _answer(rp.partition_index, ErrorCode.TOPIC_AUTHORIZATION_FAILED) for rp in rt.partitions]))
            continue
        for rp in rt.partitions:
            idx = rp.partition_index
            partition = broker.partition(rt.name, idx)
            if partition is None or not partition.is_leader:      # only the leader answers (Kafka)
                topic = broker.topics.get(rt.name)
                known = topic is not None and 0 <= idx < topic.partitions
                parts.append(_answer(idx, ErrorCode.NOT_LEADER_OR_FOLLOWER if known
                                     else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            lg = partition.log
            epoch = partition.leader_epoch
            if rp.current_leader_epoch >= 0 and rp.current_leader_epoch != epoch:
                parts.append(_answer(idx, ErrorCode.FENCED_LEADER_EPOCH if rp.current_leader_epoch < epoch
                                     else ErrorCode.UNKNOWN_LEADER_EPOCH))
                continue
            ts = rp.timestamp
            if ts == LATEST:
                off = lg.last_stable_offset() if committed else lg.high_watermark
                found = (-1, off)
            elif ts in (EARLIEST, EARLIEST_LOCAL):
                found = (-1, lg.log_start_offset)
            elif ts == LATEST_TIERED:
                found = (-1, -1)
                epoch = -1
            elif ts == MAX_TIMESTAMP:
                r = lg.max_timestamp_offset()
                found = (r.timestamp, r.offset) if r is not None else (-1, -1)
                if r is None:
                    epoch = -1
            elif ts < 0:
                parts.append(_answer(idx, ErrorCode.INVALID_REQUEST if v >= 1 else ErrorCode.UNKNOWN_SERVER_ERROR))
                continue
            else:
                r = lg.offset_for_timestamp(ts)
                found = (r.timestamp, r.offset) if r is not None else (-1, -1)
                if r is None:
                    epoch = -1
            if v == 0:
                offs = [found[1]] if found[1] >= 0 else []
                if ts == LATEST and lg.log_start_offset != found[1] and rp.max_num_offsets > 1:
                    offs.append(lg.log_start_offset)
                parts.append(_answer(idx, 0, old=offs[:max(rp.max_num_offsets, 0)]))
            else:
                parts.append(_answer(idx, 0, found[0], found[1], epoch))
        topics.append(R.ListOffsetsTopicResponse(name=rt.name, partitions=parts))
    return R.ListOffsetsResponse(throttle_time_ms=0, topics=topics)
