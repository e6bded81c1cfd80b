"""WriteTxnMarkers (27): a transaction coordinator's commit/abort markers for the partitions this broker leads.

Kafka's KafkaApis.handleWriteTxnMarkersRequest + ReplicaManager.appendRecords with requiredAcks=-1: sent by the
transaction coordinator (kafkapy/producers/coordinator.py, ``_markers_to``) to each partition's leader. Every marker
is appended through the partition's one append path (``AppendOrigin.COORDINATOR``; the log's producer state refuses a
marker of an older coordinator epoch with TRANSACTION_COORDINATOR_FENCED and one of an older producer epoch with
INVALID_PRODUCER_EPOCH) and answered once the ISR has it. A marker that lands in a ``__consumer_offsets`` partition
also applies (or drops) the producer's transactional offset commits here, on the broker that coordinates the group.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from kafkapy import acl
from kafkapy.handlers import api
from kafkapy.producers.coordinator import append_marker
from storage.errors import StorageError
from wire.messages import write_txn_markers_response as R
from wire.messages.error_codes import ErrorCode

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import write_txn_markers_request
    from wire.messages import write_txn_markers_response

MARKER_TIMEOUT = 5.0     # seconds a marker waits for the ISR before REQUEST_TIMED_OUT (the coordinator retries)


@api("WriteTxnMarkers", 0, 1)
async def write_txn_markers(ctx: RequestContext, req: write_txn_markers_request.WriteTxnMarkersRequest) -> write_txn_markers_response.WriteTxnMarkersResponse:
    """Version notes: v1 is flexible; nothing else differs.

    Behaviour: CLUSTER_ACTION on the cluster, else CLUSTER_AUTHORIZATION_FAILED on every partition (as KafkaApis).
    Per partition: UNKNOWN_TOPIC_OR_PARTITION when this broker has no replica of it, NOT_LEADER_OR_FOLLOWER when it
    does not lead it; else the marker is appended (producer id and epoch, commit or abort, coordinator epoch) through
    Partition.append with acks=all, a StorageError answering its code, and answered once the high watermark passes it
    (REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND, NOT_LEADER_OR_FOLLOWER otherwise).
    """
    broker = ctx.broker
    allowed = acl.cluster_allowed(ctx, acl.CLUSTER_ACTION)
    results = []
    waits = []          # (the answer to fill, partition, offset after the marker)
    for m in req.markers:
        topics = []
        for t in m.topics:
            parts = []
            for p in t.partition_indexes:
                answer = R.WritableTxnMarkerPartitionResult(partition_index=p, error_code=0)
                parts.append(answer)
                if not allowed:
                    answer.error_code = int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
                    continue
                partition = broker.partition(t.name, p) if t.name in broker.topics else None
                if partition is None:
                    answer.error_code = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                    continue
                if not partition.is_leader:
                    answer.error_code = int(ErrorCode.NOT_LEADER_OR_FOLLOWER)
                    continue
                try:
                    info = append_marker(broker, partition, m.producer_id, m.producer_epoch,
                                         bool(m.transaction_result), m.coordinator_epoch, required_acks=-1)
                except StorageError as e:
                    answer.error_code = int(getattr(e, "error_code", ErrorCode.UNKNOWN_SERVER_ERROR))
                    continue
                waits.append((answer, partition, info.last_offset + 1))
            topics.append(R.WritableTxnMarkerTopicResult(name=t.name, partitions=parts))
        results.append(R.WritableTxnMarkerResult(producer_id=m.producer_id, topics=topics))
    if waits:
        codes = await asyncio.gather(*(p.wait_for_high_watermark(o, MARKER_TIMEOUT) for _a, p, o in waits))
        for (answer, _p, _o), code in zip(waits, codes):
            answer.error_code = int(code)
    return R.WriteTxnMarkersResponse(markers=results)
