"""The group coordinator without a network: state machine, timers (short timeouts), static membership,
``__consumer_offsets`` persistence round trip, Java's String.hashCode."""

from __future__ import annotations

import asyncio

import pytest

from kafkapy.broker import Broker
from kafkapy.config import BrokerConfig
from kafkapy.groups import OFFSETS_TOPIC
from kafkapy.groups import records as grec
from kafkapy.groups.group import (COMPLETING_REBALANCE, EMPTY, PREPARING_REBALANCE, STABLE, OffsetAndMetadata,
                                  now_ms)
from kafkapy.internal_topics import java_string_hash, partition_for
from wire import protocol
from wire.messages.error_codes import ErrorCode as E

pytestmark = pytest.mark.timeout(30)

SHORT = {"group.min.session.timeout.ms": "50"}


def subscription(*topics: str) -> bytes:
    mod = protocol.data_module("ConsumerProtocolSubscription")
    return b"\x00\x01" + protocol.encode(mod, 1, mod.MESSAGE(topics=list(topics), user_data=None, owned_partitions=[]))


PROTOS = [("range", subscription("t")), ("roundrobin", subscription("t"))]


def run(coro_fn, props=None, data_dir=None):
    async def main():
        cfg = BrokerConfig(host="127.0.0.1", port=0, storage="disk" if data_dir else "memory", data_dir=data_dir,
                           properties=dict(props or {}))
        broker = Broker(cfg)
        await broker.start()
        try:
            return await asyncio.wait_for(coro_fn(broker, broker.groups), 20)
        finally:
            await broker.stop()
    return asyncio.run(main())


def join(c, group, member_id="", instance=None, session=10_000, rebalance=None, protocols=PROTOS, version=7,
         client_id="cl"):
    return asyncio.ensure_future(c.join_group(group, member_id, instance, client_id, "/127.0.0.1", session,
                                              rebalance if rebalance is not None else session, "consumer",
                                              protocols, version))


async def join_new(c, group, **kw):
    """KIP-394 dance: MEMBER_ID_REQUIRED, then join with the given id; returns the pending join task."""
    r = await join(c, group, **kw)
    assert r.error == E.MEMBER_ID_REQUIRED and r.member_id.startswith("cl-")
    return join(c, group, member_id=r.member_id, **kw)


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


# ---------------------------------------------------------------- hashing


@pytest.mark.parametrize("s, h", [("", 0), ("hello", 99162322), ("Aa", 2112), ("BB", 2112), ("é", 233),
                                  ("\U0001F600", 1772899), ("polygenelubricants", -2147483648),
                                  ("console-consumer-12345", 0x0)])
def test_java_string_hash(s, h):
    if s == "console-consumer-12345":     # computed by the Java formula independently
        expect = 0
        for ch in s:
            expect = (31 * expect + ord(ch)) & 0xFFFFFFFF
        h = expect - (1 << 32) if expect >= 1 << 31 else expect
    assert java_string_hash(s) == h


def test_partition_for_uses_kafka_abs():
    assert partition_for("polygenelubricants", 50) == 0     # abs(Integer.MIN_VALUE) is 0 in Utils.abs
    assert partition_for("hello", 50) == 99162322 % 50
    assert partition_for("BB", 7) == 2112 % 7


# ---------------------------------------------------------------- state machine


def test_join_sync_heartbeat_and_second_member_rebalance():
    async def body(broker, c):
        broker.create_topic("t", 2)
        t1 = await join_new(c, "g")
        r1 = await t1
        assert r1.error == 0 and r1.generation_id == 1 and r1.leader == r1.member_id
        assert [m[0] for m in r1.members] == [r1.member_id] and r1.protocol_name == "range"
        g = c.groups["g"]
        assert g.state == COMPLETING_REBALANCE
        assert c.heartbeat("g", r1.member_id, None, 1) == 0
        s1 = await c.sync_group("g", 1, r1.member_id, None, "consumer", "range", {r1.member_id: b"A1"})
        assert s1.error == 0 and s1.assignment == b"A1" and g.state == STABLE
        # fencing
        assert c.heartbeat("g", r1.member_id, None, 0) == E.ILLEGAL_GENERATION
        assert c.heartbeat("g", "nobody", None, 1) == E.UNKNOWN_MEMBER_ID
        assert c.heartbeat("nogroup", r1.member_id, None, 1) == E.UNKNOWN_MEMBER_ID
        # a second member: the group prepares a rebalance; the first learns it from its heartbeat
        t2 = await join_new(c, "g")
        await settle()
        assert g.state == PREPARING_REBALANCE and not t2.done()
        assert c.heartbeat("g", r1.member_id, None, 1) == E.REBALANCE_IN_PROGRESS
        sync_stale = await c.sync_group("g", 1, r1.member_id, None, None, None, {})
        assert sync_stale.error == E.REBALANCE_IN_PROGRESS
        t1 = join(c, "g", member_id=r1.member_id)
        r1b, r2 = await asyncio.gather(t1, t2)
        assert r1b.generation_id == r2.generation_id == 2
        assert r1b.leader == r2.leader == r1.member_id
        assert len(r1b.members) == 2 and r2.members == []
        # the follower's SyncGroup waits for the leader's
        f = asyncio.ensure_future(c.sync_group("g", 2, r2.member_id, None, None, None, {}))
        await settle()
        assert not f.done() and g.state == COMPLETING_REBALANCE
        assert c.heartbeat("g", r2.member_id, None, 2) == 0
        sl = await c.sync_group("g", 2, r1.member_id, None, None, None, {r1.member_id: b"L", r2.member_id: b"F"})
        assert sl.assignment == b"L" and (await f).assignment == b"F" and g.state == STABLE
        # leave: rebalance to one member
        top, errs = c.leave_group("g", [(r2.member_id, None), ("ghost", None)])
        assert top == 0 and errs == [0, E.UNKNOWN_MEMBER_ID]
        assert g.state == PREPARING_REBALANCE
        r1c = await join(c, "g", member_id=r1.member_id)
        assert r1c.generation_id == 3 and len(r1c.members) == 1
    run(body)


