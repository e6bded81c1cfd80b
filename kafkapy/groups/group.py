"""A classic group's state as Kafka's GroupMetadata / MemberMetadata keep it.

States: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead (Kafka's names, which DescribeGroups and
ListGroups report). Everything here is the group's and its members' data plus the small rules that are pure
functions of it (protocol selection, leader replacement, member validation). The coordinator also parks its waits
and timers on these objects (a member's pending JoinGroup/SyncGroup futures, its heartbeat timer, a group's join,
sync and pending-member timers) and alone creates, resolves and cancels them: the timing and sequencing live in the
coordinator.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field


from wire import protocol
from wire.messages.error_codes import ErrorCode

EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"
STATES = (EMPTY, PREPARING_REBALANCE, COMPLETING_REBALANCE, STABLE, DEAD)

# Kafka's GroupMetadata.validPreviousStates
_VALID_PREVIOUS = {
    DEAD: (STABLE, PREPARING_REBALANCE, COMPLETING_REBALANCE, EMPTY, DEAD),
    COMPLETING_REBALANCE: (PREPARING_REBALANCE,),
    STABLE: (COMPLETING_REBALANCE,),
    PREPARING_REBALANCE: (STABLE, COMPLETING_REBALANCE, EMPTY),
    EMPTY: (PREPARING_REBALANCE,),
}

CONSUMER_PROTOCOL_TYPE = "consumer"
UNKNOWN_MEMBER_ID = ""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class OffsetAndMetadata:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp: int = -1
    expire_timestamp: int | None = None


class MemberError(Exception):
    def __init__(self, code: ErrorCode):
        super().__init__(code.name)
        self.code = code


class Member:
    __slots__ = ("member_id", "group_instance_id", "client_id", "client_host", "rebalance_timeout_ms",
                 "session_timeout_ms", "protocol_type", "protocols", "assignment", "join_future", "sync_future",
                 "is_new", "heartbeat_handle", "join_version")

    def __init__(self, member_id: str, group_instance_id: str | None, client_id: str, client_host: str,
                 rebalance_timeout_ms: int, session_timeout_ms: int, protocol_type: str,
                 protocols: list[tuple[str, bytes]]):
        self.member_id = member_id
        self.group_instance_id = group_instance_id
        self.client_id = client_id
        self.client_host = client_host
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.protocol_type = protocol_type
        self.protocols = protocols
        self.assignment = b""
        self.join_future = None     # asyncio.Future of a JoinGroup waiting for the join phase to complete
        self.sync_future = None     # asyncio.Future of a SyncGroup waiting for the leader's assignment
        self.is_new = False
        self.heartbeat_handle = None
        self.join_version = 0

    @property
    def awaiting_join(self) -> bool:
        return self.join_future is not None and not self.join_future.done()

    @property
    def awaiting_sync(self) -> bool:
        return self.sync_future is not None and not self.sync_future.done()

    def metadata(self, protocol_name: str | None) -> bytes:
        for name, md in self.protocols:
            if name == protocol_name:
                return md
        raise KeyError(protocol_name)

    def protocol_names(self) -> list[str]:
        return [n for n, _ in self.protocols]

    def matches(self, protocols: list[tuple[str, bytes]]) -> bool:
        return len(protocols) == len(self.protocols) and all(
            a[0] == b[0] and bytes(a[1]) == bytes(b[1]) for a, b in zip(protocols, self.protocols))

    def vote(self, candidates: set[str]) -> str:
        for name in self.protocol_names():
            if name in candidates:
                return name
        raise ValueError("member does not support any candidate protocol")


@dataclass(eq=False)
class Group:
    group_id: str
    state: str = EMPTY
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, Member] = field(default_factory=dict)             # insertion ordered, like Kafka's
    static_members: dict[str, str] = field(default_factory=dict)         # group instance id -> member id
    pending_members: dict[str, object] = field(default_factory=dict)     # member id -> expiry timer handle
    pending_sync_members: set[str] = field(default_factory=set)
    offsets: dict[tuple[str, int], OffsetAndMetadata] = field(default_factory=dict)
    # transactional offset commits not yet committed or aborted: producer id -> {(topic, partition): offset}
    pending_txn_offsets: dict[int, dict[tuple[str, int], OffsetAndMetadata]] = field(default_factory=dict)
    current_state_timestamp: int | None = None
    subscribed_topics: set[str] | None = None
    new_member_added: bool = False
    initial_delay_active: bool = False
    join_timer: object = None
    sync_timer: object = None

    # ---------------------------------------------------------------- state

    def is_(self, state: str) -> bool:
        return self.state == state

    def transition(self, state: str) -> None:
        if self.state not in _VALID_PREVIOUS[state]:
            raise RuntimeError(f"group {self.group_id}: cannot go from {self.state} to {state}")
        self.state = state
        self.current_state_timestamp = now_ms()

    def can_rebalance(self) -> bool:
        return self.state in _VALID_PREVIOUS[PREPARING_REBALANCE]

    # ---------------------------------------------------------------- members

    def has(self, member_id: str) -> bool:
        return member_id in self.members

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id == member_id

    def add(self, member: Member) -> None:
        if not self.members:
            self.protocol_type = member.protocol_type
        self.members[member.member_id] = member
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        if self.leader_id is None:
            self.leader_id = member.member_id
        self.pending_members.pop(member.member_id, None)

    def remove(self, member_id: str) -> Member | None:
        m = self.members.pop(member_id, None)
        if m is None:
            return None
        if m.group_instance_id is not None and self.static_members.get(m.group_instance_id) == member_id:
            del self.static_members[m.group_instance_id]
        self.pending_sync_members.discard(member_id)
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        return m

    def replace_static_member(self, instance_id: str, old_id: str, new_id: str) -> Member:
        m = self.members.pop(old_id)
        m.member_id = new_id
        self.members[new_id] = m
        if self.leader_id == old_id:
            self.leader_id = new_id
        self.static_members[instance_id] = new_id
        if old_id in self.pending_sync_members:
            self.pending_sync_members.discard(old_id)
            self.pending_sync_members.add(new_id)
        return m

    def generate_member_id(self, client_id: str | None, instance_id: str | None) -> str:
        return f"{instance_id if instance_id is not None else (client_id or '')}-{uuid.uuid4()}"

    def validate_member(self, member_id: str, instance_id: str | None) -> None:
        """Kafka's GroupMetadata.validateMember: UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID."""
        if instance_id is not None:
            current = self.static_members.get(instance_id)
            if current is None:
                raise MemberError(ErrorCode.UNKNOWN_MEMBER_ID)
            if current != member_id:
                raise MemberError(ErrorCode.FENCED_INSTANCE_ID)
        elif member_id not in self.members:
            raise MemberError(ErrorCode.UNKNOWN_MEMBER_ID)

    def is_static_member_fenced(self, member_id: str, instance_id: str | None) -> bool:
        if instance_id is None:
            return False
        current = self.static_members.get(instance_id)
        return current is not None and current != member_id

    def all_members_joined(self) -> bool:
        return not self.pending_members and all(m.awaiting_join for m in self.members.values())

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    # ---------------------------------------------------------------- protocols

    def candidate_protocols(self) -> set[str]:
        members = list(self.members.values())
        if not members:
            return set()
        out = set(members[0].protocol_names())
        for m in members[1:]:
            out &= set(m.protocol_names())
        return out

    def supports_protocols(self, protocol_type: str, protocols: list[str]) -> bool:
        if not self.members:
            return bool(protocol_type) and bool(protocols)
        return protocol_type == self.protocol_type and bool(self.candidate_protocols() & set(protocols))

    def select_protocol(self) -> str:
        """Every member votes for its most preferred protocol among those all members support; most votes wins
        (ties go to the protocol the earliest member preferred)."""
        candidates = self.candidate_protocols()
        votes: dict[str, int] = {}
        for m in self.members.values():
            v = m.vote(candidates)
            votes[v] = votes.get(v, 0) + 1
        return max(votes.items(), key=lambda kv: kv[1])[0]

    def init_next_generation(self) -> None:
        self.generation_id += 1
        if self.members:
            self.protocol_name = self.select_protocol()
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition(COMPLETING_REBALANCE)
        else:
            self.protocol_name = None
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition(EMPTY)
        self.pending_sync_members = set(self.members)

    def compute_subscribed_topics(self) -> set[str] | None:
        """Topics the members subscribe to, from the consumer protocol's subscription (None when unknown)."""
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE:
            return None
        if not self.members:
            return set()
        if self.protocol_name is None:
            return None
        topics: set[str] = set()
        for m in self.members.values():
            parsed = parse_subscription_topics(m.metadata(self.protocol_name))
            if parsed is None:
                return None
            topics |= parsed
        return topics

    def current_member_metadata(self) -> list[tuple[str, str | None, bytes]]:
        return [(m.member_id, m.group_instance_id, m.metadata(self.protocol_name)) for m in self.members.values()]

    def is_subscribed_to(self, topic: str) -> bool:
        return self.subscribed_topics is not None and topic in self.subscribed_topics


def parse_subscription_topics(metadata: bytes) -> set[str] | None:
    """Topics of a ConsumerProtocolSubscription (int16 version + struct), None if it does not parse."""
    try:
        mod = protocol.data_module("ConsumerProtocolSubscription")
        buf = bytes(metadata)
        version = int.from_bytes(buf[:2], "big", signed=True)
        version = min(version, max(mod.DECODERS))   # newer versions start with the same fields
        if version < 0:
            return None
        msg, _ = protocol.decode(mod, version, buf, 2)
        return set(msg.topics or ())
    except Exception:  # noqa: BLE001 - any client's bytes: unknown is a valid answer
        return None
