"""Group membership apis: FindCoordinator (10), JoinGroup (11), Heartbeat (12), LeaveGroup (13), SyncGroup (14),
DescribeGroups (15), ListGroups (16), DeleteGroups (42). The membership logic lives in kafkapy.groups; these
functions check the group ACLs and translate the version-dependent fields."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafkapy import acl
from kafkapy.groups.group import STABLE
from kafkapy.error_responses import error_response
from kafkapy.groups.coordinator import CoordinatorNotAvailableError
from kafkapy.handlers import api
from kafkapy.producers.coordinator import CoordinatorError
from kafkapy.internal_topics import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC, partition_for
from wire.messages import delete_groups_response as DelR
from wire.messages import describe_groups_response as DR
from wire.messages import find_coordinator_response as FR
from wire.messages import heartbeat_response as HR
from wire.messages import join_group_response as JR
from wire.messages import leave_group_response as LR
from wire.messages import list_groups_response as LGR
from wire.messages import sync_group_response as SR
from wire.messages.error_codes import ErrorCode

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import delete_groups_request
    from wire.messages import delete_groups_response
    from wire.messages import describe_groups_request
    from wire.messages import describe_groups_response
    from wire.messages import find_coordinator_request
    from wire.messages import find_coordinator_response
    from wire.messages import heartbeat_request
    from wire.messages import heartbeat_response
    from wire.messages import join_group_request
    from wire.messages import join_group_response
    from wire.messages import leave_group_request
    from wire.messages import leave_group_response
    from wire.messages import list_groups_request
    from wire.messages import list_groups_response
    from wire.messages import sync_group_request
    from wire.messages import sync_group_response

GROUP_KEY_TYPE = 0
TRANSACTION_KEY_TYPE = 1
UNKNOWN_OPS = -2147483648
# AclOperation: READ 3, DELETE 6, DESCRIBE 8 (Kafka's group operations)
GROUP_OPS = sum(1 << op for op in (3, 6, 8))
CLASSIC = "classic"


def client_host(ctx) -> str:
    """Kafka's InetAddress.toString form: ``/127.0.0.1``."""
    peer = ctx.connection.peer
    host = peer.rsplit(":", 1)[0] if ":" in peer else peer
    return "/" + host.strip("[]")


# ---------------------------------------------------------------- FindCoordinator

async def _coordinator_for(ctx, key: str, key_type: int) -> tuple[int, str | None, tuple | None]:
    """(error code, error message, (node id, host, port) of the coordinator)."""
    broker = ctx.broker
    if key_type == GROUP_KEY_TYPE:
        if not acl.group_allowed(ctx, acl.DESCRIBE, key):
            return int(ErrorCode.GROUP_AUTHORIZATION_FAILED), None, None
        try:
            await broker.groups.ensure_offsets_topic()
        except CoordinatorNotAvailableError as e:
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE), str(e), None
        topic = OFFSETS_TOPIC
    elif key_type == TRANSACTION_KEY_TYPE:
        if not acl.allowed(ctx, acl.DESCRIBE, acl.R_TRANSACTIONAL_ID, key):
            return int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED), None, None
        try:       # FindCoordinator(TRANSACTION) creates __transaction_state, as Kafka
            await broker.transactions.ensure_topic()
        except CoordinatorError as e:
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE), str(e), None
        topic = TRANSACTION_STATE_TOPIC
    else:
        return int(ErrorCode.INVALID_REQUEST), f"Unknown coordinator type {key_type} in FindCoordinator request", None
    # the coordinator is the leader of the key's partition of the internal topic (this broker when it is alone)
    t = broker.topics.get(topic)
    leader = broker.partition_metadata(t, partition_for(key, t.partitions))[0] if t is not None else -1
    for node, host, port, _rack in broker.live_brokers(ctx.connection):
        if node == leader:
            return 0, None, (node, host, port)
    return int(ErrorCode.COORDINATOR_NOT_AVAILABLE), None, None


