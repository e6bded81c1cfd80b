"""Metadata (key 3): brokers, cluster id, controller, topics with partitions, leaders and topic ids."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafkapy import acl
from kafkapy.broker import TopicError, validate_topic_name
from kafkapy.handlers import api
from wire.messages import metadata_response as R
from wire.messages.error_codes import ErrorCode
from wire.primitives import ZERO_UUID

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import metadata_request
    from wire.messages import metadata_response

UNKNOWN_OPS = -2147483648
# AclOperation codes: READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9,
# DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12, CREATE_TOKENS 13, DESCRIBE_TOKENS 14
TOPIC_OPS = sum(1 << op for op in (3, 4, 5, 6, 7, 8, 10, 11))
CLUSTER_OPS = sum(1 << op for op in (5, 7, 8, 9, 10, 11, 12, 13, 14))


def authorized_ops(ctx, resource_type: int, name: str, all_ops: int) -> int:
    """The operations bitfield (Kafka's authorizedOperations) of the connection's principal."""
    return acl.authorized_operations(ctx, resource_type, name, all_ops)


def topic_metadata(broker, topic, version: int, include_ops: bool, ctx=None) -> R.MetadataResponseTopic:
    parts = []
    for p in range(topic.partitions):
        leader, epoch, replicas, isr, offline = broker.partition_metadata(topic, p)
        parts.append(R.MetadataResponsePartition(
            error_code=int(ErrorCode.LEADER_NOT_AVAILABLE) if leader < 0 else 0, partition_index=p, leader_id=leader,
            leader_epoch=epoch, replica_nodes=replicas, isr_nodes=isr, offline_replicas=offline))
    return R.MetadataResponseTopic(error_code=0, name=topic.name, topic_id=topic.topic_id,
                                   is_internal=topic.internal, partitions=parts,
                                   topic_authorized_operations=(
                                       (authorized_ops(ctx, acl.R_TOPIC, topic.name, TOPIC_OPS) if ctx else TOPIC_OPS)
                                       if include_ops else UNKNOWN_OPS))


def error_topic(code: int, name: str | None, topic_id=ZERO_UUID) -> R.MetadataResponseTopic:
    return R.MetadataResponseTopic(error_code=int(code), name=name, topic_id=topic_id, is_internal=False,
                                   partitions=[], topic_authorized_operations=UNKNOWN_OPS)


@api("Metadata", 0, 12)
async def metadata(ctx: RequestContext, req: metadata_request.MetadataRequest) -> metadata_response.MetadataResponse:
    """Version notes: v0 asks for every topic with an empty list, v1+ with null; v4+ allow_auto_topic_creation (always
    true before); v8+ authorized operations on request (cluster ones only through v10); v10+ topic ids in the answer,
    topics asked by id (null name) answered UNKNOWN_TOPIC_ID or TOPIC_AUTHORIZATION_FAILED without a name.

    Behaviour: every topic lists only those the principal may DESCRIBE; an asked topic needs DESCRIBE
    (TOPIC_AUTHORIZATION_FAILED). An unknown one gets INVALID_TOPIC_EXCEPTION for an illegal name, else is auto-created
    (Broker.create_topic_in_cluster, when auto.create.topics.enable; never "__" names) with CREATE on the cluster or
    topic, else UNKNOWN_TOPIC_OR_PARTITION; as in Kafka, CREATE is checked only when the topic would be auto-created.
    Brokers, the controller and each partition's leader, epoch, replicas, ISR and offline replicas come from
    Broker.partition_metadata (a single broker: itself; a cluster: the metadata store's view); a partition without a
    leader answers LEADER_NOT_AVAILABLE.
    """
    broker = ctx.broker
    v = ctx.api_version
    include_ops = bool(req.include_topic_authorized_operations)
    topics = []
    requested = req.topics
    if requested is None or (v == 0 and not requested):
        topics = [topic_metadata(broker, t, v, include_ops, ctx) for t in sorted(broker.topics.values(),
                                                                                 key=lambda t: t.name)
                  if acl.allowed_quietly(ctx, acl.DESCRIBE, acl.R_TOPIC, t.name)]   # hidden when not allowed
    else:
        auto = req.allow_auto_topic_creation if v >= 4 else True
        for rt in requested:
            name = rt.name
            if name is None:
                t = broker.topics_by_id.get(rt.topic_id)
                if t is None:
                    topics.append(error_topic(ErrorCode.UNKNOWN_TOPIC_ID, None, rt.topic_id))
                elif not acl.topic_allowed(ctx, acl.DESCRIBE, t.name):
                    topics.append(error_topic(ErrorCode.TOPIC_AUTHORIZATION_FAILED, None, rt.topic_id))
                else:
                    topics.append(topic_metadata(broker, t, v, include_ops, ctx))
                continue
            t = broker.topics.get(name)
            if not acl.topic_allowed(ctx, acl.DESCRIBE, name):
                topics.append(error_topic(ErrorCode.TOPIC_AUTHORIZATION_FAILED, name))
                continue
            if t is None:
                try:
                    validate_topic_name(name)
                except TopicError:
                    topics.append(error_topic(ErrorCode.INVALID_TOPIC_EXCEPTION, name))
                    continue
                # KafkaApis: CREATE is checked only when the topic would be auto-created
                auto = auto and not name.startswith("__") and broker.config.get_bool("auto.create.topics.enable")
                if auto and not (acl.cluster_allowed(ctx, acl.CREATE) or acl.topic_allowed(ctx, acl.CREATE, name)):
                    topics.append(error_topic(ErrorCode.TOPIC_AUTHORIZATION_FAILED, name))
                    continue
                if auto:
                    try:
                        t = await broker.create_topic_in_cluster(name)
                    except TopicError as e:
                        topics.append(error_topic(e.code, name))
                        continue
                if t is None:
                    topics.append(error_topic(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, name))
                    continue
            topics.append(topic_metadata(broker, t, v, include_ops, ctx))
    return R.MetadataResponse(
        throttle_time_ms=0,
        brokers=[R.MetadataResponseBroker(node_id=n, host=h, port=p, rack=r)
                 for n, h, p, r in broker.live_brokers(ctx.connection)],
        cluster_id=broker.cluster_id,
        controller_id=broker.controller_id(),
        topics=topics,
        # KafkaApis: 0 without DESCRIBE on the cluster
        cluster_authorized_operations=(authorized_ops(ctx, acl.R_CLUSTER, acl.CLUSTER_NAME, CLUSTER_OPS)
                                       if acl.allowed_quietly(ctx, acl.DESCRIBE, acl.R_CLUSTER, acl.CLUSTER_NAME)
                                       else 0) if req.include_cluster_authorized_operations else UNKNOWN_OPS,
    )