def test_inconsistent_protocols_and_bad_session_timeout():
    async def body(broker, c):
        r = await join(c, "g", protocols=[])
        assert r.error == E.INCONSISTENT_GROUP_PROTOCOL
        r = await join(c, "g", session=10)
        assert r.error == E.INVALID_SESSION_TIMEOUT
        r = await join(c, "", version=3)
        assert r.error == E.INVALID_GROUP_ID
        assert "g" not in c.groups     # a failed first join leaves nothing behind
        t = await join_new(c, "g")
        r = await t
        bad = await join(c, "g", protocols=[("sticky", b"x")])
        assert bad.error == E.INCONSISTENT_GROUP_PROTOCOL
        # v3 and older: no MEMBER_ID_REQUIRED round
        t = join(c, "g", version=3)
        await settle()
        assert c.groups["g"].state == PREPARING_REBALANCE
        r1 = await join(c, "g", member_id=r.member_id)
        r2 = await t
        assert r1.generation_id == r2.generation_id == 2
    run(body)


def test_protocol_selection_by_votes():
    async def body(broker, c):
        a = await join_new(c, "g", protocols=[("x", b""), ("y", b""), ("z", b"")])
        ra = await a
        b = await join_new(c, "g", protocols=[("y", b""), ("x", b"")])
        cc = await join_new(c, "g", protocols=[("y", b""), ("z", b""), ("x", b"")])
        ra2 = join(c, "g", member_id=ra.member_id, protocols=[("x", b""), ("y", b""), ("z", b"")])
        res = await asyncio.gather(ra2, b, cc)
        assert {r.protocol_name for r in res} == {"y"}     # candidates x,y; votes x:1 y:2
    run(body)


# ---------------------------------------------------------------- timers


def test_session_timeout_removes_member_and_rebalances():
    async def body(broker, c):
        r1 = await (await join_new(c, "g", session=300))
        await c.sync_group("g", 1, r1.member_id, None, None, None, {r1.member_id: b"a"})
        r2 = await (await join_new(c, "g", session=300))      # completes once member 1 expires
        assert r2.generation_id == 2 and r2.leader == r2.member_id and len(r2.members) == 1
        assert r1.member_id not in c.groups["g"].members
        await c.sync_group("g", 2, r2.member_id, None, None, None, {})
        # no heartbeats at all: the last member expires too and the group is empty
        await asyncio.sleep(0.5)
        g = c.groups["g"]
        assert g.state == EMPTY and not g.members and g.generation_id == 3
    run(body, SHORT)


def test_heartbeats_keep_member_alive():
    async def body(broker, c):
        r1 = await (await join_new(c, "g", session=200))
        await c.sync_group("g", 1, r1.member_id, None, None, None, {})
        for _ in range(8):
            await asyncio.sleep(0.07)
            assert c.heartbeat("g", r1.member_id, None, 1) == 0
        assert c.groups["g"].state == STABLE
    run(body, SHORT)


def test_rebalance_timeout_drops_members_that_do_not_rejoin():
    async def body(broker, c):
        r1 = await (await join_new(c, "g", session=5000, rebalance=300))
        await c.sync_group("g", 1, r1.member_id, None, None, None, {})
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        t2 = await join_new(c, "g", session=5000, rebalance=300)
        await settle()
        # member 1 keeps heartbeating (REBALANCE_IN_PROGRESS) but never rejoins
        while not t2.done():
            assert c.heartbeat("g", r1.member_id, None, 1) in (E.REBALANCE_IN_PROGRESS, E.UNKNOWN_MEMBER_ID)
            await asyncio.sleep(0.05)
        r2 = await t2
        assert 0.25 <= loop.time() - t0 < 2
        assert r2.generation_id == 2 and list(c.groups["g"].members) == [r2.member_id]
        assert c.heartbeat("g", r1.member_id, None, 1) == E.UNKNOWN_MEMBER_ID
    run(body, SHORT)