@api("FindCoordinator", 0, 6)
async def find_coordinator(ctx: RequestContext, req: find_coordinator_request.FindCoordinatorRequest) -> find_coordinator_response.FindCoordinatorResponse:
    """Version notes: v1+ key_type (0 group, 1 transaction; any other, e.g. v6's share groups, gets INVALID_REQUEST with
    a message); v4+ batches keys in coordinator_keys with an error per key, v0-3 answer one key at the top level.

    Behaviour: the coordinator is the leader of the key's partition of __consumer_offsets / __transaction_state (this
    broker when it is alone). A group key needs DESCRIBE on the group
    (GROUP_AUTHORIZATION_FAILED) and makes sure __consumer_offsets exists (GroupCoordinator.ensure_offsets_topic); a
    transaction key needs DESCRIBE on the transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED) and creates
    __transaction_state as Kafka does (TransactionCoordinator.ensure_topic, transaction.state.log.replication.factor
    replicas in a cluster). A success carries error_message "NONE" (Errors.NONE.message()).
    """
    key_type = req.key_type if ctx.api_version >= 1 else GROUP_KEY_TYPE
    if ctx.api_version >= 4:
        out = []
        for key in req.coordinator_keys or ():
            code, msg, where = await _coordinator_for(ctx, key, key_type)
            if code:
                out.append(FR.Coordinator(key=key, node_id=-1, host="", port=-1, error_code=code, error_message=msg))
            else:
                out.append(FR.Coordinator(key=key, node_id=where[0], host=where[1], port=where[2], error_code=0,
                                          error_message="NONE"))   # Kafka: Errors.NONE.message()
        return FR.FindCoordinatorResponse(throttle_time_ms=0, coordinators=out)
    code, msg, where = await _coordinator_for(ctx, req.key, key_type)
    if code:
        return FR.FindCoordinatorResponse(throttle_time_ms=0, error_code=code, error_message=msg, node_id=-1,
                                          host="", port=-1)
    return FR.FindCoordinatorResponse(throttle_time_ms=0, error_code=0, error_message="NONE", node_id=where[0],
                                      host=where[1], port=where[2])


# ---------------------------------------------------------------- JoinGroup / SyncGroup / Heartbeat / LeaveGroup

@api("JoinGroup", 0, 9)
async def join_group(ctx: RequestContext, req: join_group_request.JoinGroupRequest) -> join_group_response.JoinGroupResponse:
    """Version notes: v0 has no rebalance timeout (the session timeout stands in); v4+ new members must rejoin with the
    member id they are given (the coordinator, told the version, answers MEMBER_ID_REQUIRED); v5+ group_instance_id
    (static membership); v7+ protocol_name may be null (before, "" stands for none).

    Behaviour: READ on the group (GROUP_AUTHORIZATION_FAILED, as KafkaApis), then awaits GroupCoordinator.join_group,
    which holds the request until the rebalance completes and supplies the error code, generation, leader and (for the
    leader) the members' metadata.
    """
    v = ctx.api_version
    if not acl.group_allowed(ctx, acl.READ, req.group_id):
        return JR.JoinGroupResponse(throttle_time_ms=0, error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED),
                                    generation_id=-1, protocol_type=None, protocol_name=None if v >= 7 else "",
                                    leader="", skip_assignment=False, member_id=req.member_id or "", members=[])
    if (code := ctx.broker.groups.coordinator_error(req.group_id)) is not None:
        return error_response(ctx.api_key, v, req, code)
    coord = ctx.broker.groups
    protocols = [(p.name, bytes(p.metadata)) for p in (req.protocols or ())]
    rebalance_timeout = req.rebalance_timeout_ms if v >= 1 else req.session_timeout_ms
    r = await coord.join_group(req.group_id, req.member_id or "", req.group_instance_id if v >= 5 else None,
                               ctx.client_id, client_host(ctx), req.session_timeout_ms, rebalance_timeout,
                               req.protocol_type, protocols, v)
    members = [JR.JoinGroupResponseMember(member_id=mid, group_instance_id=iid, metadata=md)
               for mid, iid, md in r.members]
    protocol_name = r.protocol_name if v >= 7 else (r.protocol_name or "")
    return JR.JoinGroupResponse(throttle_time_ms=0, error_code=r.error, generation_id=r.generation_id,
                                protocol_type=r.protocol_type, protocol_name=protocol_name, leader=r.leader,
                                skip_assignment=r.skip_assignment, member_id=r.member_id, members=members)


