"""Fetch (key 1): read stored batches, long-polling on appends for min_bytes / max_wait_ms.

Fetch sessions (KIP-227): kafkapy gives the legal sessionless answer. A request that asks for a new
session (session id 0) gets session id 0 back, which tells the client no session was created, so it
keeps sending full fetch requests; an unknown session id gets FETCH_SESSION_ID_NOT_FOUND.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from kafkapy import acl
from kafkapy.handlers import api
from storage.errors import OffsetOutOfRangeError, StorageError
from wire.messages import fetch_response as R
from wire.messages.error_codes import ErrorCode

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import fetch_request
    from wire.messages import fetch_response

READ_COMMITTED = 1


def _error(index: int, code: int, hw: int = -1, lso: int = -1, log_start: int = -1) -> R.PartitionData:
    return R.PartitionData(partition_index=index, error_code=int(code), high_watermark=hw, last_stable_offset=lso,
                           log_start_offset=log_start, aborted_transactions=None, preferred_read_replica=-1,
                           records=b"")   # Kafka: MemoryRecords.EMPTY (librdkafka rejects a null record set)


def replica_id_of(req, v: int) -> int:
    """The fetching follower's broker id (-1: a consumer): ReplicaId before v15, ReplicaState.ReplicaId from v15."""
    return req.replica_state.replica_id if v >= 15 else req.replica_id


def _diverging_epoch(partition, fp) -> R.EpochEndOffset | None:
    """Kafka's Partition.fetchRecords with lastFetchedEpoch (v12+, KIP-320/KIP-595): the follower's last fetched
    epoch ends, on the leader, before the fetch offset (or is unknown): tell it where to truncate."""
    if fp.last_fetched_epoch < 0:
        return None
    epoch, end = partition.log.end_offset_for_epoch(fp.last_fetched_epoch)
    if epoch < fp.last_fetched_epoch or end < fp.fetch_offset:
        return R.EpochEndOffset(epoch=epoch, end_offset=end)
    return None


def _not_leader(broker, topic, idx: int, leaders: set[int]) -> R.PartitionData:
    """NOT_LEADER_OR_FOLLOWER with the current leader (v12+; KIP-951: its endpoint goes in node_endpoints, v16+)."""
    leader, epoch, _replicas, _isr, _offline = broker.partition_metadata(topic, idx)
    answer = _error(idx, ErrorCode.NOT_LEADER_OR_FOLLOWER)
    answer.current_leader = R.LeaderIdAndEpoch(leader_id=leader, leader_epoch=epoch)
    if leader >= 0:
        leaders.add(leader)
    return answer