def test_pending_sync_timeout_when_leader_never_syncs():
    async def body(broker, c):
        t1 = await join_new(c, "g", session=5000, rebalance=300)
        r1 = await t1
        t2 = await join_new(c, "g", session=5000, rebalance=300)
        r1b = join(c, "g", member_id=r1.member_id, session=5000, rebalance=300)
        r2 = await t2
        await r1b
        f = asyncio.ensure_future(c.sync_group("g", 2, r2.member_id, None, None, None, {}))
        res = await f     # the leader never syncs: it is removed and the follower told to rejoin
        assert res.error == E.REBALANCE_IN_PROGRESS
        assert r1.member_id not in c.groups["g"].members
    run(body, SHORT)


def test_initial_rebalance_delay_collects_members():
    async def body(broker, c):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        a = await join_new(c, "g")
        await asyncio.sleep(0.1)
        b = await join_new(c, "g")
        ra, rb = await asyncio.gather(a, b)
        assert ra.generation_id == rb.generation_id == 1 and len(c.groups["g"].members) == 2
        assert loop.time() - t0 >= 0.3
    run(body, {"group.initial.rebalance.delay.ms": "300"})


# ---------------------------------------------------------------- static membership


def test_static_member_replacement_without_rebalance():
    async def body(broker, c):
        ra = await join(c, "g", instance="a", version=5)      # static members skip MEMBER_ID_REQUIRED
        assert ra.error == 0 and ra.member_id.startswith("a-")
        rb_t = join(c, "g", instance="b", version=5)
        await settle()
        ra2 = join(c, "g", member_id=ra.member_id, instance="a", version=5)
        ra2, rb = await asyncio.gather(ra2, rb_t)
        g = c.groups["g"]
        await asyncio.gather(c.sync_group("g", 2, ra.member_id, "a", None, None,
                                          {ra.member_id: b"AA", rb.member_id: b"BB"}),
                             c.sync_group("g", 2, rb.member_id, "b", None, None, {}))
        assert g.state == STABLE and g.generation_id == 2
        # b restarts: unknown member id, same instance id -> replaces the old member, no rebalance
        rb_new = await join(c, "g", instance="b", version=5)
        assert rb_new.error == 0 and rb_new.member_id != rb.member_id
        assert rb_new.generation_id == 2 and rb_new.leader == ra.member_id and rb_new.members == []
        assert g.state == STABLE
        s = await c.sync_group("g", 2, rb_new.member_id, "b", None, None, {})
        assert s.error == 0 and s.assignment == b"BB"
        assert c.heartbeat("g", rb.member_id, "b", 2) == E.FENCED_INSTANCE_ID
        assert c.heartbeat("g", ra.member_id, "a", 2) == 0
        # the leader restarting (v9): KIP-814, skip_assignment with the member list
        ra_new = await join(c, "g", instance="a", version=9)
        assert ra_new.skip_assignment and ra_new.leader == ra_new.member_id and len(ra_new.members) == 2
        assert g.state == STABLE and g.generation_id == 2
        # admin removal by instance id
        top, errs = c.leave_group("g", [("", "b"), ("", "zzz")])
        assert errs == [0, E.UNKNOWN_MEMBER_ID] and g.state == PREPARING_REBALANCE
    run(body)


# ---------------------------------------------------------------- offsets and persistence


