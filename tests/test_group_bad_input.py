"""Bad input to the group coordinator through raw requests on real sockets (in-process broker, memory storage).

Each case checks Kafka's error code and that nothing else changed: the group's state, generation and members
(DescribeGroups), the committed offsets (OffsetFetch) and, where nothing may be written, the end offset of the
group's ``__consumer_offsets`` partition.

What Kafka does, and so what is asserted here:
- JoinGroup with an empty protocol type or no protocols, for a new or empty group: INCONSISTENT_GROUP_PROTOCOL
  (ClassicGroup.supportsProtocols: ``!memberProtocolType.isEmpty() && !memberProtocols.isEmpty()``); for a
  group with members, a different protocol type or no protocol in common with every member:
  INCONSISTENT_GROUP_PROTOCOL. The group is not created / not disturbed.
- Protocol metadata has no size limit of its own in Kafka (only socket.request.max.bytes bounds the request).
  A large subscription works end to end. The limit that does exist is indirect: the group's metadata record
  (every member's subscription and assignment) is written to ``__consumer_offsets`` at SyncGroup; when it is
  larger than max.message.bytes the append fails with MESSAGE_TOO_LARGE, which Kafka answers as
  UNKNOWN_SERVER_ERROR (GroupMetadataManager.appendGroupMetadataErrorToResponseError) to every member waiting in
  SyncGroup, and the group goes back to PreparingRebalance.
- SyncGroup from a follower carrying assignments: ignored; only the leader's assignment is used.
- OffsetCommit for unknown topics or partitions: UNKNOWN_TOPIC_OR_PARTITION per partition, decided before the
  coordinator sees the request (KafkaApis.handleOffsetCommitRequest), so a stale generation does not hide it and
  a request with only unknown partitions never creates a group.
- OffsetCommit with a stale generation: ILLEGAL_GENERATION, nothing written.
- OffsetCommit with metadata longer than offset.metadata.max.bytes (default 4096): OFFSET_METADATA_TOO_LARGE for
  that partition only. Kafka compares Java's ``String.length()``, i.e. UTF-16 code units, not UTF-8 bytes.
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from kafkapy.broker import Broker
from kafkapy.config import BrokerConfig
from kafkapy.groups import OFFSETS_TOPIC
from kafkapy.internal_topics import partition_for
from wire import protocol
from wire.messages import describe_groups_request as DGQ
from wire.messages import heartbeat_request as HQ
from wire.messages import join_group_request as JQ
from wire.messages import list_groups_request as LGQ
from wire.messages import offset_commit_request as OCQ
from wire.messages import offset_fetch_request as OFQ
from wire.messages import sync_group_request as SQ
from wire.messages.error_codes import ErrorCode as E

pytestmark = pytest.mark.timeout(30)

TOPIC = "t"


def subscription(*topics: str, user_data: bytes | None = None) -> bytes:
    mod = protocol.data_module("ConsumerProtocolSubscription")
    return b"\x00\x01" + protocol.encode(mod, 1, mod.MESSAGE(topics=list(topics), user_data=user_data,
                                                              owned_partitions=[]))


RANGE = [("range", subscription(TOPIC))]


class Conn:
    """One raw client connection; requests on it are answered in order."""

    def __init__(self, reader, writer):
        self.reader, self.writer, self.corr = reader, writer, 0

    async def request(self, name: str, version: int, body):
        key = protocol.API_BY_NAME[name].key
        self.corr += 1
        self.writer.write(protocol.encode_request(key, version, self.corr, "bad-input", body))
        await self.writer.drain()
        n = struct.unpack(">i", await self.reader.readexactly(4))[0]
        corr, resp = protocol.decode_response(key, version, await self.reader.readexactly(n))
        assert corr == self.corr
        return resp

    def close(self):
        self.writer.close()


def run(body, props=None):
    async def main():
        broker = Broker(BrokerConfig(host="127.0.0.1", port=0, storage="memory", properties=dict(props or {})))
        host, port = await broker.start()
        conns = []

        async def connect():
            c = Conn(*await asyncio.open_connection(host, port, limit=1 << 24))
            conns.append(c)
            return c
        try:
            broker.create_topic(TOPIC, 2)
            return await asyncio.wait_for(body(broker, connect), 20)
        finally:
            for c in conns:
                c.close()
            await broker.stop()
    return asyncio.run(main())


# ---------------------------------------------------------------- request helpers


def join_req(group, member_id="", protocol_type="consumer", protocols=RANGE, session=10_000):
    return JQ.JoinGroupRequest(group_id=group, session_timeout_ms=session, rebalance_timeout_ms=session,
                               member_id=member_id, group_instance_id=None, protocol_type=protocol_type,
                               protocols=[JQ.JoinGroupRequestProtocol(name=n, metadata=m) for n, m in protocols],
                               reason=None)


async def join(conn, group, **kw):
    return await conn.request("JoinGroup", 9, join_req(group, **kw))


async def join_new(conn, group, **kw):
    """KIP-394: MEMBER_ID_REQUIRED, then the real join (which may wait for the rebalance)."""
    r = await join(conn, group, **kw)
    assert r.error_code == E.MEMBER_ID_REQUIRED, r.error_code
    return await join(conn, group, member_id=r.member_id, **kw)


async def sync(conn, group, generation, member_id, assignments=None, protocol_name="range"):
    body = SQ.SyncGroupRequest(group_id=group, generation_id=generation, member_id=member_id, group_instance_id=None,
                               protocol_type="consumer", protocol_name=protocol_name,
                               assignments=[SQ.SyncGroupRequestAssignment(member_id=m, assignment=a)
                                            for m, a in (assignments or {}).items()])
    return await conn.request("SyncGroup", 5, body)


async def heartbeat(conn, group, generation, member_id):
    body = HQ.HeartbeatRequest(group_id=group, generation_id=generation, member_id=member_id, group_instance_id=None)
    return (await conn.request("Heartbeat", 4, body)).error_code


async def describe(conn, group):
    r = await conn.request("DescribeGroups", 5, DGQ.DescribeGroupsRequest(groups=[group],
                                                                          include_authorized_operations=False))
    [g] = r.groups
    assert g.error_code == 0
    return g


def group_view(g) -> tuple:
    return (g.group_state, g.protocol_type, g.protocol_data,
            sorted((m.member_id, bytes(m.member_metadata), bytes(m.member_assignment)) for m in g.members))


async def list_groups(conn) -> set[str]:
    r = await conn.request("ListGroups", 4, LGQ.ListGroupsRequest(states_filter=[]))
    return {g.group_id for g in r.groups}


async def commit(conn, group, generation, member_id, parts: dict, version=8):
    topics: dict[str, list] = {}
    for (t, p), (off, md) in parts.items():
        topics.setdefault(t, []).append(OCQ.OffsetCommitRequestPartition(
            partition_index=p, committed_offset=off, committed_leader_epoch=-1, commit_timestamp=-1,
            committed_metadata=md))
    body = OCQ.OffsetCommitRequest(group_id=group, generation_id_or_member_epoch=generation, member_id=member_id,
                                   group_instance_id=None, retention_time_ms=-1,
                                   topics=[OCQ.OffsetCommitRequestTopic(name=t, partitions=ps)
                                           for t, ps in topics.items()])
    r = await conn.request("OffsetCommit", version, body)
    return {(t.name, p.partition_index): p.error_code for t in r.topics for p in t.partitions}


async def fetch(conn, group) -> dict:
    r = await conn.request("OffsetFetch", 7, OFQ.OffsetFetchRequest(group_id=group, topics=None,
                                                                    require_stable=False))
    assert r.error_code == 0
    return {(t.name, p.partition_index): (p.committed_offset, p.metadata) for t in r.topics for p in t.partitions}


def offsets_end(broker, group) -> int:
    broker.groups._offsets_topic()      # creates __consumer_offsets (single broker)
    return broker.partition_log(OFFSETS_TOPIC, partition_for(group, 50)).log_end_offset


async def stable_group(connect, group, members=1):
    """A Stable group of ``members`` members; returns ([(conn, member id)], generation)."""
    conns = [await connect() for _ in range(members)]
    results = await asyncio.gather(*(join_new(c, group) for c in conns))
    gen = results[0].generation_id
    leader = results[0].leader
    assert all(r.error_code == 0 and r.generation_id == gen for r in results)
    assign = {r.member_id: f"A-{r.member_id}".encode() for r in results}
    syncs = await asyncio.gather(*(sync(c, group, gen, r.member_id, assign if r.member_id == leader else None)
                                   for c, r in zip(conns, results)))
    assert all(s.error_code == 0 for s in syncs)
    return [(c, r.member_id) for c, r in zip(conns, results)], gen


# ---------------------------------------------------------------- JoinGroup


def test_join_with_empty_protocol_type_or_no_protocols_is_rejected_and_creates_nothing():
    async def body(broker, connect):
        c = await connect()
        end = offsets_end(broker, "g")
        for kw in ({"protocol_type": ""}, {"protocols": []}, {"protocol_type": "", "protocols": []}):
            r = await join(c, "g", **kw)
            assert r.error_code == E.INCONSISTENT_GROUP_PROTOCOL, kw
            assert r.member_id == "" and r.generation_id == -1 and r.members == []
        assert "g" not in await list_groups(c)
        assert (await describe(c, "g")).group_state == "Dead"
        assert offsets_end(broker, "g") == end
        # an existing, stable group is not disturbed either
        [(m, mid)], gen = await stable_group(connect, "s")
        before = group_view(await describe(c, "s"))
        for kw in ({"protocol_type": ""}, {"protocols": []}):
            r = await join(c, "s", **kw)
            assert r.error_code == E.INCONSISTENT_GROUP_PROTOCOL, kw
            r = await join(m, "s", member_id=mid, **kw)      # also from the member itself
            assert r.error_code == E.INCONSISTENT_GROUP_PROTOCOL, kw
        assert group_view(await describe(c, "s")) == before
        assert await heartbeat(m, "s", gen, mid) == 0
    run(body)


def test_join_with_other_protocol_type_or_unknown_protocols_leaves_the_group_alone():
    async def body(broker, connect):
        [(m, mid)], gen = await stable_group(connect, "g")
        c = await connect()
        before = group_view(await describe(c, "g"))
        end = offsets_end(broker, "g")
        cases = [{"protocol_type": "connect"},                                   # another protocol type
                 {"protocols": [("sticky-x", subscription(TOPIC))]},            # no protocol in common
                 {"protocols": [("roundrobin", subscription(TOPIC)), ("x", b"")]}]
        for kw in cases:
            r = await join(c, "g", **kw)
            assert r.error_code == E.INCONSISTENT_GROUP_PROTOCOL, kw
            assert r.generation_id == -1 and r.members == []
        # the member itself switching to a protocol nobody else has: there is nobody else, but the group's
        # protocol type must still match
        r = await join(m, "g", member_id=mid, protocol_type="connect")
        assert r.error_code == E.INCONSISTENT_GROUP_PROTOCOL
        assert group_view(await describe(c, "g")) == before
        assert offsets_end(broker, "g") == end
        assert await heartbeat(m, "g", gen, mid) == 0
        # a member with a protocol in common is still welcome
        r = await join(c, "g", protocols=[("x", b""), ("range", subscription(TOPIC))])
        assert r.error_code == E.MEMBER_ID_REQUIRED
    run(body)


def test_large_protocol_metadata_has_no_limit_of_its_own():
    async def body(broker, connect):
        c = await connect()
        big = subscription(TOPIC, user_data=bytes(range(256)) * 2048)      # 512 KiB of user data
        r = await join_new(c, "g", protocols=[("range", big)])
        assert r.error_code == 0 and r.leader == r.member_id
        assert [bytes(m.metadata) for m in r.members] == [big]               # handed to the leader byte for byte
        s = await sync(c, "g", r.generation_id, r.member_id, {r.member_id: b"assignment"})
        assert s.error_code == 0 and bytes(s.assignment) == b"assignment"
        d = await describe(c, "g")
        assert d.group_state == "Stable" and bytes(d.members[0].member_metadata) == big
        assert await heartbeat(c, "g", r.generation_id, r.member_id) == 0
    run(body)


def test_group_record_larger_than_max_message_bytes_fails_sync_with_unknown_server_error():
    async def body(broker, connect):
        c = await connect()
        huge = subscription(TOPIC, user_data=b"u" * (1 << 20))              # 1 MiB: the group record is larger
        r = await join_new(c, "g", protocols=[("range", huge)])              # joining works (no limit there)
        assert r.error_code == 0 and bytes(r.members[0].metadata) == huge
        end = offsets_end(broker, "g")
        s = await sync(c, "g", r.generation_id, r.member_id, {r.member_id: b"a"})
        assert s.error_code == E.UNKNOWN_SERVER_ERROR                         # Kafka's answer to MESSAGE_TOO_LARGE
        assert offsets_end(broker, "g") == end                               # nothing written
        d = await describe(c, "g")
        assert d.group_state == "PreparingRebalance" and bytes(d.members[0].member_assignment) == b""
        # the member rejoins with a normal subscription and the group recovers
        r2 = await join(c, "g", member_id=r.member_id)
        assert r2.error_code == 0 and r2.generation_id == r.generation_id + 1
        assert (await sync(c, "g", r2.generation_id, r.member_id, {r.member_id: b"a"})).error_code == 0
    run(body)


# ---------------------------------------------------------------- SyncGroup


def test_sync_from_follower_with_assignments_is_ignored():
    async def body(broker, connect):
        a, b = await connect(), await connect()
        ra = await join_new(a, "g")
        assert ra.error_code == 0
        await sync(a, "g", ra.generation_id, ra.member_id, {ra.member_id: b"only-a"})
        rb_task = asyncio.ensure_future(join_new(b, "g"))
        await asyncio.sleep(0.05)
        ra2, rb = await asyncio.gather(join(a, "g", member_id=ra.member_id), rb_task)
        gen = ra2.generation_id
        assert ra2.leader == ra.member_id and rb.leader == ra.member_id and gen == rb.generation_id
        evil = {ra.member_id: b"EVIL-A", rb.member_id: b"EVIL-B"}
        follower = asyncio.ensure_future(sync(b, "g", gen, rb.member_id, evil))     # first, with assignments
        await asyncio.sleep(0.05)
        assert not follower.done()                                                     # waits for the leader
        assert (await describe(a, "g")).group_state == "CompletingRebalance"
        leader = await sync(a, "g", gen, ra.member_id, {ra.member_id: b"A", rb.member_id: b"B"})
        fs = await follower
        assert leader.error_code == fs.error_code == 0
        assert bytes(leader.assignment) == b"A" and bytes(fs.assignment) == b"B"
        # again once Stable: the follower's assignments change nothing
        again = await sync(b, "g", gen, rb.member_id, evil)
        assert again.error_code == 0 and bytes(again.assignment) == b"B"
        d = await describe(a, "g")
        assert d.group_state == "Stable"
        assert {m.member_id: bytes(m.member_assignment) for m in d.members} == {ra.member_id: b"A",
                                                                                 rb.member_id: b"B"}
        assert await heartbeat(a, "g", gen, ra.member_id) == 0
    run(body)


# ---------------------------------------------------------------- OffsetCommit


def test_commit_unknown_topics_and_partitions():
    async def body(broker, connect):
        [(m, mid)], gen = await stable_group(connect, "g")
        assert await commit(m, "g", gen, mid, {(TOPIC, 0): (5, "")}) == {(TOPIC, 0): 0}
        before = await fetch(m, "g")
        view = group_view(await describe(m, "g"))
        mixed = {("nope", 0): (1, ""), (TOPIC, 7): (1, ""), (TOPIC, 1): (9, "ok")}
        assert await commit(m, "g", gen, mid, mixed) == {("nope", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
                                                         (TOPIC, 7): E.UNKNOWN_TOPIC_OR_PARTITION, (TOPIC, 1): 0}
        assert await fetch(m, "g") == {**before, (TOPIC, 1): (9, "ok")}
        # a stale generation does not hide unknown partitions (Kafka checks them before the coordinator)
        stale = {("nope", 0): (1, ""), (TOPIC, 0): (99, "")}
        assert await commit(m, "g", gen - 1, mid, stale) == {("nope", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
                                                             (TOPIC, 0): E.ILLEGAL_GENERATION}
        assert await fetch(m, "g") == {**before, (TOPIC, 1): (9, "ok")}
        assert group_view(await describe(m, "g")) == view
        # only unknown partitions: the coordinator is not involved, no group appears, nothing is written
        end = offsets_end(broker, "fresh")
        for generation in (-1, 3):
            assert await commit(m, "fresh", generation, "", {("nope", 0): (1, ""), (TOPIC, 5): (1, "")}) == \
                {("nope", 0): E.UNKNOWN_TOPIC_OR_PARTITION, (TOPIC, 5): E.UNKNOWN_TOPIC_OR_PARTITION}
        assert "fresh" not in await list_groups(m)
        assert offsets_end(broker, "fresh") == end
        assert await fetch(m, "fresh") == {}
    run(body)


def test_commit_with_stale_generation_changes_nothing():
    async def body(broker, connect):
        [(a, ma), (b, mb)], gen = await stable_group(connect, "g", members=2)
        assert await commit(a, "g", gen, ma, {(TOPIC, 0): (3, "m")}) == {(TOPIC, 0): 0}
        before, view, end = await fetch(a, "g"), group_view(await describe(a, "g")), offsets_end(broker, "g")
        for g in (gen - 1, gen + 1, 0):
            assert await commit(a, "g", g, ma, {(TOPIC, 0): (50, "x"), (TOPIC, 1): (51, "")}) == \
                {(TOPIC, 0): E.ILLEGAL_GENERATION, (TOPIC, 1): E.ILLEGAL_GENERATION}
        # an unknown member with the current generation
        assert await commit(a, "g", gen, "ghost", {(TOPIC, 0): (50, "")}) == {(TOPIC, 0): E.UNKNOWN_MEMBER_ID}
        # a group that does not exist, with a generation: ILLEGAL_GENERATION, and it is not created
        assert await commit(a, "nogroup", 2, "m", {(TOPIC, 0): (1, "")}) == {(TOPIC, 0): E.ILLEGAL_GENERATION}
        assert "nogroup" not in await list_groups(a)
        assert await fetch(a, "g") == before
        assert group_view(await describe(a, "g")) == view
        assert offsets_end(broker, "g") == end
        assert await heartbeat(a, "g", gen, ma) == 0 and await heartbeat(b, "g", gen, mb) == 0
    run(body)


def test_commit_with_too_large_metadata():
    async def body(broker, connect):
        [(m, mid)], gen = await stable_group(connect, "g")
        assert await commit(m, "g", gen, mid, {(TOPIC, 0): (1, "first"), (TOPIC, 1): (2, "")}) == \
            {(TOPIC, 0): 0, (TOPIC, 1): 0}
        before = await fetch(m, "g")
        r = await commit(m, "g", gen, mid, {(TOPIC, 0): (10, "x" * 4097), (TOPIC, 1): (20, "fine")})
        assert r == {(TOPIC, 0): E.OFFSET_METADATA_TOO_LARGE, (TOPIC, 1): 0}   # only that partition fails
        assert await fetch(m, "g") == {(TOPIC, 0): before[(TOPIC, 0)], (TOPIC, 1): (20, "fine")}
        # the limit counts UTF-16 code units (Java's String.length()), not UTF-8 bytes
        assert await commit(m, "g", gen, mid, {(TOPIC, 0): (11, "x" * 4096)}) == {(TOPIC, 0): 0}
        assert await commit(m, "g", gen, mid, {(TOPIC, 0): (12, "\u00e9" * 4096)}) == {(TOPIC, 0): 0}
        assert await commit(m, "g", gen, mid, {(TOPIC, 0): (13, "\U0001F600" * 2048)}) == {(TOPIC, 0): 0}
        assert await commit(m, "g", gen, mid, {(TOPIC, 0): (14, "\U0001F600" * 2049)}) == \
            {(TOPIC, 0): E.OFFSET_METADATA_TOO_LARGE}
        assert (await fetch(m, "g"))[(TOPIC, 0)] == (13, "\U0001F600" * 2048)
        # the standalone (generation -1) path checks it too
        assert await commit(m, "simple", -1, "", {(TOPIC, 0): (1, "y" * 5000)}) == \
            {(TOPIC, 0): E.OFFSET_METADATA_TOO_LARGE}
        assert await fetch(m, "simple") == {}
    run(body)


def test_offset_metadata_max_bytes_is_configurable():
    async def body(broker, connect):
        [(m, mid)], gen = await stable_group(connect, "g")
        assert await commit(m, "g", gen, mid, {(TOPIC, 0): (1, "a" * 10)}) == {(TOPIC, 0): 0}
        assert await commit(m, "g", gen, mid, {(TOPIC, 0): (2, "a" * 11)}) == {(TOPIC, 0): E.OFFSET_METADATA_TOO_LARGE}
        assert (await fetch(m, "g"))[(TOPIC, 0)] == (1, "a" * 10)
    run(body, {"offset.metadata.max.bytes": "10"})