@api("SyncGroup", 0, 5)
async def sync_group(ctx: RequestContext, req: sync_group_request.SyncGroupRequest) -> sync_group_response.SyncGroupResponse:
    """Version notes: v3+ group_instance_id; v5+ protocol_type and protocol_name, checked by the coordinator against the
    group's.

    Behaviour: READ on the group (GROUP_AUTHORIZATION_FAILED), then awaits GroupCoordinator.sync_group, which stores the
    leader's assignments and answers each member its own; on an error the assignment is empty and the protocol fields
    null.
    """
    v = ctx.api_version
    if not acl.group_allowed(ctx, acl.READ, req.group_id):
        return SR.SyncGroupResponse(throttle_time_ms=0, error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED),
                                    protocol_type=None, protocol_name=None, assignment=b"")
    if (code := ctx.broker.groups.coordinator_error(req.group_id)) is not None:
        return error_response(ctx.api_key, v, req, code)
    coord = ctx.broker.groups
    assignments = {}
    for a in req.assignments or ():
        assignments[a.member_id] = bytes(a.assignment)
    r = await coord.sync_group(req.group_id, req.generation_id, req.member_id,
                               req.group_instance_id if v >= 3 else None,
                               req.protocol_type if v >= 5 else None, req.protocol_name if v >= 5 else None,
                               assignments)
    return SR.SyncGroupResponse(throttle_time_ms=0, error_code=r.error,
                                protocol_type=r.protocol_type if r.error == 0 else None,
                                protocol_name=r.protocol_name if r.error == 0 else None,
                                assignment=r.assignment if r.error == 0 else b"")


@api("Heartbeat", 0, 4)
async def heartbeat(ctx: RequestContext, req: heartbeat_request.HeartbeatRequest) -> heartbeat_response.HeartbeatResponse:
    """Version notes: v3+ group_instance_id (static members); the rest is the same at every version.

    Behaviour: READ on the group (GROUP_AUTHORIZATION_FAILED), then GroupCoordinator.heartbeat, whose code is answered
    (e.g. REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION).
    """
    if not acl.group_allowed(ctx, acl.READ, req.group_id):
        return HR.HeartbeatResponse(throttle_time_ms=0, error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED))
    if (code := ctx.broker.groups.coordinator_error(req.group_id)) is not None:
        return error_response(ctx.api_key, ctx.api_version, req, code)
    coord = ctx.broker.groups
    code = coord.heartbeat(req.group_id, req.member_id, req.group_instance_id if ctx.api_version >= 3 else None,
                           req.generation_id)
    return HR.HeartbeatResponse(throttle_time_ms=0, error_code=code)


@api("LeaveGroup", 0, 5)
async def leave_group(ctx: RequestContext, req: leave_group_request.LeaveGroupRequest) -> leave_group_response.LeaveGroupResponse:
    """Version notes: v0-2 name one member_id and answer one code (the group's, else that member's); v3+ batch members
    by member id and/or group_instance_id and answer a code per member. v5's reason is not used.

    Behaviour: READ on the group (GROUP_AUTHORIZATION_FAILED), then GroupCoordinator.leave_group, which returns the
    group-level code and one code per member.
    """
    if not acl.group_allowed(ctx, acl.READ, req.group_id):
        return LR.LeaveGroupResponse(throttle_time_ms=0, error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED),
                                     members=[])
    if (code := ctx.broker.groups.coordinator_error(req.group_id)) is not None:
        return error_response(ctx.api_key, ctx.api_version, req, code)
    coord = ctx.broker.groups
    if ctx.api_version >= 3:
        members = [(m.member_id or "", m.group_instance_id) for m in (req.members or ())]
    else:
        members = [(req.member_id or "", None)]
    top, errors = coord.leave_group(req.group_id, members)
    if ctx.api_version < 3:
        return LR.LeaveGroupResponse(throttle_time_ms=0, error_code=top or (errors[0] if errors else 0))
    return LR.LeaveGroupResponse(throttle_time_ms=0, error_code=top, members=[
        LR.MemberResponse(member_id=mid, group_instance_id=iid, error_code=e)
        for (mid, iid), e in zip(members, errors)])


# ---------------------------------------------------------------- DescribeGroups / ListGroups / DeleteGroups

