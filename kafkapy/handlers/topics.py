"""Topic admin: CreateTopics (19), DeleteTopics (20), CreatePartitions (37)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafkapy import acl
from kafkapy.broker import TopicError
from kafkapy.config import TOPIC_CONFIGS
from kafkapy.handlers import api
from wire.messages import create_partitions_response as CP
from wire.messages import create_topics_response as CT
from wire.messages import delete_topics_response as DT
from wire.messages.error_codes import ErrorCode
from wire.primitives import ZERO_UUID

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import create_partitions_request
    from wire.messages import create_partitions_response
    from wire.messages import create_topics_request
    from wire.messages import create_topics_response
    from wire.messages import delete_topics_request
    from wire.messages import delete_topics_response

# DescribeConfigs ConfigSource values
DYNAMIC_TOPIC_CONFIG, DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = \
    1, 2, 3, 4, 5
_SOURCE = {"DYNAMIC_BROKER_CONFIG": DYNAMIC_BROKER_CONFIG, "DYNAMIC_DEFAULT_BROKER_CONFIG": DYNAMIC_DEFAULT_BROKER_CONFIG,
           "STATIC_BROKER_CONFIG": STATIC_BROKER_CONFIG, "DEFAULT_CONFIG": DEFAULT_CONFIG}


def _check_assignments(broker, assignments, partitions: int) -> tuple[int, int]:
    """Manual replica assignments: every partition listed once, only this broker. Returns (partitions, rf)."""
    seen = sorted(a.partition_index for a in assignments)
    if seen != list(range(len(seen))):
        raise TopicError(ErrorCode.INVALID_REPLICA_ASSIGNMENT, "Partitions must be numbered 0 to N-1 without gaps.")
    rfs = {len(a.broker_ids) for a in assignments}
    if len(rfs) != 1:
        raise TopicError(ErrorCode.INVALID_REPLICA_ASSIGNMENT, "All partitions should have the same number of replicas.")
    for a in assignments:
        if len(set(a.broker_ids)) != len(a.broker_ids):
            raise TopicError(ErrorCode.INVALID_REPLICA_ASSIGNMENT, "Duplicate brokers in a replica assignment.")
        for b in a.broker_ids:
            if b != broker.node_id:
                raise TopicError(ErrorCode.INVALID_REPLICA_ASSIGNMENT, f"Unknown broker {b} in replica assignment.")
    return len(seen), rfs.pop()


@api("CreateTopics", 0, 7)
async def create_topics(ctx: RequestContext, req: create_topics_request.CreateTopicsRequest) -> create_topics_response.CreateTopicsResponse:
    """Version notes: v1+ validate_only; num_partitions/replication_factor -1 (v4+) take the broker defaults
    (Broker.check_new_topic, at every version); v5+ the answer lists the topic's configs with their sources; v7 topic
    ids.

    Behaviour: a topic named twice gets INVALID_REQUEST; otherwise CREATE on the cluster or the topic
    (TOPIC_AUTHORIZATION_FAILED), as KafkaApis. Manual assignments must name only this broker, partitions 0..N-1
    (INVALID_REPLICA_ASSIGNMENT) and not come with counts (INVALID_REQUEST); Broker.check_new_topic answers
    TOPIC_ALREADY_EXISTS, INVALID_TOPIC_EXCEPTION, config and replication errors; then Broker.create_topic.
    """
    broker = ctx.broker
    v = ctx.api_version
    results = []
    seen: dict[str, int] = {}
    for t in req.topics:
        seen[t.name] = seen.get(t.name, 0) + 1
    for t in req.topics:
        res = CT.CreatableTopicResult(name=t.name, topic_id=ZERO_UUID, error_code=0, error_message=None,
                                      num_partitions=-1, replication_factor=-1, configs=None)
        results.append(res)
        try:
            if seen[t.name] <= 1 and not (acl.cluster_allowed(ctx, acl.CREATE)
                                          or acl.topic_allowed(ctx, acl.CREATE, t.name)):
                raise TopicError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Authorization failed.")
            if seen[t.name] > 1:
                raise TopicError(ErrorCode.INVALID_REQUEST, f"Create topics request from client `{ctx.client_id}` "
                                                            f"contains multiple entries for the following topics: {t.name}")
            partitions, rf = t.num_partitions, t.replication_factor
            if t.assignments:
                if partitions != -1 or rf != -1:
                    raise TopicError(ErrorCode.INVALID_REQUEST, "Both numPartitions or replicationFactor and "
                                                                "replicasAssignments were set. Both cannot be used at "
                                                                "the same time.")
                partitions, rf = _check_assignments(broker, t.assignments, partitions)
            configs = {}
            for c in t.configs:
                configs[c.name] = c.value
            partitions, rf, configs = broker.check_new_topic(t.name, partitions, rf, configs)
            if not req.validate_only:
                topic = await broker.create_topic_in_cluster(t.name, partitions, rf, configs)
                res.topic_id = topic.topic_id
            res.num_partitions = partitions
            res.replication_factor = rf
            if v >= 5:
                res.configs = []
                for name in sorted(TOPIC_CONFIGS):
                    if name in configs:
                        value, source = configs[name], DYNAMIC_TOPIC_CONFIG
                    else:
                        value, src = broker.config.topic_default(name)
                        source = _SOURCE[src]
                    res.configs.append(CT.CreatableTopicConfigs(name=name, value=value, read_only=False,
                                                                config_source=source, is_sensitive=False))
        except TopicError as e:
            res.error_code = int(e.code)
            res.error_message = e.message
    return CT.CreateTopicsResponse(throttle_time_ms=0, topics=results)


@api("DeleteTopics", 0, 6)
async def delete_topics(ctx: RequestContext, req: delete_topics_request.DeleteTopicsRequest) -> delete_topics_response.DeleteTopicsResponse:
    """Version notes: v6+ topics by name or id (topic_names before); an unknown id gets UNKNOWN_TOPIC_ID, and a denied
    one is answered without its name.

    Behaviour: DELETE on the topic (TOPIC_AUTHORIZATION_FAILED), UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION for
    an internal topic, TOPIC_DELETION_DISABLED when delete.topic.enable is false, then Broker.delete_topic_in_cluster
    (a cluster: the topic and its partition states leave the metadata store; every broker drops them and the logs). Unlike
    KafkaApis: Kafka checks delete.topic.enable first and answers INVALID_REQUEST to v0-2 for it; and for topics by id
    it checks DESCRIBE to decide whether to hide the name, where kafkapy checks DELETE only.
    """
    broker = ctx.broker
    v = ctx.api_version
    out = []
    wanted = [(s.name, s.topic_id) for s in req.topics] if v >= 6 else [(n, ZERO_UUID) for n in req.topic_names]
    for name, topic_id in wanted:
        known = broker.topics_by_id.get(topic_id) if name is None else None
        if (name is not None or known is not None) and not acl.topic_allowed(
                ctx, acl.DELETE, name if name is not None else known.name):
            out.append(DT.DeletableTopicResult(name=name, topic_id=topic_id,
                                               error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                                               error_message="Authorization failed."))
            continue
        if name is None:
            t = broker.topics_by_id.get(topic_id)
            if t is None:
                out.append(DT.DeletableTopicResult(name=None, topic_id=topic_id, error_code=ErrorCode.UNKNOWN_TOPIC_ID,
                                                   error_message="This server does not host this topic ID."))
                continue
        else:
            t = broker.topics.get(name)
            if t is None:
                out.append(DT.DeletableTopicResult(name=name, topic_id=ZERO_UUID,
                                                   error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                                   error_message="This server does not host this topic-partition."))
                continue
        if t.internal or not broker.config.get_bool("delete.topic.enable"):
            code = ErrorCode.TOPIC_DELETION_DISABLED if not t.internal else ErrorCode.INVALID_TOPIC_EXCEPTION
            out.append(DT.DeletableTopicResult(name=t.name, topic_id=t.topic_id, error_code=code,
                                               error_message=f"Cannot delete topic {t.name}"))
            continue
        try:
            await broker.delete_topic_in_cluster(t.name)
        except TopicError as e:
            out.append(DT.DeletableTopicResult(name=t.name, topic_id=t.topic_id, error_code=int(e.code),
                                               error_message=e.message))
            continue
        out.append(DT.DeletableTopicResult(name=t.name, topic_id=t.topic_id, error_code=0, error_message=None))
    return DT.DeleteTopicsResponse(throttle_time_ms=0, responses=out)


@api("CreatePartitions", 0, 3)
async def create_partitions(ctx: RequestContext, req: create_partitions_request.CreatePartitionsRequest) -> create_partitions_response.CreatePartitionsResponse:
    """Version notes: none; v2 is flexible, and v3's THROTTLING_QUOTA_EXCEEDED is never answered (no quotas).

    Behaviour: a topic named twice gets INVALID_REQUEST; ALTER on the topic (TOPIC_AUTHORIZATION_FAILED);
    UNKNOWN_TOPIC_OR_PARTITION; INVALID_PARTITIONS for a count that is not an increase; INVALID_REPLICA_ASSIGNMENT for a
    wrong number of assignments or an unknown broker (a single broker: any other broker; a cluster: one not registered,
    a replication factor other than the topic's, a broker twice). Unless validate_only,
    Broker.add_partitions_in_cluster (a cluster: Kafka's rack-unaware assignment continued, unless given, and the new
    partitions' states, through the metadata store).
    """
    broker = ctx.broker
    out = []
    counts: dict[str, int] = {}
    for t in req.topics:
        counts[t.name] = counts.get(t.name, 0) + 1
    for t in req.topics:
        def fail(code, msg, name=t.name):
            out.append(CP.CreatePartitionsTopicResult(name=name, error_code=int(code), error_message=msg))
        topic = broker.topics.get(t.name)
        if counts[t.name] > 1:
            fail(ErrorCode.INVALID_REQUEST, "Duplicate topic in request.")
        elif not acl.topic_allowed(ctx, acl.ALTER, t.name):
            fail(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "The topic authorization is failed.")
        elif topic is None:
            fail(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{t.name}' does not exist.")
        elif t.count < topic.partitions:
            fail(ErrorCode.INVALID_PARTITIONS, f"The topic {t.name} currently has {topic.partitions} partition(s); "
                                               f"{t.count} would not be an increase.")
        elif t.count == topic.partitions:
            fail(ErrorCode.INVALID_PARTITIONS, f"Topic already has {topic.partitions} partition(s).")
        elif t.assignments is not None and len(t.assignments) != t.count - topic.partitions:
            fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, f"Attempted to add {t.count - topic.partitions} additional "
                                                       f"partition(s), but only {len(t.assignments)} assignment(s) "
                                                       "were specified.")
        elif broker.cluster is None and t.assignments and any(b != broker.node_id for a in t.assignments
                                                              for b in a.broker_ids):
            fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, "Replica assignment names an unknown broker.")
        else:
            assignments = [list(a.broker_ids) for a in t.assignments] if t.assignments else None
            try:
                if broker.cluster is not None and assignments is not None:
                    from kafkapy.cluster.member import check_assignment   # a cluster only: imported then
                    check_assignment(assignments, t.count - topic.partitions, len(topic.assignment[0]),
                                     set(broker.cluster.image.brokers))
                if not req.validate_only:
                    await broker.add_partitions_in_cluster(t.name, t.count, assignments)
            except TopicError as e:
                fail(e.code, e.message)
                continue
            out.append(CP.CreatePartitionsTopicResult(name=t.name, error_code=0, error_message=None))
    return CP.CreatePartitionsResponse(throttle_time_ms=0, results=out)