def _read_all(broker, req, v: int, plan, leaders: set[int]):
    """One pass over the requested partitions: (response topics, bytes gathered); the leaders named in
    NOT_LEADER_OR_FOLLOWER answers are added to ``leaders``."""
    # Kafka's KafkaApis: min(request max_bytes, broker fetch.max.bytes); v0-2 had no request limit
    fetch_max = broker.config.get_int("fetch.max.bytes")
    remaining = min(req.max_bytes, fetch_max) if v >= 3 else fetch_max
    total = 0
    committed = req.isolation_level == READ_COMMITTED
    replica = replica_id_of(req, v)
    out = []
    for topic, ft, t_error in plan:
        parts = []
        for fp in ft.partitions:
            idx = fp.partition
            if t_error is not None:
                parts.append(_error(idx, t_error))
                continue
            partition = broker.partition(topic.name, idx)
            if partition is None:
                if 0 <= idx < topic.partitions:
                    parts.append(_not_leader(broker, topic, idx, leaders))
                else:
                    parts.append(_error(idx, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            lg = partition.log
            epoch = fp.current_leader_epoch
            if epoch >= 0 and epoch != partition.leader_epoch:
                parts.append(_error(idx, ErrorCode.FENCED_LEADER_EPOCH if epoch < partition.leader_epoch
                                    else ErrorCode.UNKNOWN_LEADER_EPOCH))
                continue
            if not partition.is_leader:
                parts.append(_not_leader(broker, topic, idx, leaders))
                continue
            hw = lg.high_watermark
            lso = lg.last_stable_offset()
            limit = lso if committed else hw
            if replica >= 0:      # a follower: reads to the log end offset; its fetch offset is its log end offset
                diverging = _diverging_epoch(partition, fp) if v >= 12 else None
                if diverging is not None:
                    parts.append(R.PartitionData(partition_index=idx, error_code=0, high_watermark=hw,
                                                 last_stable_offset=lso, log_start_offset=lg.log_start_offset,
                                                 diverging_epoch=diverging, preferred_read_replica=-1, records=b""))
                    continue
                partition.update_follower_fetch_state(replica, fp.fetch_offset, fp.log_start_offset)
                hw = lg.high_watermark
                limit = None
            try:
                # Kafka's rule: only the first partition that returns data may exceed the limits (one whole batch)
                data = lg.read(fp.fetch_offset, min(fp.partition_max_bytes, remaining), max_offset=limit,
                               min_one_message=(total == 0))
            except OffsetOutOfRangeError:
                parts.append(_error(idx, ErrorCode.OFFSET_OUT_OF_RANGE, hw, lso, lg.log_start_offset))
                continue
            except StorageError as e:
                parts.append(_error(idx, e.error_code, hw, lso, lg.log_start_offset))
                continue
            n = len(data)
            total += n
            remaining = max(remaining - n, 0)
            aborted = None
            if committed:
                aborted = [R.AbortedTransaction(producer_id=pid, first_offset=first)
                           for pid, first in lg.aborted_transactions(fp.fetch_offset, limit)]
            parts.append(R.PartitionData(partition_index=idx, error_code=0, high_watermark=hw, last_stable_offset=lso,
                                         log_start_offset=lg.log_start_offset, aborted_transactions=aborted,
                                         preferred_read_replica=-1, records=data))
        out.append(R.FetchableTopicResponse(topic=topic.name if topic else ft.topic,
                                            topic_id=ft.topic_id, partitions=parts))
    return out, total


@api("Fetch", 4, 17, max_wait=lambda req: req.max_wait_ms)
async def fetch(ctx: RequestContext, req: fetch_request.FetchRequest) -> fetch_response.FetchResponse:
    """Version notes: v0-3 would need down-conversion to message format 0/1, which kafkapy does not do (v4 is the first
    version whose clients must read magic-2 batches). v4+ isolation_level (read_committed reads up to the last stable
    offset and lists aborted transactions); v7+ sessions (see the module docstring); v9+ current_leader_epoch
    (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH); v13+ topic ids (UNKNOWN_TOPIC_ID instead of
    UNKNOWN_TOPIC_OR_PARTITION).

    Behaviour: READ on each topic (TOPIC_AUTHORIZATION_FAILED; from v13 only for ids that resolve), then
    PartitionLog.read per partition within min(max_bytes, fetch.max.bytes), the first partition with data allowed one
    whole batch over. Long-polls Broker.wait_for_append until min_bytes or max_wait_ms, re-resolving topics deleted
    meanwhile. A fetch with a replica id (a follower) reads to the log end offset, reports the follower's log end offset
to the partition's leader state (ISR, high watermark) and gets a diverging epoch (v12+) when its last fetched epoch
does not match the leader's log. A partition this broker does not lead: NOT_LEADER_OR_FOLLOWER.
    """
    broker = ctx.broker
    v = ctx.api_version
    if v >= 7 and req.session_id != 0:
        return R.FetchResponse(throttle_time_ms=0, error_code=ErrorCode.FETCH_SESSION_ID_NOT_FOUND, session_id=0,
                               responses=[])
    plan = []
    for ft in req.topics:
        if v >= 13:
            topic = broker.topics_by_id.get(ft.topic_id)
            err = None if topic is not None else ErrorCode.UNKNOWN_TOPIC_ID
        else:
            topic = broker.topics.get(ft.topic)
            err = None if topic is not None else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        name = topic.name if topic is not None else ft.topic
        if (topic is not None or v < 13) and not acl.topic_allowed(ctx, acl.READ, name):
            topic, err = None, ErrorCode.TOPIC_AUTHORIZATION_FAILED
        plan.append((topic, ft, err))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(req.max_wait_ms, 0) / 1000
    leaders: set[int] = set()
    while True:
        responses, total = _read_all(broker, req, v, plan, leaders)
        left = deadline - loop.time()
        errors = any(p.error_code for t in responses for p in t.partitions)
        # Kafka's ReplicaManager answers at once when a partition has an error (a moved leader, a deleted topic)
        if total >= req.min_bytes or left <= 0 or total > 0 and req.min_bytes <= 1 or errors:
            break
        await broker.wait_for_append(left)
        # a topic may have been deleted or recreated while we waited
        plan = [(broker.topics_by_id.get(t.topic_id) if t else None, ft, e if t is None else
                 (None if t.topic_id in broker.topics_by_id else
                  (ErrorCode.UNKNOWN_TOPIC_ID if v >= 13 else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)))
                for t, ft, e in plan]
    endpoints = [R.NodeEndpoint(node_id=n, host=h, port=p, rack=r) for n, h, p, r in broker.live_brokers(ctx.connection)
                 if n in leaders] if v >= 16 and leaders else []
    return R.FetchResponse(throttle_time_ms=0, error_code=0, session_id=0, responses=responses,
                           node_endpoints=endpoints)