@api("DescribeGroups", 0, 5)
async def describe_groups(ctx: RequestContext, req: describe_groups_request.DescribeGroupsRequest) -> describe_groups_response.DescribeGroupsResponse:
    """Version notes: v3+ authorized_operations when include_authorized_operations is set (else the "unknown" sentinel);
    v4+ members carry group_instance_id (the encoder leaves it out before).

    Behaviour: DESCRIBE on each group (GROUP_AUTHORIZATION_FAILED, as DescribeGroupsResponse.groupError), then
    GroupCoordinator.describe_group; an unknown group is answered Dead with no error. Member metadata, assignments and
    the protocol name are filled only while the group is Stable.
    """
    coord = ctx.broker.groups
    with_ops = ctx.api_version >= 3 and req.include_authorized_operations
    out = []
    for gid in req.groups or ():
        if not acl.group_allowed(ctx, acl.DESCRIBE, gid):   # DescribeGroupsResponse.groupError
            out.append(DR.DescribedGroup(error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED), group_id=gid,
                                         group_state="", protocol_type="", protocol_data="", members=[],
                                         authorized_operations=UNKNOWN_OPS))
            continue
        if (code := coord.coordinator_error(gid)) is not None:
            out.append(DR.DescribedGroup(error_code=int(code), group_id=gid, group_state="", protocol_type="",
                                         protocol_data="", members=[], authorized_operations=UNKNOWN_OPS))
            continue
        ops = acl.authorized_operations(ctx, acl.R_GROUP, gid, GROUP_OPS) if with_ops else UNKNOWN_OPS
        g = coord.describe_group(gid)
        if g is None:
            out.append(DR.DescribedGroup(error_code=0, group_id=gid, group_state="Dead", protocol_type="",
                                         protocol_data="", members=[], authorized_operations=ops))
            continue
        stable = g.state == STABLE
        members = []
        for m in g.members.values():
            members.append(DR.DescribedGroupMember(
                member_id=m.member_id, group_instance_id=m.group_instance_id, client_id=m.client_id,
                client_host=m.client_host,
                member_metadata=m.metadata(g.protocol_name) if stable else b"",
                member_assignment=m.assignment if stable else b""))
        out.append(DR.DescribedGroup(error_code=0, group_id=gid, group_state=g.state,
                                     protocol_type=g.protocol_type or "",
                                     protocol_data=(g.protocol_name or "") if stable else "",
                                     members=members, authorized_operations=ops))
    return DR.DescribeGroupsResponse(throttle_time_ms=0, groups=out)


@api("ListGroups", 0, 5)
async def list_groups(ctx: RequestContext, req: list_groups_request.ListGroupsRequest) -> list_groups_response.ListGroupsResponse:
    """Version notes: v4+ states_filter (compared case-insensitively); v5+ types_filter, where only "classic" matches
    (kafkapy has only classic groups) and group_type is always "classic".

    Behaviour: as KafkaApis, every group for a principal with DESCRIBE on the cluster, else only the groups it may
    DESCRIBE, silently (no error code); the groups come from GroupCoordinator.list_groups, sorted by id.
    """
    coord = ctx.broker.groups
    v = ctx.api_version
    states = {s.lower() for s in (req.states_filter or ())} if v >= 4 else set()
    types = {t.lower() for t in (req.types_filter or ())} if v >= 5 else set()
    out = []
    # KafkaApis: every group with DESCRIBE on the cluster, else the groups the principal may DESCRIBE
    every = acl.allowed_quietly(ctx, acl.DESCRIBE, acl.R_CLUSTER, acl.CLUSTER_NAME)
    for g in sorted(coord.list_groups(), key=lambda g: g.group_id):
        if not every and not acl.allowed_quietly(ctx, acl.DESCRIBE, acl.R_GROUP, g.group_id):
            continue
        if states and g.state.lower() not in states:
            continue
        if types and CLASSIC not in types:
            continue
        out.append(LGR.ListedGroup(group_id=g.group_id, protocol_type=g.protocol_type or "", group_state=g.state,
                                   group_type=CLASSIC))
    return LGR.ListGroupsResponse(throttle_time_ms=0, error_code=0, groups=out)


@api("DeleteGroups", 0, 2)
async def delete_groups(ctx: RequestContext, req: delete_groups_request.DeleteGroupsRequest) -> delete_groups_response.DeleteGroupsResponse:
    """Version notes: none; v2 only makes the request flexible.

    Behaviour: DELETE on each group (GROUP_AUTHORIZATION_FAILED); the others go to GroupCoordinator.delete_groups, whose
    per-group codes (e.g. NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND) are answered in request order.
    """
    coord = ctx.broker.groups
    names = list(req.groups_names or ())
    denied = {n for n in names if not acl.group_allowed(ctx, acl.DELETE, n)}
    elsewhere = {n: coord.coordinator_error(n) for n in names if n not in denied}
    elsewhere = {n: int(code) for n, code in elsewhere.items() if code is not None}
    res = coord.delete_groups([n for n in names if n not in denied and n not in elsewhere])
    res.update({n: int(ErrorCode.GROUP_AUTHORIZATION_FAILED) for n in denied})
    res.update(elsewhere)
    return DelR.DeleteGroupsResponse(throttle_time_ms=0, results=[
        DelR.DeletableGroupResult(group_id=n, error_code=res[n]) for n in names])
