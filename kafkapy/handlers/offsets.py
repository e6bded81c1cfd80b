"""Committed offsets: OffsetCommit (8), OffsetFetch (9), OffsetDelete (47). Stored by kafkapy.groups in
``__consumer_offsets``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafkapy import acl
from kafkapy.groups.group import OffsetAndMetadata, now_ms
from kafkapy.error_responses import error_response
from kafkapy.handlers import api
from wire.messages import offset_commit_response as CR
from wire.messages import offset_delete_response as DR
from wire.messages import offset_fetch_response as FR
from wire.messages.error_codes import ErrorCode

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import offset_commit_request
    from wire.messages import offset_commit_response
    from wire.messages import offset_delete_request
    from wire.messages import offset_delete_response
    from wire.messages import offset_fetch_request
    from wire.messages import offset_fetch_response

REPLICATION_TIMEOUT = 5.0   # seconds a commit waits for the ISR (Kafka: offsets.commit.timeout.ms, 5000)

@api("OffsetCommit", 0, 9)
async def offset_commit(ctx: RequestContext, req: offset_commit_request.OffsetCommitRequest) -> offset_commit_response.OffsetCommitResponse:
    """Version notes: v1+ generation and member id, and commit_timestamp (used unless -1; v1 only); v2-4
    retention_time_ms sets an expiry, v5 removed it; v6+ committed_leader_epoch; v7+ group_instance_id. v9's member
    epoch is taken as a classic generation id (no KIP-848 groups).

    Behaviour: a null group id gets INVALID_GROUP_ID; READ on the group (GROUP_AUTHORIZATION_FAILED on every partition)
    and on each topic (TOPIC_AUTHORIZATION_FAILED, those partitions left out of the commit), as KafkaApis; the rest goes
    to GroupCoordinator.commit_offsets, whose per-partition codes (generation, member, fencing) are answered.
    """
    v = ctx.api_version
    coord = ctx.broker.groups
    now = now_ms()
    retention = req.retention_time_ms if 2 <= v <= 4 else -1
    offsets: dict[tuple[str, int], OffsetAndMetadata] = {}
    order = []
    for t in req.topics or ():
        for p in t.partitions or ():
            ts = now
            if v == 1 and p.commit_timestamp != -1:
                ts = p.commit_timestamp
            tp = (t.name, p.partition_index)
            order.append(tp)
            offsets[tp] = OffsetAndMetadata(
                offset=p.committed_offset,
                leader_epoch=p.committed_leader_epoch if v >= 6 else -1,
                metadata=p.committed_metadata if p.committed_metadata is not None else "",
                commit_timestamp=ts,
                expire_timestamp=ts + retention if retention != -1 else None)
    if req.group_id is None:
        errors = {tp: int(ErrorCode.INVALID_GROUP_ID) for tp in offsets}
    elif not acl.group_allowed(ctx, acl.READ, req.group_id):
        errors = {tp: int(ErrorCode.GROUP_AUTHORIZATION_FAILED) for tp in offsets}
    elif (code := coord.coordinator_error(req.group_id)) is not None:
        errors = {tp: int(code) for tp in offsets}
    else:
        denied = {tp for tp in offsets if not acl.topic_allowed(ctx, acl.READ, tp[0])}
        for tp in denied:
            del offsets[tp]
        errors = coord.commit_offsets(req.group_id, req.generation_id_or_member_epoch if v >= 1 else -1,
                                      req.member_id if v >= 1 else "", req.group_instance_id if v >= 7 else None,
                                      offsets)
        if any(code == 0 for code in errors.values()):
            failed = await coord.wait_replicated(req.group_id, REPLICATION_TIMEOUT)
            if failed is not None:
                errors = {tp: int(failed) if code == 0 else code for tp, code in errors.items()}
        errors.update({tp: int(ErrorCode.TOPIC_AUTHORIZATION_FAILED) for tp in denied})
    topics = []
    by_topic: dict[str, list] = {}
    for t in req.topics or ():
        if t.name not in by_topic:
            by_topic[t.name] = []
            topics.append(CR.OffsetCommitResponseTopic(name=t.name, partitions=by_topic[t.name]))
        for p in t.partitions or ():
            by_topic[t.name].append(CR.OffsetCommitResponsePartition(
                partition_index=p.partition_index, error_code=errors.get((t.name, p.partition_index), 0)))
    return CR.OffsetCommitResponse(throttle_time_ms=0, topics=topics)


def _fetch_group(ctx, coord, group_id, topics, require_stable):
    """[(topic name, [(partition, OffsetAndMetadata | None, error)])] in request order (or all committed).

    As KafkaApis: all committed offsets leave out topics the principal may not DESCRIBE; asked-for partitions of
    such topics answer TOPIC_AUTHORIZATION_FAILED."""
    if topics is None:
        parts = None
        denied = set()
    else:
        parts = [(t.name, p) for t in topics for p in (t.partition_indexes or ())]
        denied = {t for t in {tp[0] for tp in parts} if not acl.topic_allowed(ctx, acl.DESCRIBE, t)}
    rows = coord.fetch_offsets(group_id, [tp for tp in parts if tp[0] not in denied] if parts is not None else None,
                               require_stable)
    found = {(t, p): (o, err) for t, p, o, err in rows}
    if parts is not None:
        rows = [(t, p) + found.get((t, p), (None, int(ErrorCode.TOPIC_AUTHORIZATION_FAILED))) for t, p in parts]
    else:
        rows = [r for r in rows if acl.allowed_quietly(ctx, acl.DESCRIBE, acl.R_TOPIC, r[0])]
    out: dict[str, list] = {}
    for t, p, o, err in rows:
        out.setdefault(t, []).append((p, o, err))
    if topics is not None:
        for t in topics:          # topics asked for with no partitions still appear
            out.setdefault(t.name, [])
    return list(out.items())


@api("OffsetFetch", 0, 9)
async def offset_fetch(ctx: RequestContext, req: offset_fetch_request.OffsetFetchRequest) -> offset_fetch_response.OffsetFetchResponse:
    """Version notes: v0-1 have no "all topics" (a null list is empty) and no top-level error, so a denied group answers
    GROUP_AUTHORIZATION_FAILED on each asked partition (OffsetFetchRequest.getErrorResponse); v2+ null topics = every
    committed offset; v7+ require_stable (UNSTABLE_OFFSET_COMMIT while a transactional commit is pending); v8+ several
    groups per request, each with its own error.

    Behaviour: DESCRIBE on the group (GROUP_AUTHORIZATION_FAILED) and, as KafkaApis, DESCRIBE on topics: asked
    partitions of denied topics get TOPIC_AUTHORIZATION_FAILED, "all offsets" leaves such topics out. Offsets come from
    GroupCoordinator.fetch_offsets (-1 and "" for none).
    """
    v = ctx.api_version
    coord = ctx.broker.groups
    require_stable = bool(req.require_stable) if v >= 7 else False
    if v >= 8:
        groups = []
        for rg in req.groups or ():
            if not acl.group_allowed(ctx, acl.DESCRIBE, rg.group_id):
                groups.append(FR.OffsetFetchResponseGroup(group_id=rg.group_id, topics=[],
                                                          error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED)))
                continue
            if (code := coord.coordinator_error(rg.group_id)) is not None:
                groups.append(FR.OffsetFetchResponseGroup(group_id=rg.group_id, topics=[], error_code=int(code)))
                continue
            rows = _fetch_group(ctx, coord, rg.group_id, rg.topics, require_stable)
            topics = [FR.OffsetFetchResponseTopics(name=t, partitions=[
                FR.OffsetFetchResponsePartitions(partition_index=p, committed_offset=o.offset if o else -1,
                                                 committed_leader_epoch=o.leader_epoch if o else -1,
                                                 metadata=o.metadata if o else "", error_code=err)
                for p, o, err in parts]) for t, parts in rows]
            groups.append(FR.OffsetFetchResponseGroup(group_id=rg.group_id, topics=topics, error_code=0))
        return FR.OffsetFetchResponse(throttle_time_ms=0, groups=groups)
    topics_req = req.topics
    if topics_req is None and v < 2:
        topics_req = []
    if not acl.group_allowed(ctx, acl.DESCRIBE, req.group_id):   # OffsetFetchRequest.getErrorResponse
        code = int(ErrorCode.GROUP_AUTHORIZATION_FAILED)
        topics = [FR.OffsetFetchResponseTopic(name=t.name, partitions=[
            FR.OffsetFetchResponsePartition(partition_index=p, committed_offset=-1, committed_leader_epoch=-1,
                                            metadata="", error_code=code) for p in (t.partition_indexes or ())])
            for t in (topics_req or ())] if v < 2 else []
        return FR.OffsetFetchResponse(throttle_time_ms=0, topics=topics, error_code=code)
    if (code := coord.coordinator_error(req.group_id)) is not None:
        return error_response(ctx.api_key, v, req, code)
    rows = _fetch_group(ctx, coord, req.group_id, topics_req, require_stable)
    topics = [FR.OffsetFetchResponseTopic(name=t, partitions=[
        FR.OffsetFetchResponsePartition(partition_index=p, committed_offset=o.offset if o else -1,
                                        committed_leader_epoch=o.leader_epoch if o else -1,
                                        metadata=o.metadata if o else "", error_code=err)
        for p, o, err in parts]) for t, parts in rows]
    return FR.OffsetFetchResponse(throttle_time_ms=0, topics=topics, error_code=0)


@api("OffsetDelete", 0, 0)
async def offset_delete(ctx: RequestContext, req: offset_delete_request.OffsetDeleteRequest) -> offset_delete_response.OffsetDeleteResponse:
    """Version notes: only v0 exists.

    Behaviour: as KafkaApis, DELETE on the group (GROUP_AUTHORIZATION_FAILED, no topics) and READ on each topic
    (TOPIC_AUTHORIZATION_FAILED); partitions that do not exist get UNKNOWN_TOPIC_OR_PARTITION; the rest go to
    GroupCoordinator.delete_offsets, whose group-level error, if any, is answered alone with no topics.
    """
    coord = ctx.broker.groups
    parts = [(t.name, p.partition_index) for t in (req.topics or ()) for p in (t.partitions or ())]
    if not acl.group_allowed(ctx, acl.DELETE, req.group_id):
        return DR.OffsetDeleteResponse(error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED), throttle_time_ms=0,
                                       topics=[])
    if (code := coord.coordinator_error(req.group_id)) is not None:
        return DR.OffsetDeleteResponse(error_code=int(code), throttle_time_ms=0, topics=[])
    denied = {t for t in {tp[0] for tp in parts} if not acl.topic_allowed(ctx, acl.READ, t)}
    known = [tp for tp in parts if tp[0] not in denied and ctx.broker.partition_log(*tp) is not None]
    top, res = coord.delete_offsets(req.group_id, known)
    res.update({tp: int(ErrorCode.TOPIC_AUTHORIZATION_FAILED) for tp in parts if tp[0] in denied})
    if top:
        return DR.OffsetDeleteResponse(error_code=top, throttle_time_ms=0, topics=[])
    topics = []
    for t in req.topics or ():
        topics.append(DR.OffsetDeleteResponseTopic(name=t.name, partitions=[
            DR.OffsetDeleteResponsePartition(
                partition_index=p.partition_index,
                error_code=res.get((t.name, p.partition_index), int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)))
            for p in (t.partitions or ())]))
    return DR.OffsetDeleteResponse(error_code=0, throttle_time_ms=0, topics=topics)
