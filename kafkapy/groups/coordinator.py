"""The group coordinator: Kafka's classic group protocol (GroupCoordinator + GroupMetadataManager).

Sequencing follows Kafka: JoinGroup long-polls until every known member has rejoined (or the rebalance timeout
passes), the first member is the leader, SyncGroup hands out the leader's assignment, heartbeats answer
REBALANCE_IN_PROGRESS while a rebalance is under way, and session / rebalance / pending-sync timeouts are asyncio
timers (``loop.call_later``), never polling loops. Committed offsets and group metadata are records in the
compacted ``__consumer_offsets`` topic, read back on start.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

from kafkapy.groups import records as grec
from kafkapy.groups.group import (COMPLETING_REBALANCE, CONSUMER_PROTOCOL_TYPE, DEAD, EMPTY, PREPARING_REBALANCE,
                                  STABLE, Group, Member, MemberError, OffsetAndMetadata, now_ms)
from kafkapy.internal_topics import OFFSETS_TOPIC, iter_batches, partition_for
from kafkapy.partition import AppendOrigin, NotLeaderError
from storage.errors import StorageError
from wire.messages.error_codes import ErrorCode
from wire.records import CONTROL_COMMIT, build_batch, parse_control_record

log = logging.getLogger("kafkapy.groups")

NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000    # Kafka's GroupCoordinator.NewMemberJoinTimeoutMs


class JoinResult(NamedTuple):
    error: int
    member_id: str
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: list = []          # [(member id, group instance id, metadata)] for the leader
    skip_assignment: bool = False


class SyncResult(NamedTuple):
    error: int
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


def _join_error(code: ErrorCode, member_id: str) -> JoinResult:
    return JoinResult(int(code), member_id)


class GroupCoordinator:
    def __init__(self, broker):
        self.broker = broker
        self.groups: dict[str, Group] = {}
        # a cluster: the __consumer_offsets partitions this broker leads, hence the groups it coordinates; None: a
        # single broker, which coordinates every group
        self.owned: set[int] | None = set() if broker.cluster is not None else None
        self._cleanup_handle = None
        self._closed = False

    # ---------------------------------------------------------------- config and timers

    def cfg(self, name: str) -> int:
        return self.broker.config.get_int(name)

    def _later(self, delay_ms: int, fn, *args):
        return asyncio.get_running_loop().call_later(max(delay_ms, 0) / 1000, self._guard, fn, args)

    def _guard(self, fn, args) -> None:
        if self._closed:
            return
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - a timer must not take the loop down
            log.exception("group coordinator timer %s failed", getattr(fn, "__name__", fn))

    def close(self) -> None:
        """Cancel every timer (the broker calls this on stop). Waiting JoinGroup/SyncGroup calls are cancelled by
        the server when it closes their connections."""
        self._closed = True
        if self._cleanup_handle is not None:
            self._cleanup_handle.cancel()
        for g in self.groups.values():
            self._cancel_group_timers(g)
            for m in g.members.values():
                if m.heartbeat_handle is not None:
                    m.heartbeat_handle.cancel()
            for h in g.pending_members.values():
                if h is not None:
                    h.cancel()

    @staticmethod
    def _cancel_group_timers(g: Group) -> None:
        for name in ("join_timer", "sync_timer"):
            h = getattr(g, name)
            if h is not None:
                h.cancel()
                setattr(g, name, None)

    def start(self) -> None:
        self.load()
        self._schedule_cleanup()

    def _schedule_cleanup(self) -> None:
        try:
            self._cleanup_handle = self._later(self.cfg("offsets.retention.check.interval.ms"), self._cleanup_tick)
        except RuntimeError:   # no running loop (unit use without asyncio): no periodic cleanup
            self._cleanup_handle = None

    def _cleanup_tick(self) -> None:
        self.cleanup_group_metadata()
        self._schedule_cleanup()

    # ---------------------------------------------------------------- heartbeats

    def _schedule_heartbeat(self, g: Group, m: Member, timeout_ms: int | None = None) -> None:
        if m.heartbeat_handle is not None:
            m.heartbeat_handle.cancel()
        m.heartbeat_handle = self._later(m.session_timeout_ms if timeout_ms is None else timeout_ms,
                                         self._heartbeat_expired, g, m)

    def _heartbeat_expired(self, g: Group, m: Member) -> None:
        m.heartbeat_handle = None
        if g.members.get(m.member_id) is not m:
            return
        if not m.is_new and (m.awaiting_join or m.awaiting_sync):
            return   # the rebalance and pending-sync timers cover members inside a rebalance
        log.info("member %s in group %s has failed, removing it from the group (session timeout %d ms)",
                 m.member_id, g.group_id, m.session_timeout_ms)
        self._remove_member_and_update_group(g, m)

    # ---------------------------------------------------------------- JoinGroup

    async def join_group(self, group_id: str, member_id: str, group_instance_id: str | None, client_id: str | None,
                         client_host: str, session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str,
                         protocols: list[tuple[str, bytes]], version: int) -> JoinResult:
        r = self._join(group_id, member_id, group_instance_id, client_id, client_host, session_timeout_ms,
                       rebalance_timeout_ms, protocol_type, protocols, version)
        if isinstance(r, JoinResult):
            return r
        return await r

    def _join(self, group_id, member_id, instance_id, client_id, client_host, session_timeout_ms,
              rebalance_timeout_ms, protocol_type, protocols, version):
        if not group_id:
            return _join_error(ErrorCode.INVALID_GROUP_ID, member_id)
        if not self.cfg("group.min.session.timeout.ms") <= session_timeout_ms <= \
                self.cfg("group.max.session.timeout.ms"):
            return _join_error(ErrorCode.INVALID_SESSION_TIMEOUT, member_id)
        if rebalance_timeout_ms < 0:
            rebalance_timeout_ms = session_timeout_ms
        unknown = member_id == ""
        g = self.groups.get(group_id)
        created = False
        if g is None:
            if not unknown:
                return _join_error(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
            g = Group(group_id, current_state_timestamp=now_ms())
            self.groups[group_id] = g
            created = True
        r = self._do_join(g, member_id, instance_id, client_id, client_host, session_timeout_ms,
                          rebalance_timeout_ms, protocol_type, protocols, version)
        if created and isinstance(r, JoinResult) and not g.members and not g.pending_members and not g.offsets:
            self.groups.pop(group_id, None)
        return r

    def _do_join(self, g: Group, member_id, instance_id, client_id, client_host, session_timeout_ms,
                 rebalance_timeout_ms, protocol_type, protocols, version):
        if g.is_(DEAD):
            return _join_error(ErrorCode.COORDINATOR_NOT_AVAILABLE if member_id == "" else
                               ErrorCode.UNKNOWN_MEMBER_ID, member_id)
        if not g.supports_protocols(protocol_type, [n for n, _ in protocols]):
            return _join_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id)
        args = (client_id, client_host, session_timeout_ms, rebalance_timeout_ms, protocol_type, protocols, version)
        if member_id == "":
            if instance_id is None or instance_id not in g.static_members:
                if len(g.members) + len(g.pending_members) >= self.cfg("group.max.size"):
                    return _join_error(ErrorCode.GROUP_MAX_SIZE_REACHED, member_id)
            new_id = g.generate_member_id(client_id, instance_id)
            if instance_id is not None:
                old_id = g.static_members.get(instance_id)
                if old_id is not None:
                    return self._update_static_member(g, old_id, new_id, instance_id, *args)
                return self._add_member_and_rebalance(g, new_id, instance_id, *args)
            if version >= 4:   # KIP-394: the member must come back with the id we give it
                g.pending_members[new_id] = self._later(session_timeout_ms, self._pending_member_expired, g, new_id)
                return _join_error(ErrorCode.MEMBER_ID_REQUIRED, new_id)
            return self._add_member_and_rebalance(g, new_id, None, *args)
        # a known member id
        if member_id in g.pending_members:
            if instance_id is not None:
                return _join_error(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
            h = g.pending_members.pop(member_id)
            if h is not None:
                h.cancel()
            return self._add_member_and_rebalance(g, member_id, None, *args)
        try:
            g.validate_member(member_id, instance_id)
        except MemberError as e:
            return _join_error(e.code, member_id)
        m = g.members[member_id]
        if g.is_(PREPARING_REBALANCE):
            return self._update_member_and_rebalance(g, m, protocols, rebalance_timeout_ms, session_timeout_ms,
                                                     version)
        if g.is_(COMPLETING_REBALANCE):
            if m.matches(protocols):   # the member lost the JoinGroup answer: same answer again
                self._schedule_heartbeat(g, m)
                return self._current_join_result(g, m)
            return self._update_member_and_rebalance(g, m, protocols, rebalance_timeout_ms, session_timeout_ms,
                                                     version)
        if g.is_(STABLE):
            if g.is_leader(member_id) or not m.matches(protocols):
                return self._update_member_and_rebalance(g, m, protocols, rebalance_timeout_ms, session_timeout_ms,
                                                         version)
            self._schedule_heartbeat(g, m)
            return JoinResult(0, member_id, g.generation_id, g.protocol_type, g.protocol_name, g.leader_id or "",
                              [], False)
        return _join_error(ErrorCode.UNKNOWN_MEMBER_ID, member_id)

    def _current_join_result(self, g: Group, m: Member) -> JoinResult:
        return JoinResult(0, m.member_id, g.generation_id, g.protocol_type, g.protocol_name, g.leader_id or "",
                          g.current_member_metadata() if g.is_leader(m.member_id) else [], False)

    def _add_member_and_rebalance(self, g: Group, member_id, instance_id, client_id, client_host, session_timeout_ms,
                                  rebalance_timeout_ms, protocol_type, protocols, version):
        m = Member(member_id, instance_id, client_id or "", client_host, rebalance_timeout_ms, session_timeout_ms,
                   protocol_type, list(protocols))
        m.is_new = True
        m.join_version = version
        fut = asyncio.get_running_loop().create_future()
        m.join_future = fut
        g.add(m)
        if g.is_(PREPARING_REBALANCE) and g.generation_id == 0:
            g.new_member_added = True
        # a new member cannot heartbeat before its join completes: give it Kafka's generous join timeout
        self._schedule_heartbeat(g, m, NEW_MEMBER_JOIN_TIMEOUT_MS)
        self._maybe_prepare_rebalance(g, f"adding new member {member_id}")
        self._try_complete_join(g)
        return fut

    def _update_member_and_rebalance(self, g: Group, m: Member, protocols, rebalance_timeout_ms, session_timeout_ms,
                                     version):
        m.protocols = list(protocols)
        m.rebalance_timeout_ms = rebalance_timeout_ms
        m.session_timeout_ms = session_timeout_ms
        m.join_version = version
        if m.awaiting_join:   # a second JoinGroup for the same member (another connection): the newer one wins
            m.join_future.set_result(_join_error(ErrorCode.REBALANCE_IN_PROGRESS, m.member_id))
        fut = asyncio.get_running_loop().create_future()
        m.join_future = fut
        self._maybe_prepare_rebalance(g, f"updating metadata for member {m.member_id}")
        self._try_complete_join(g)
        return fut

    def _update_static_member(self, g: Group, old_id, new_id, instance_id, client_id, client_host, session_timeout_ms,
                              rebalance_timeout_ms, protocol_type, protocols, version):
        """KIP-345: a static member came back with an unknown member id; it takes the old member's place."""
        current_leader = g.leader_id or ""
        old = g.members[old_id]
        if old.awaiting_join:
            old.join_future.set_result(_join_error(ErrorCode.FENCED_INSTANCE_ID, old_id))
        if old.awaiting_sync:
            old.sync_future.set_result(SyncResult(int(ErrorCode.FENCED_INSTANCE_ID)))
        m = g.replace_static_member(instance_id, old_id, new_id)
        old_protocols = m.protocols
        m.protocols = list(protocols)
        m.rebalance_timeout_ms = rebalance_timeout_ms
        m.session_timeout_ms = session_timeout_ms
        m.client_id = client_id or ""
        m.client_host = client_host
        m.join_version = version
        self._schedule_heartbeat(g, m)
        fut = asyncio.get_running_loop().create_future()
        m.join_future = fut
        log.info("static member %s of group %s rejoined as %s", instance_id, g.group_id, new_id)
        if g.is_(STABLE):
            if g.protocol_name == g.select_protocol():
                # no rebalance: persist the new member id and answer with the current generation
                err = self._store_group(g, {mid: mm.assignment for mid, mm in g.members.items()})
                if err:
                    # undo: the old member id stays
                    g.replace_static_member(instance_id, new_id, old_id)
                    m.protocols = old_protocols
                    fut.set_result(_join_error(err, ""))
                    return fut
                if version >= 9 and g.is_leader(new_id):
                    # KIP-814: the leader learns the members but must not compute a new assignment
                    fut.set_result(JoinResult(0, new_id, g.generation_id, g.protocol_type, g.protocol_name, new_id,
                                              g.current_member_metadata(), True))
                else:
                    fut.set_result(JoinResult(0, new_id, g.generation_id, g.protocol_type, g.protocol_name,
                                              current_leader, [], False))
            else:
                self._maybe_prepare_rebalance(g, f"static member {instance_id} changed the selected protocol")
        elif g.is_(COMPLETING_REBALANCE):
            self._prepare_rebalance(g, f"updating metadata for static member {instance_id}")
        elif g.is_(PREPARING_REBALANCE):
            self._try_complete_join(g)
        return fut

    def _pending_member_expired(self, g: Group, member_id: str) -> None:
        if member_id in g.pending_members:
            del g.pending_members[member_id]
            log.info("pending member %s of group %s did not rejoin in time", member_id, g.group_id)
            if g.is_(PREPARING_REBALANCE):
                self._try_complete_join(g)

    # ---------------------------------------------------------------- rebalance

    def _maybe_prepare_rebalance(self, g: Group, reason: str) -> None:
        if g.can_rebalance():
            self._prepare_rebalance(g, reason)

    def _prepare_rebalance(self, g: Group, reason: str) -> None:
        if g.is_(COMPLETING_REBALANCE):
            self._reset_and_propagate_assignment_error(g, ErrorCode.REBALANCE_IN_PROGRESS)
        if g.sync_timer is not None:
            g.sync_timer.cancel()
            g.sync_timer = None
        g.pending_sync_members.clear()
        if g.join_timer is not None:
            g.join_timer.cancel()
            g.join_timer = None
        was_empty = g.is_(EMPTY)
        log.info("preparing to rebalance group %s in state %s with old generation %d (reason: %s)",
                 g.group_id, g.state, g.generation_id, reason)
        g.transition(PREPARING_REBALANCE)
        if was_empty:
            delay = self.cfg("group.initial.rebalance.delay.ms")
            remaining = max(g.rebalance_timeout_ms() - delay, 0)
            g.initial_delay_active = True
            g.new_member_added = False
            g.join_timer = self._later(delay, self._initial_join_expired, g, remaining)
        else:
            g.initial_delay_active = False
            g.join_timer = self._later(g.rebalance_timeout_ms(), self._join_expired, g)
            self._try_complete_join(g)

    def _initial_join_expired(self, g: Group, remaining: int) -> None:
        g.join_timer = None
        if not g.is_(PREPARING_REBALANCE):
            return
        if g.new_member_added and remaining > 0:
            g.new_member_added = False
            delay = min(self.cfg("group.initial.rebalance.delay.ms"), remaining)
            g.join_timer = self._later(delay, self._initial_join_expired, g, max(remaining - delay, 0))
            return
        g.initial_delay_active = False
        self._complete_join(g)

    def _join_expired(self, g: Group) -> None:
        g.join_timer = None
        if g.is_(PREPARING_REBALANCE):
            self._complete_join(g)

    def _try_complete_join(self, g: Group) -> None:
        if g.is_(PREPARING_REBALANCE) and not g.initial_delay_active and g.all_members_joined():
            self._complete_join(g)

    def _complete_join(self, g: Group) -> None:
        if g.join_timer is not None:
            g.join_timer.cancel()
            g.join_timer = None
        if not g.is_(PREPARING_REBALANCE):
            return
        g.initial_delay_active = False
        for m in list(g.members.values()):
            if not m.awaiting_join:
                log.info("member %s of group %s did not rejoin in time; removing it", m.member_id, g.group_id)
                self._drop_member(g, m)
        if g.is_(DEAD):
            return
        g.init_next_generation()
        if g.is_(EMPTY):
            log.info("group %s with generation %d is now empty", g.group_id, g.generation_id)
            self._store_group(g, {})
            return
        log.info("stabilized group %s generation %d with %d member(s), protocol %s", g.group_id, g.generation_id,
                 len(g.members), g.protocol_name)
        for m in g.members.values():
            fut = m.join_future
            m.is_new = False
            fut.set_result(self._current_join_result(g, m))
            self._schedule_heartbeat(g, m)
        g.sync_timer = self._later(g.rebalance_timeout_ms(), self._sync_expired, g, g.generation_id)

    def _sync_expired(self, g: Group, generation: int) -> None:
        g.sync_timer = None
        if g.generation_id != generation or g.state not in (COMPLETING_REBALANCE, STABLE):
            return
        if not g.pending_sync_members:
            return
        for mid in list(g.pending_sync_members):
            m = g.members.get(mid)
            if m is not None:
                log.info("member %s of group %s did not send SyncGroup in time; removing it", mid, g.group_id)
                self._drop_member(g, m)
        g.pending_sync_members.clear()
        self._prepare_rebalance(g, "members did not sync in time")

    def _drop_member(self, g: Group, m: Member) -> None:
        if m.heartbeat_handle is not None:
            m.heartbeat_handle.cancel()
            m.heartbeat_handle = None
        g.remove(m.member_id)

    def _remove_member_and_update_group(self, g: Group, m: Member) -> None:
        if m.awaiting_join:
            m.join_future.set_result(_join_error(ErrorCode.UNKNOWN_MEMBER_ID, m.member_id))
        if m.awaiting_sync:
            m.sync_future.set_result(SyncResult(int(ErrorCode.UNKNOWN_MEMBER_ID)))
        self._drop_member(g, m)
        if g.state in (STABLE, COMPLETING_REBALANCE):
            self._maybe_prepare_rebalance(g, f"removing member {m.member_id}")
        elif g.is_(PREPARING_REBALANCE):
            self._try_complete_join(g)

    def _reset_and_propagate_assignment_error(self, g: Group, code: ErrorCode) -> None:
        for m in g.members.values():
            m.assignment = b""
        self._propagate(g, code)

    def _propagate(self, g: Group, code: ErrorCode) -> None:
        for m in g.members.values():
            if m.awaiting_sync:
                m.sync_future.set_result(SyncResult(int(code), g.protocol_type, g.protocol_name,
                                                    m.assignment if code == 0 else b""))
                self._schedule_heartbeat(g, m)

    # ---------------------------------------------------------------- SyncGroup

    async def sync_group(self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None,
                         protocol_type: str | None, protocol_name: str | None,
                         assignments: dict[str, bytes]) -> SyncResult:
        r = self._sync(group_id, generation_id, member_id, group_instance_id, protocol_type, protocol_name,
                       assignments)
        if isinstance(r, SyncResult):
            return r
        return await r

    def _sync(self, group_id, generation_id, member_id, instance_id, protocol_type, protocol_name, assignments):
        g = self.groups.get(group_id)
        if not group_id:
            return SyncResult(int(ErrorCode.INVALID_GROUP_ID))
        if g is None:
            return SyncResult(int(ErrorCode.UNKNOWN_MEMBER_ID))
        if g.is_(DEAD):
            return SyncResult(int(ErrorCode.COORDINATOR_NOT_AVAILABLE))
        try:
            g.validate_member(member_id, instance_id)
        except MemberError as e:
            return SyncResult(int(e.code))
        if generation_id != g.generation_id:
            return SyncResult(int(ErrorCode.ILLEGAL_GENERATION))
        if (protocol_type is not None and protocol_type != g.protocol_type) or \
                (protocol_name is not None and protocol_name != g.protocol_name):
            return SyncResult(int(ErrorCode.INCONSISTENT_GROUP_PROTOCOL))
        m = g.members[member_id]
        if g.is_(EMPTY):
            return SyncResult(int(ErrorCode.UNKNOWN_MEMBER_ID))
        if g.is_(PREPARING_REBALANCE):
            return SyncResult(int(ErrorCode.REBALANCE_IN_PROGRESS))
        if g.is_(STABLE):
            g.pending_sync_members.discard(member_id)
            self._schedule_heartbeat(g, m)
            return SyncResult(0, g.protocol_type, g.protocol_name, m.assignment)
        # CompletingRebalance: wait for the leader's assignment
        fut = asyncio.get_running_loop().create_future()
        if m.awaiting_sync:
            m.sync_future.set_result(SyncResult(int(ErrorCode.REBALANCE_IN_PROGRESS)))
        m.sync_future = fut
        g.pending_sync_members.discard(member_id)
        self._schedule_heartbeat(g, m)
        if g.is_leader(member_id):
            full = {mid: bytes(assignments.get(mid) or b"") for mid in g.members}
            missing = [mid for mid in g.members if mid not in assignments]
            if missing:
                log.warning("leader of group %s sent no assignment for %s", g.group_id, missing)
            err = self._store_group(g, full)
            if g.is_(COMPLETING_REBALANCE) and generation_id == g.generation_id:
                if err:
                    self._reset_and_propagate_assignment_error(g, err)
                    self._maybe_prepare_rebalance(g, "failed to store the group")
                else:
                    for mid, a in full.items():
                        g.members[mid].assignment = a
                    g.transition(STABLE)
                    self._propagate(g, ErrorCode.NONE)
                    log.info("assignment received from leader %s for group %s generation %d", member_id,
                             g.group_id, g.generation_id)
        return fut

    # ---------------------------------------------------------------- Heartbeat / LeaveGroup

    def heartbeat(self, group_id: str, member_id: str, group_instance_id: str | None, generation_id: int) -> int:
        g = self.groups.get(group_id)
        if not group_id:
            return int(ErrorCode.INVALID_GROUP_ID)
        if g is None:
            return int(ErrorCode.UNKNOWN_MEMBER_ID)
        if g.is_(DEAD):
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        try:
            g.validate_member(member_id, group_instance_id)
        except MemberError as e:
            return int(e.code)
        if generation_id != g.generation_id:
            return int(ErrorCode.ILLEGAL_GENERATION)
        m = g.members[member_id]
        if g.is_(EMPTY):
            return int(ErrorCode.UNKNOWN_MEMBER_ID)
        self._schedule_heartbeat(g, m)
        if g.is_(PREPARING_REBALANCE):
            return int(ErrorCode.REBALANCE_IN_PROGRESS)
        return 0

    def leave_group(self, group_id: str, members: list[tuple[str, str | None]]) -> tuple[int, list[int]]:
        """(top-level error, per-member errors) for [(member id, group instance id)]."""
        if not group_id:
            return int(ErrorCode.INVALID_GROUP_ID), [int(ErrorCode.INVALID_GROUP_ID)] * len(members)
        g = self.groups.get(group_id)
        if g is None:
            return 0, [int(ErrorCode.UNKNOWN_MEMBER_ID)] * len(members)
        if g.is_(DEAD):
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE), [int(ErrorCode.COORDINATOR_NOT_AVAILABLE)] * len(members)
        errors = []
        for member_id, instance_id in members:
            if member_id == "":
                current = g.static_members.get(instance_id) if instance_id is not None else None
                if current is None:
                    errors.append(int(ErrorCode.UNKNOWN_MEMBER_ID))
                    continue
                log.info("static member %s (%s) of group %s left", instance_id, current, g.group_id)
                self._remove_member_and_update_group(g, g.members[current])
                errors.append(0)
            elif member_id in g.pending_members:
                h = g.pending_members.pop(member_id)
                if h is not None:
                    h.cancel()
                if g.is_(PREPARING_REBALANCE):
                    self._try_complete_join(g)
                errors.append(0)
            else:
                try:
                    g.validate_member(member_id, instance_id)
                except MemberError as e:
                    errors.append(int(e.code))
                    continue
                log.info("member %s of group %s left", member_id, g.group_id)
                self._remove_member_and_update_group(g, g.members[member_id])
                errors.append(0)
        return 0, errors

    # ---------------------------------------------------------------- offsets

    def commit_offsets(self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None,
                       offsets: dict[tuple[str, int], OffsetAndMetadata]) -> dict[tuple[str, int], int]:
        # KafkaApis answers unknown topics/partitions before the coordinator sees the request: a stale
        # generation does not hide them, and a request with only unknown partitions touches no group
        unknown = {tp: int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) for tp in offsets
                   if self.broker.partition_log(*tp) is None}
        if unknown:
            offsets = {tp: o for tp, o in offsets.items() if tp not in unknown}
            if not offsets:
                return unknown
            return {**self.commit_offsets(group_id, generation_id, member_id, group_instance_id, offsets),
                    **unknown}

        def all_(code) -> dict:
            return {tp: int(code) for tp in offsets}
        g = self.groups.get(group_id)
        if g is None:
            if generation_id >= 0:
                return all_(ErrorCode.ILLEGAL_GENERATION)
            g = Group(group_id, current_state_timestamp=now_ms())
            self.groups[group_id] = g
        if g.is_(DEAD):
            return all_(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if g.is_static_member_fenced(member_id, group_instance_id):
            return all_(ErrorCode.FENCED_INSTANCE_ID)
        if not (generation_id < 0 and g.is_(EMPTY)):
            if g.is_(COMPLETING_REBALANCE):
                return all_(ErrorCode.REBALANCE_IN_PROGRESS)
            if not g.has(member_id):
                return all_(ErrorCode.UNKNOWN_MEMBER_ID)
            if generation_id != g.generation_id:
                return all_(ErrorCode.ILLEGAL_GENERATION)
            self._schedule_heartbeat(g, g.members[member_id])
        return self._store_offsets(g, offsets)

    def _store_offsets(self, g: Group, offsets: dict) -> dict[tuple[str, int], int]:
        result = {}
        good = {}
        max_md = self.cfg("offset.metadata.max.bytes")
        for tp, o in offsets.items():
            if self.broker.partition_log(*tp) is None:
                result[tp] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            elif o.metadata is not None and len(o.metadata.encode("utf-16-le")) // 2 > max_md:   # String.length()
                result[tp] = int(ErrorCode.OFFSET_METADATA_TOO_LARGE)
            else:
                good[tp] = o
        if good:
            recs = [(grec.offset_commit_key(g.group_id, t, p), grec.offset_commit_value(o))
                    for (t, p), o in good.items()]
            err = self._append(g.group_id, recs)
            for tp, o in good.items():
                result[tp] = err
                if not err:
                    g.offsets[tp] = o
        return result

    def fetch_offsets(self, group_id: str, partitions: list[tuple[str, int]] | None, require_stable: bool = False
                      ) -> list[tuple[str, int, OffsetAndMetadata | None, int]]:
        g = self.groups.get(group_id)
        pending = set()
        if g is not None and require_stable:
            for d in g.pending_txn_offsets.values():
                pending |= set(d)
        if partitions is None:
            if g is None or g.is_(DEAD):
                return []
            return [(t, p, o, 0) for (t, p), o in sorted(g.offsets.items())]
        out = []
        for t, p in partitions:
            if (t, p) in pending:
                out.append((t, p, None, int(ErrorCode.UNSTABLE_OFFSET_COMMIT)))
            else:
                o = None if g is None or g.is_(DEAD) else g.offsets.get((t, p))
                out.append((t, p, o, 0))
        return out

    def delete_offsets(self, group_id: str, partitions: list[tuple[str, int]]) -> tuple[int, dict]:
        """OffsetDelete: (group error, {tp: error})."""
        g = self.groups.get(group_id)
        if not group_id:
            return int(ErrorCode.INVALID_GROUP_ID), {}
        if g is None or g.is_(DEAD):
            return int(ErrorCode.GROUP_ID_NOT_FOUND), {}
        result = {}
        deletable = []
        if g.is_(EMPTY):
            deletable = list(partitions)
        elif g.protocol_type == CONSUMER_PROTOCOL_TYPE:
            for tp in partitions:
                if g.is_subscribed_to(tp[0]):
                    result[tp] = int(ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC)
                else:
                    deletable.append(tp)
        else:
            return int(ErrorCode.NON_EMPTY_GROUP), {}
        for tp in deletable:
            result[tp] = 0
        self._remove_offsets(g, [tp for tp in deletable if tp in g.offsets])
        return 0, result

    def _remove_offsets(self, g: Group, tps) -> None:
        tps = list(tps)
        if not tps:
            return
        for tp in tps:
            g.offsets.pop(tp, None)
        recs = [(grec.offset_commit_key(g.group_id, t, p), None) for t, p in tps]
        self._append(g.group_id, recs)

    # ---------------------------------------------------------------- admin

    def describe_group(self, group_id: str) -> Group | None:
        return self.groups.get(group_id)

    def list_groups(self) -> list[Group]:
        return [g for g in self.groups.values() if not g.is_(DEAD)]

    def delete_groups(self, group_ids: list[str]) -> dict[str, int]:
        out = {}
        for gid in group_ids:
            g = self.groups.get(gid)
            if g is None or g.is_(DEAD):
                out[gid] = int(ErrorCode.GROUP_ID_NOT_FOUND)
            elif not g.is_(EMPTY):
                out[gid] = int(ErrorCode.NON_EMPTY_GROUP)
            else:
                self._delete_group(g)
                out[gid] = 0
        return out

    def _delete_group(self, g: Group) -> None:
        recs = [(grec.offset_commit_key(g.group_id, t, p), None) for t, p in g.offsets]
        recs.append((grec.group_metadata_key(g.group_id), None))
        g.offsets.clear()
        self._cancel_group_timers(g)
        g.transition(DEAD)
        self.groups.pop(g.group_id, None)
        self._append(g.group_id, recs)
        log.info("group %s deleted", g.group_id)

    def cleanup_group_metadata(self, now: int | None = None, select=None) -> int:
        """Kafka's offsets retention pass (offsets.retention.minutes); also drops empty groups with no offsets.
        ``select(group) -> partitions to remove`` replaces the expiry rule (topic deletion). Returns offsets removed."""
        now = now_ms() if now is None else now
        retention = self.cfg("offsets.retention.minutes") * 60_000
        removed = 0
        for g in list(self.groups.values()):
            if select is not None:
                expired = [tp for tp in select(g) if tp in g.offsets]
            else:
                expired = self._expired_offsets(g, now, retention)
            if expired:
                removed += len(expired)
                log.info("removing %d expired offset(s) of group %s", len(expired), g.group_id)
                self._remove_offsets(g, expired)
            if g.is_(EMPTY) and not g.offsets and not g.pending_members and not g.pending_txn_offsets:
                self._delete_group(g)
        return removed

    @staticmethod
    def _expired_offsets(g: Group, now: int, retention: int) -> list:
        pending = set()
        for d in g.pending_txn_offsets.values():
            pending |= set(d)

        def expired(base_fn, subscribed=frozenset()):
            out = []
            for tp, o in g.offsets.items():
                if tp[0] in subscribed or tp in pending:
                    continue
                if o.expire_timestamp is not None:
                    if now >= o.expire_timestamp:
                        out.append(tp)
                elif now - base_fn(o) >= retention:
                    out.append(tp)
            return out
        if g.protocol_type is not None and g.is_(EMPTY):
            return expired(lambda o: g.current_state_timestamp if g.current_state_timestamp is not None
                           else o.commit_timestamp)
        if g.protocol_type == CONSUMER_PROTOCOL_TYPE and g.subscribed_topics is not None and g.is_(STABLE):
            return expired(lambda o: o.commit_timestamp, g.subscribed_topics)
        if g.protocol_type is None:
            return expired(lambda o: o.commit_timestamp)
        return []

    def on_topic_deleted(self, topic: str) -> None:
        if topic == OFFSETS_TOPIC:
            return
        self.cleanup_group_metadata(select=lambda g: [tp for tp in g.offsets if tp[0] == topic])

    # ---------------------------------------------------------------- transactional offsets (TxnOffsetCommit)

    def txn_offset_commit(self, group_id: str, producer_id: int, producer_epoch: int,
                          offsets: dict[tuple[str, int], OffsetAndMetadata]) -> dict[tuple[str, int], int]:
        """Write offsets inside a transaction: visible to OffsetFetch only after ``complete_txn(commit=True)``."""
        g = self.groups.get(group_id)
        if g is None:
            g = Group(group_id, current_state_timestamp=now_ms())
            self.groups[group_id] = g
        result = {}
        good = {}
        for tp, o in offsets.items():
            if self.broker.partition_log(*tp) is None:
                result[tp] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            else:
                good[tp] = o
        if good:
            recs = [(grec.offset_commit_key(group_id, t, p), grec.offset_commit_value(o)) for (t, p), o in good.items()]
            err = self._append(group_id, recs, producer_id=producer_id, producer_epoch=producer_epoch)
            for tp, o in good.items():
                result[tp] = err
                if not err:
                    g.pending_txn_offsets.setdefault(producer_id, {})[tp] = o
        return result

    def on_transaction_completed(self, producer_id: int, commit: bool, partitions: set) -> None:
        """Kafka's GroupMetadataManager.handleTxnCompletion: apply or drop the transactional offset commits of
        ``producer_id`` in the groups of the ``__consumer_offsets`` partitions the transaction touched (the
        transaction coordinator calls this once its markers are written)."""
        offsets_parts = {p for t, p in partitions if t == OFFSETS_TOPIC}
        if not offsets_parts:
            return
        for gid, g in list(self.groups.items()):
            if producer_id in g.pending_txn_offsets and self.offsets_partition_for(gid) in offsets_parts:
                self.complete_txn(gid, producer_id, commit)

    def complete_txn(self, group_id: str, producer_id: int, commit: bool) -> None:
        """Apply (commit) or drop (abort) a producer's pending offsets; the marker itself is written by the
        transaction coordinator into the group's ``__consumer_offsets`` partition."""
        g = self.groups.get(group_id)
        if g is None:
            return
        pend = g.pending_txn_offsets.pop(producer_id, {})
        if commit:
            g.offsets.update(pend)

    def offsets_partition_for(self, group_id: str) -> int:
        t = self._offsets_topic()
        return partition_for(group_id, t.partitions)

    # ---------------------------------------------------------------- storage

    def _offsets_topic_configs(self) -> dict[str, str]:
        # GroupMetadataManager.offsetsTopicConfigs
        return {"cleanup.policy": "compact", "segment.bytes": str(self.cfg("offsets.topic.segment.bytes")),
                "compression.type": "producer"}

    def _offsets_topic(self):
        t = self.broker.topics.get(OFFSETS_TOPIC)
        if t is None:
            if self.broker.cluster is not None:     # a cluster creates it through FindCoordinator, never here
                raise CoordinatorNotAvailableError(f"{OFFSETS_TOPIC} does not exist yet")
            t = self.broker.create_topic(OFFSETS_TOPIC, self.cfg("offsets.topic.num.partitions"), 1,
                                         self._offsets_topic_configs(), internal=True)
        return t

    async def ensure_offsets_topic(self) -> None:
        """FindCoordinator(GROUP): create __consumer_offsets when it does not exist yet (Kafka's
        autoTopicCreationManager), with offsets.topic.replication.factor replicas in a cluster."""
        if OFFSETS_TOPIC in self.broker.topics:
            return
        from kafkapy.broker import TopicError
        rf = self.cfg("offsets.topic.replication.factor") if self.broker.cluster is not None else 1
        try:
            await self.broker.create_topic_in_cluster(OFFSETS_TOPIC, self.cfg("offsets.topic.num.partitions"), rf,
                                                      self._offsets_topic_configs(), internal=True)
        except TopicError as e:
            if e.code != ErrorCode.TOPIC_ALREADY_EXISTS:
                raise CoordinatorNotAvailableError(str(e)) from None

    # ---------------------------------------------------------------- which groups this broker coordinates

    def coordinator_error(self, group_id: str) -> ErrorCode | None:
        """NOT_COORDINATOR when this broker does not lead the group's __consumer_offsets partition (a cluster), as
        Kafka's GroupCoordinator answers; None when it coordinates the group."""
        if self.owned is None:
            return None
        t = self.broker.topics.get(OFFSETS_TOPIC)
        if t is None or partition_for(group_id, t.partitions) not in self.owned:
            return ErrorCode.NOT_COORDINATOR
        return None

    async def wait_replicated(self, group_id: str, timeout: float) -> ErrorCode | None:
        """After a commit: until what this coordinator wrote for the group is replicated to the ISR of its
        __consumer_offsets partition (Kafka appends offsets with acks=all). A single broker: at once. The error the
        commit answers otherwise (GroupMetadataManager: COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR)."""
        t = self.broker.topics.get(OFFSETS_TOPIC)
        partition = None if t is None else self.broker.partition(OFFSETS_TOPIC, partition_for(group_id, t.partitions))
        if partition is None:
            return ErrorCode.NOT_COORDINATOR
        code = await partition.wait_for_high_watermark(partition.log.log_end_offset, timeout)
        if code == ErrorCode.NOT_LEADER_OR_FOLLOWER:
            return ErrorCode.NOT_COORDINATOR
        if code in (ErrorCode.REQUEST_TIMED_OUT, ErrorCode.NOT_ENOUGH_REPLICAS,
                    ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        return None

    def partition_leadership(self, partition: int, leader: bool) -> None:
        """A cluster: this broker became (or stopped being) the leader of ``__consumer_offsets-<partition>``: load
        its groups (Kafka's onElection) or drop them (onResignation)."""
        if self.owned is None:
            self.owned = set()
        if leader and partition not in self.owned:
            lg = self.broker.partition_log(OFFSETS_TOPIC, partition)
            if lg is not None:
                self._load_partition(lg)
            self.owned.add(partition)
            log.info("coordinating the groups of %s-%d", OFFSETS_TOPIC, partition)
        elif not leader and partition in self.owned:
            self.owned.discard(partition)
            t = self.broker.topics.get(OFFSETS_TOPIC)
            for gid in [g for g in self.groups if t is None or partition_for(g, t.partitions) == partition]:
                g = self.groups.pop(gid)
                self._cancel_group_timers(g)
                for m in g.members.values():
                    if m.heartbeat_handle is not None:
                        m.heartbeat_handle.cancel()
                    for fut in (m.join_future, m.sync_future):
                        if fut is not None and not fut.done():
                            fut.cancel()
            log.info("no longer coordinating the groups of %s-%d", OFFSETS_TOPIC, partition)

    def _append(self, group_id: str, recs: list, producer_id: int = -1, producer_epoch: int = -1,
                too_large: ErrorCode = ErrorCode.INVALID_COMMIT_OFFSET_SIZE) -> int:
        t = self._offsets_topic()
        partition = self.broker.partition(OFFSETS_TOPIC, partition_for(group_id, t.partitions))
        batch = build_batch(recs, producer_id=producer_id, producer_epoch=producer_epoch,
                            transactional=producer_id >= 0)
        try:
            partition.append(batch, AppendOrigin.COORDINATOR)
        except NotLeaderError:
            return int(ErrorCode.NOT_COORDINATOR)      # the partition moved away: so did the coordinator
        except StorageError as e:
            log.error("could not write group %s to %s: %s", group_id, OFFSETS_TOPIC, e)
            if e.error_code in (ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.RECORD_LIST_TOO_LARGE,
                                ErrorCode.INVALID_FETCH_SIZE):
                return int(too_large)
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        return 0

    def _store_group(self, g: Group, assignments: dict[str, bytes]) -> int:
        # Kafka's appendGroupMetadataErrorToResponseError: a group record too large is UNKNOWN_SERVER_ERROR
        return self._append(g.group_id, [(grec.group_metadata_key(g.group_id),
                                          grec.group_metadata_value(g, assignments))],
                            too_large=ErrorCode.UNKNOWN_SERVER_ERROR)

    def load(self) -> None:
        """Rebuild groups and committed offsets from ``__consumer_offsets`` (Kafka's loadGroupsAndOffsets)."""
        t = self.broker.topics.get(OFFSETS_TOPIC)
        if t is None:
            return
        n_off = n_grp = 0
        for p in range(t.partitions):
            lg = self.broker.partition_log(OFFSETS_TOPIC, p)
            if lg is not None:
                a, b = self._load_partition(lg)
                n_off += a
                n_grp += b
        if n_off or n_grp:
            log.info("loaded %d committed offset(s) and %d group(s) from %s", n_off, n_grp, OFFSETS_TOPIC)

    def _load_partition(self, lg) -> tuple[int, int]:
        offsets: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = {}
        metadata: dict[str, object] = {}
        pending: dict[int, list] = {}     # producer id -> [(group, tp, value or None)]
        for b in iter_batches(lg):
            if b.is_control:
                if b.is_transactional and b.records:
                    ctype, _ = parse_control_record(b.records[0])
                    for gid, tp, o in pending.pop(b.producer_id, []):
                        if ctype == CONTROL_COMMIT:
                            if o is None:
                                offsets.setdefault(gid, {}).pop(tp, None)
                            else:
                                offsets.setdefault(gid, {})[tp] = o
                continue
            for r in b.records:
                if r.key is None:
                    continue
                try:
                    kind, key = grec.decode_key(r.key)
                except Exception:  # noqa: BLE001 - a record we cannot read is skipped, like Kafka logs it
                    log.warning("skipping unreadable %s record at offset %s", OFFSETS_TOPIC, r.offset)
                    continue
                if kind == "offset":
                    gid, topic, part = key
                    o = None if r.value is None else grec.decode_offset_value(r.value)
                    if b.is_transactional:
                        pending.setdefault(b.producer_id, []).append((gid, (topic, part), o))
                    elif o is None:
                        offsets.setdefault(gid, {}).pop((topic, part), None)
                    else:
                        offsets.setdefault(gid, {})[(topic, part)] = o
                elif kind == "group":
                    metadata[key] = None if r.value is None else grec.decode_group_value(r.value)
        n_groups = 0
        for gid in set(offsets) | set(metadata):
            md = metadata.get(gid)
            offs = offsets.get(gid, {})
            if md is None and not offs:
                self.groups.pop(gid, None)
                continue
            g = self._group_from_metadata(gid, md)
            g.offsets = dict(offs)
            for pid, items in pending.items():
                for pgid, tp, o in items:
                    if pgid == gid and o is not None:
                        g.pending_txn_offsets.setdefault(pid, {})[tp] = o
            self.groups[gid] = g
            n_groups += 1
        return sum(len(v) for v in offsets.values()), n_groups

    def _group_from_metadata(self, gid: str, md) -> Group:
        g = Group(gid, current_state_timestamp=now_ms())
        if md is None:
            return g
        g.protocol_type = md.protocol_type or None
        g.generation_id = md.generation
        g.protocol_name = md.protocol
        g.leader_id = md.leader
        if md.current_state_timestamp is not None and md.current_state_timestamp >= 0:
            g.current_state_timestamp = md.current_state_timestamp
        for mm in md.members or ():
            m = Member(mm.member_id, mm.group_instance_id, mm.client_id, mm.client_host,
                       mm.rebalance_timeout if mm.rebalance_timeout >= 0 else mm.session_timeout, mm.session_timeout,
                       g.protocol_type or "", [(g.protocol_name or "", bytes(mm.subscription or b""))])
            m.assignment = bytes(mm.assignment or b"")
            g.members[m.member_id] = m
            if m.group_instance_id is not None:
                g.static_members[m.group_instance_id] = m.member_id
        g.state = STABLE if g.members else EMPTY
        if g.leader_id not in g.members:
            g.leader_id = next(iter(g.members), None)
        g.subscribed_topics = g.compute_subscribed_topics()
        try:
            for m in g.members.values():
                self._schedule_heartbeat(g, m)
        except RuntimeError:   # no running loop (offline inspection)
            pass
        return g


class CoordinatorNotAvailableError(Exception):
    """The offsets topic cannot be used yet (COORDINATOR_NOT_AVAILABLE)."""

    error_code = ErrorCode.COORDINATOR_NOT_AVAILABLE