def test_commit_fencing_rules():
    async def body(broker, c):
        broker.create_topic("t", 2)
        o = {("t", 0): OffsetAndMetadata(5, 1, "md", now_ms())}
        assert c.commit_offsets("nog", 3, "m", None, o) == {("t", 0): E.ILLEGAL_GENERATION}
        assert c.commit_offsets("simple", -1, "", None, o) == {("t", 0): 0}        # standalone consumer
        assert c.commit_offsets("simple", -1, "", None, {("nope", 0): OffsetAndMetadata(1)}) == \
            {("nope", 0): E.UNKNOWN_TOPIC_OR_PARTITION}
        assert c.commit_offsets("simple", -1, "", None, {("t", 1): OffsetAndMetadata(1, -1, "x" * 5000)}) == \
            {("t", 1): E.OFFSET_METADATA_TOO_LARGE}
        r = await (await join_new(c, "g"))
        assert c.commit_offsets("g", 1, r.member_id, None, o) == {("t", 0): E.REBALANCE_IN_PROGRESS}
        await c.sync_group("g", 1, r.member_id, None, None, None, {})
        assert c.commit_offsets("g", 0, r.member_id, None, o) == {("t", 0): E.ILLEGAL_GENERATION}
        assert c.commit_offsets("g", 1, "x", None, o) == {("t", 0): E.UNKNOWN_MEMBER_ID}
        assert c.commit_offsets("g", 1, r.member_id, None, o) == {("t", 0): 0}
        [(t, p, got, err)] = c.fetch_offsets("g", [("t", 0)])
        assert got.offset == 5 and got.leader_epoch == 1 and got.metadata == "md" and err == 0
        assert c.fetch_offsets("g", [("t", 1)]) == [("t", 1, None, 0)]
        assert [row[:2] for row in c.fetch_offsets("g", None)] == [("t", 0)]
        # OffsetDelete: subscribed topics of a live consumer group are protected
        top, res = c.delete_offsets("g", [("t", 0)])
        assert top == 0 and res == {("t", 0): E.GROUP_SUBSCRIBED_TO_TOPIC}
        assert c.delete_groups(["g", "missing"]) == {"g": E.NON_EMPTY_GROUP, "missing": E.GROUP_ID_NOT_FOUND}
    run(body)


def test_persistence_round_trip(tmp_path):
    d = str(tmp_path / "data")
    state = {}

    async def first(broker, c):
        broker.create_topic("t", 3)
        r = await (await join_new(c, "live", session=60_000))
        await c.sync_group("live", 1, r.member_id, None, None, None, {r.member_id: b"assign"})
        c.commit_offsets("live", 1, r.member_id, None, {("t", 0): OffsetAndMetadata(11, 0, "m0", 1000),
                                                        ("t", 1): OffsetAndMetadata(12, 2, "", 2000)})
        c.commit_offsets("live", 1, r.member_id, None, {("t", 0): OffsetAndMetadata(13, 0, "m1", 3000)})
        c.commit_offsets("simple", -1, "", None, {("t", 2): OffsetAndMetadata(7, -1, "", 4000, 9_999_999_999_999)})
        c.commit_offsets("gone", -1, "", None, {("t", 2): OffsetAndMetadata(1)})
        assert c.delete_groups(["gone"]) == {"gone": 0}
        state["member"] = r.member_id
        t = broker.topics[OFFSETS_TOPIC]
        assert t.internal and t.partitions == 50
        assert broker.topics[OFFSETS_TOPIC].configs["cleanup.policy"] == "compact"

    async def second(broker, c):
        assert set(c.groups) == {"live", "simple"}
        g = c.groups["live"]
        assert g.state == STABLE and g.generation_id == 1 and g.protocol_name == "range"
        assert list(g.members) == [state["member"]] and g.leader_id == state["member"]
        assert g.members[state["member"]].assignment == b"assign"
        assert g.subscribed_topics == {"t"}
        assert g.offsets[("t", 0)] == OffsetAndMetadata(13, 0, "m1", 3000)
        assert g.offsets[("t", 1)] == OffsetAndMetadata(12, 2, "", 2000)
        assert c.groups["simple"].offsets[("t", 2)].expire_timestamp == 9_999_999_999_999
        # the restored member keeps its generation and heartbeats on
        assert c.heartbeat("live", state["member"], None, 1) == 0
        # records are where Kafka puts them, keyed the Kafka way
        lg = broker.partition_log(OFFSETS_TOPIC, partition_for("live", 50))
        from wire.records import decode_batches
        kinds = [grec.decode_key(r.key)[0] for b in decode_batches(bytes(lg.read(0, 1 << 20))) for r in b.records]
        assert "group" in kinds and "offset" in kinds
        # deleting the topic removes its offsets; an empty group without offsets disappears
        assert c.leave_group("live", [(state["member"], None)]) == (0, [0])
        broker.delete_topic("t")
        assert "simple" not in c.groups and "live" not in c.groups

    async def third(broker, c):
        assert c.groups == {}

    run(first, data_dir=d)
    run(second, data_dir=d)
    run(third, data_dir=d)


def test_offset_retention_expires_offsets_of_empty_groups():
    async def body(broker, c):
        broker.create_topic("t", 1)
        r = await (await join_new(c, "g"))
        await c.sync_group("g", 1, r.member_id, None, None, None, {})
        c.commit_offsets("g", 1, r.member_id, None, {("t", 0): OffsetAndMetadata(3, -1, "", now_ms())})
        assert c.cleanup_group_metadata(now=now_ms() + 10 ** 12) == 0      # stable + subscribed: kept
        c.leave_group("g", [(r.member_id, None)])
        assert c.groups["g"].state == EMPTY
        assert c.cleanup_group_metadata() == 0                            # not old enough
        assert c.cleanup_group_metadata(now=now_ms() + 7 * 24 * 3600 * 1000 + 1000) == 1
        assert "g" not in c.groups
    run(body)
