"""Cluster: DescribeCluster (60), DescribeLogDirs (35), OffsetForLeaderEpoch (23)."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

from kafkapy import acl
from kafkapy.handlers import api
from kafkapy.handlers.metadata import CLUSTER_OPS, UNKNOWN_OPS
from wire.messages import describe_cluster_response as DCL
from wire.messages import describe_log_dirs_response as DLD
from wire.messages import offset_for_leader_epoch_response as OLE
from wire.messages.error_codes import ErrorCode

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import describe_cluster_request
    from wire.messages import describe_cluster_response
    from wire.messages import describe_log_dirs_request
    from wire.messages import describe_log_dirs_response
    from wire.messages import offset_for_leader_epoch_request
    from wire.messages import offset_for_leader_epoch_response

# DescribeCluster endpoint types (KIP-919)
ENDPOINT_UNKNOWN, ENDPOINT_BROKER, ENDPOINT_CONTROLLER = 0, 1, 2
_ENDPOINT_NAMES = {ENDPOINT_BROKER: "BROKER", ENDPOINT_CONTROLLER: "CONTROLLER"}
NO_EPOCH = -1


@api("DescribeCluster", 0, 1)
async def describe_cluster(ctx: RequestContext, req: describe_cluster_request.DescribeClusterRequest) -> describe_cluster_response.DescribeClusterResponse:
    """Version notes: v1+ endpoint_type (KIP-919): only BROKER is served, CONTROLLER gets MISMATCHED_ENDPOINT_TYPE and
    an unknown type UNSUPPORTED_ENDPOINT_TYPE; v0 always asks for BROKER.

    Behaviour: AuthHelper.computeDescribeClusterResponse from the cluster view Metadata answers from
    (Broker.live_brokers, Broker.controller_id): a single broker is the only broker and the controller, at the
    listener the request came in on; in a cluster every live broker with its endpoint and rack, and the controller
    (-1 while there is none). No ACL check except for authorized operations, which are 0 without DESCRIBE on the
    cluster.
    """
    broker = ctx.broker
    v = ctx.api_version
    requested = req.endpoint_type if v >= 1 else ENDPOINT_BROKER
    if requested not in _ENDPOINT_NAMES:
        code = ErrorCode.INVALID_REQUEST if v == 0 else ErrorCode.UNSUPPORTED_ENDPOINT_TYPE
        return DCL.DescribeClusterResponse(
            throttle_time_ms=0, error_code=int(code),
            error_message=f"Unsupported endpoint type {requested}", endpoint_type=ENDPOINT_BROKER, cluster_id="",
            controller_id=-1, brokers=[], cluster_authorized_operations=UNKNOWN_OPS)
    if requested != ENDPOINT_BROKER:
        code = ErrorCode.INVALID_REQUEST if v == 0 else ErrorCode.MISMATCHED_ENDPOINT_TYPE
        return DCL.DescribeClusterResponse(
            throttle_time_ms=0, error_code=int(code),
            error_message=f"The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type "
                          f"{_ENDPOINT_NAMES[requested]}",
            endpoint_type=ENDPOINT_BROKER, cluster_id="", controller_id=-1, brokers=[],
            cluster_authorized_operations=UNKNOWN_OPS)
    ops = UNKNOWN_OPS
    if req.include_cluster_authorized_operations:   # AuthHelper: 0 without DESCRIBE on the cluster
        ops = (acl.authorized_operations(ctx, acl.R_CLUSTER, acl.CLUSTER_NAME, CLUSTER_OPS)
               if acl.cluster_allowed(ctx, acl.DESCRIBE) else 0)
    return DCL.DescribeClusterResponse(
        throttle_time_ms=0, error_code=0, error_message=None, endpoint_type=ENDPOINT_BROKER,
        cluster_id=broker.cluster_id, controller_id=broker.controller_id(),
        brokers=[DCL.DescribeClusterBroker(broker_id=node, host=host, port=port, rack=rack)
                 for node, host, port, rack in broker.live_brokers(ctx.connection)],
        cluster_authorized_operations=ops)


def log_dir_name(broker) -> str:
    """The absolute data dir, or a descriptive name for the memory backend."""
    if broker.memory or not broker.config.data_dir:
        return "memory"
    return os.path.abspath(broker.config.data_dir)


@api("DescribeLogDirs", 0, 4)
async def describe_log_dirs(ctx: RequestContext, req: describe_log_dirs_request.DescribeLogDirsRequest) -> describe_log_dirs_response.DescribeLogDirsResponse:
    """Version notes: v3+ top-level error_code (older versions get only the empty result list when denied); v4+
    total_bytes and usable_bytes (-1 for the memory backend).

    Behaviour: DESCRIBE on the cluster (CLUSTER_AUTHORIZATION_FAILED), as KafkaApis; then, as
    ReplicaManager.describeLogDirs (this broker's own replicas, in a cluster too), the one log dir (the data dir, or
    "memory") with the asked partitions' sizes from the LogManager (topics with none of them left out);
    KAFKA_STORAGE_ERROR if the disk usage cannot be read.
    """
    broker = ctx.broker
    if not acl.cluster_allowed(ctx, acl.DESCRIBE):
        return DLD.DescribeLogDirsResponse(throttle_time_ms=0, error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                                           results=[])
    if req.topics is None:
        wanted = None
    else:
        wanted = {(t.topic, p) for t in req.topics for p in t.partitions}
    by_topic: dict[str, list] = {}
    for (topic, partition), lg in sorted(broker.logs, key=lambda item: item[0]):
        if wanted is not None and (topic, partition) not in wanted:
            continue
        if topic not in broker.topics:
            continue
        by_topic.setdefault(topic, []).append(DLD.DescribeLogDirsPartition(
            partition_index=partition, partition_size=lg.size_in_bytes, offset_lag=0, is_future_key=False))
    total = usable = -1
    error = 0
    name = log_dir_name(broker)
    if name != "memory":
        try:
            du = shutil.disk_usage(name)
            total, usable = du.total, du.free
        except OSError:
            error = int(ErrorCode.KAFKA_STORAGE_ERROR)
    result = DLD.DescribeLogDirsResult(
        error_code=error, log_dir=name,
        topics=[] if error else [DLD.DescribeLogDirsTopic(name=t, partitions=ps) for t, ps in by_topic.items()],
        total_bytes=total, usable_bytes=usable)
    return DLD.DescribeLogDirsResponse(throttle_time_ms=0, error_code=0, results=[result])


@api("OffsetForLeaderEpoch", 0, 4)
async def offset_for_leader_epoch(ctx: RequestContext, req: offset_for_leader_epoch_request.OffsetForLeaderEpochRequest) -> offset_for_leader_epoch_response.OffsetForLeaderEpochResponse:
    """Version notes: v2+ current_leader_epoch (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH); v3+ replica_id, not used
    (there are no followers).

    Behaviour: as KafkaApis (KIP-320), CLUSTER_ACTION on the cluster or DESCRIBE on the topic
    (TOPIC_AUTHORIZATION_FAILED); UNKNOWN_TOPIC_OR_PARTITION; then Partition.lastOffsetForLeaderEpoch on the leader:
    PartitionLog.end_offset_for_epoch, answering -1/-1 for an epoch it cannot place.
    """
    broker = ctx.broker
    v = ctx.api_version
    topics = []
    # KIP-320: CLUSTER_ACTION (brokers) or DESCRIBE on the topic (consumers checking for truncation)
    every = acl.allowed_quietly(ctx, acl.CLUSTER_ACTION, acl.R_CLUSTER, acl.CLUSTER_NAME)
    for t in req.topics:
        topic = broker.topics.get(t.topic)
        parts = []
        may = every or acl.topic_allowed(ctx, acl.DESCRIBE, t.topic)
        for p in t.partitions:
            r = OLE.EpochEndOffset(error_code=0, partition=p.partition, leader_epoch=NO_EPOCH, end_offset=-1)
            parts.append(r)
            if not may:
                r.error_code = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
                continue
            partition = broker.partition(t.topic, p.partition) if topic is not None else None
            if partition is None or not partition.is_leader:      # only the leader answers (Kafka)
                known = topic is not None and 0 <= p.partition < topic.partitions
                r.error_code = int(ErrorCode.NOT_LEADER_OR_FOLLOWER if known else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                continue
            lg = partition.log
            current = p.current_leader_epoch if v >= 2 else NO_EPOCH
            if current != NO_EPOCH:
                if current < partition.leader_epoch:
                    r.error_code = int(ErrorCode.FENCED_LEADER_EPOCH)
                    continue
                if current > partition.leader_epoch:
                    r.error_code = int(ErrorCode.UNKNOWN_LEADER_EPOCH)
                    continue
            epoch, end_offset = lg.end_offset_for_epoch(p.leader_epoch)
            if end_offset != -1:
                r.leader_epoch, r.end_offset = epoch, end_offset
        topics.append(OLE.OffsetForLeaderTopicResult(topic=t.topic, partitions=parts))
    return OLE.OffsetForLeaderEpochResponse(throttle_time_ms=0, topics=topics)
