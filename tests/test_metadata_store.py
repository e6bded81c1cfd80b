"""Conformance suite of the cluster metadata store: every backend must pass it (rules in kafkapy/cluster/store.py).

The ``store`` fixture is parametrized over :data:`BACKENDS`; tests take ``store`` and ``run`` (runs a coroutine on
the store's event loop, bounded) and ``ttl`` (the shortest lease TTL the backend honours). Revisions are checked
relative to the store's revision at the start of a test, never as absolute numbers. Every wait is bounded.

Backends: memory, and etcd (:class:`~kafkapy.cluster.etcd_store.EtcdStore` on one etcd per module, started by
:class:`~kafkapy.cluster.etcd_server.EtcdServer` on free loopback ports with a temp data dir; each test under a
prefix of its own). A :class:`Backend`'s ``unavailable`` names why it cannot run here (no etcd binary, ``aetcd`` not
installed); the fixture skips with that reason. etcd's TTLs are whole seconds (1 s with EtcdServer's timing).
The suite counts on consecutive revisions within a test: true for etcd only because nothing else writes to that
etcd meanwhile. ``expire`` may be a plain call (MemoryStore) or a coroutine (EtcdStore, where it revokes).
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable

import pytest

from kafkapy.cluster import (CompactedError, Compare, Delete, Get, LeaseNotFound, MemoryStore, MetadataStore, Put,
                             Range, StoreError, Watch)
from kafkapy.cluster.etcd_server import INSTALL_HINT, EtcdServer, etcd_binary
from kafkapy.cluster.etcd_store import EtcdStore, aetcd_missing, rpc

pytestmark = pytest.mark.timeout(60)

WAIT = 5.0                    # seconds: the bound on every wait for an event


@dataclass
class Backend:
    name: str
    make: Callable[[], Awaitable[MetadataStore]]
    ttl: float                                      # shortest lease TTL to test with
    unavailable: Callable[[], str | None] = lambda: None


async def _memory() -> MetadataStore:
    return MemoryStore()


_etcd_server: EtcdServer | None = None          # one etcd for the module, started by the first etcd test


def _etcd_unavailable() -> str | None:
    if etcd_binary() is None:
        return f"no etcd binary found ({INSTALL_HINT}; scripts/test installs it when run as root)"
    return aetcd_missing()


async def _etcd() -> MetadataStore:
    """A store on the module's etcd under a prefix of its own. Tests share that etcd one after the other and nothing
    else writes to it, so a test's revisions are consecutive (with other writers they would only increase)."""
    global _etcd_server
    if _etcd_server is None:
        _etcd_server = await asyncio.to_thread(EtcdServer().start)
    store = EtcdStore(_etcd_server.endpoint, prefix=f"/kafkapy-test/{uuid.uuid4().hex}/")
    # a lease an earlier test left behind would expire during this one and move the revision: revoke them first
    client = await store._stubs()
    for lease in (await client.leasestub.LeaseLeases(rpc.LeaseLeasesRequest(), timeout=WAIT)).leases:
        try:
            await store.revoke(lease.ID)
        except LeaseNotFound:
            pass
    return store


@pytest.fixture(scope="module", autouse=True)
def _stop_etcd():
    yield
    global _etcd_server
    if _etcd_server is not None:
        _etcd_server.stop()
        _etcd_server = None


BACKENDS = [
    Backend("memory", _memory, ttl=0.2),
    Backend("etcd", _etcd, ttl=1, unavailable=_etcd_unavailable),    # EtcdServer's timing allows 1 s leases
]


@pytest.fixture
def runner():
    with asyncio.Runner() as r:
        yield r


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request) -> Backend:
    reason = request.param.unavailable()
    if reason:
        pytest.skip(f"{request.param.name} backend: {reason}")
    return request.param


@pytest.fixture
def store(backend, runner):
    s = runner.run(asyncio.wait_for(backend.make(), 30))
    yield s
    runner.run(asyncio.wait_for(s.close(), WAIT))


@pytest.fixture
def ttl(backend) -> float:
    return backend.ttl


@pytest.fixture
def run(runner):
    def go(coro, timeout: float = 30):
        return runner.run(asyncio.wait_for(coro, timeout))
    return go


async def revision(store: MetadataStore) -> int:
    return (await store.range("")).revision


async def take(watch: Watch, n: int) -> list:
    """The next responses of ``watch`` until they hold ``n`` events, as (revision, type, key, value) tuples."""
    out: list = []
    while len(out) < n:
        resp = await asyncio.wait_for(anext(watch), WAIT)
        assert resp.events and all(e.kv.mod_revision == resp.revision for e in resp.events)
        out.extend((resp.revision, e.type, e.kv.key, e.kv.value) for e in resp.events)
    assert len(out) == n, out
    return out


async def nothing_more(watch: Watch, within: float = 0.05) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(anext(watch), within)


# ---------------------------------------------------------------- keys, revisions, versions


def test_put_get_delete_revisions_and_versions(store, run):
    async def body():
        r0 = await revision(store)
        assert await store.get("a") is None
        assert await store.put("a", b"1") == r0 + 1
        kv = await store.get("a")
        assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) == \
            ("a", b"1", r0 + 1, r0 + 1, 1, 0)
        assert await store.put("a", b"2") == r0 + 2
        kv = await store.get("a")
        assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"2", r0 + 1, r0 + 2, 2)
        assert await store.put("b", b"x") == r0 + 3            # one global revision across keys
        assert tuple(await store.delete("a")) == (1, r0 + 4)
        assert await store.get("a") is None
        assert tuple(await store.delete("a")) == (0, r0 + 4)   # deleting nothing does not move the revision
        assert await revision(store) == r0 + 4
        assert await store.put("a", b"3") == r0 + 5            # recreated: a new life, version 1
        kv = await store.get("a")
        assert (kv.create_revision, kv.mod_revision, kv.version) == (r0 + 5, r0 + 5, 1)
    run(body())


def test_range_by_prefix_sorted(store, run):
    async def body():
        for k in ["t/b", "t/a/2", "t/a/1", "tx", "u/a", "t/c"]:
            await store.put(k, k.encode())
        kvs, rev = await store.range("t/")
        assert [kv.key for kv in kvs] == ["t/a/1", "t/a/2", "t/b", "t/c"]
        assert [kv.value for kv in kvs] == [b"t/a/1", b"t/a/2", b"t/b", b"t/c"]
        assert rev == await revision(store) == kvs[-1].mod_revision      # t/c was the last write
        assert [kv.key for kv in (await store.range("t"))[0]] == ["t/a/1", "t/a/2", "t/b", "t/c", "tx"]
        assert (await store.range("nothing/")).kvs == []
        deleted, rev2 = await store.delete("t/a/", prefix=True)
        assert (deleted, rev2) == (2, rev + 1)
        assert [kv.key for kv in (await store.range("t/"))[0]] == ["t/b", "t/c"]
    run(body())


def test_values_are_bytes_keys_are_str(store, run):
    async def body():
        with pytest.raises(StoreError):
            await store.put("k", "not bytes")
        with pytest.raises(StoreError):
            await store.put("", b"v")
        assert await store.get("k") is None
    run(body())


# ---------------------------------------------------------------- transactions


def test_cas_on_mod_revision_one_of_two_contenders_wins(store, run):
    async def body():
        await store.put("controller", b"none")
        seen = (await store.get("controller")).mod_revision

        async def contend(me: bytes):
            return await store.txn([Compare("controller", "mod", "=", seen)], [Put("controller", me)],
                                   [Get("controller")])
        results = await asyncio.gather(contend(b"1"), contend(b"2"))
        winners = [r for r in results if r.succeeded]
        losers = [r for r in results if not r.succeeded]
        assert len(winners) == 1 and len(losers) == 1
        kv = await store.get("controller")
        assert kv.mod_revision == winners[0].revision == seen + 1
        assert kv.value in (b"1", b"2") and kv.version == 2
        assert losers[0].results[0].value == kv.value         # the loser's failure branch read the winner's write
        assert losers[0].revision == winners[0].revision       # a txn without writes does not move the revision
    run(body())


def test_create_if_absent(store, run):
    async def body():
        absent = [Compare("brokers/ids/1", "create", "=", 0)]
        first = await store.txn(absent, [Put("brokers/ids/1", b"a")], [Get("brokers/ids/1")])
        assert first.succeeded and first.results == [None]
        second = await store.txn(absent, [Put("brokers/ids/1", b"b")], [Get("brokers/ids/1")])
        assert not second.succeeded and second.revision == first.revision
        assert second.results[0].value == b"a" and second.results[0].create_revision == first.revision
        assert (await store.get("brokers/ids/1")).value == b"a"
    run(body())


def test_compares_on_missing_and_present_keys(store, run):
    async def body():
        async def holds(*compares):
            return (await store.txn(list(compares))).succeeded
        # a missing key: create, mod, version and lease are 0; a value compare is false whatever the operator
        for target in ("create", "mod", "version", "lease"):
            assert await holds(Compare("m", target, "=", 0))
            assert not await holds(Compare("m", target, ">", 0))
        assert not await holds(Compare("m", "value", "=", b""))
        assert not await holds(Compare("m", "value", "!=", b"x"))
        rev = await store.put("k", b"b")
        await store.put("k", b"c")
        assert await holds(Compare("k", "version", "=", 2), Compare("k", "create", "=", rev),
                           Compare("k", "mod", ">", rev), Compare("k", "value", "=", b"c"))
        assert await holds(Compare("k", "version", "<", 3), Compare("k", "value", ">", b"b"),
                           Compare("k", "value", "<", b"d"), Compare("k", "value", "!=", b"b"))
        assert not await holds(Compare("k", "version", "=", 2), Compare("k", "value", "=", b"b"))   # all must hold
        with pytest.raises(StoreError):
            Compare("k", "value", "=", 1)
        with pytest.raises(StoreError):
            Compare("k", "mod", "<=", 1)
    run(body())


def test_txn_atomic_one_revision_and_branches(store, run):
    async def body():
        r0 = await store.put("x", b"0")
        w = store.watch("", r0 + 1)
        ok = await store.txn([Compare("x", "value", "=", b"0")],
                             [Put("a", b"1"), Put("b", b"2"), Get("a"), Delete("x"), Range("")],
                             [Put("failed", b"!")])
        assert ok.succeeded and ok.revision == r0 + 1
        assert ok.results[0] is None and ok.results[1] is None
        assert ok.results[2].value == b"1"                     # a Get sees the writes before it
        assert ok.results[3] == 1
        assert [kv.key for kv in ok.results[4]] == ["a", "b"]
        for key in ("a", "b"):
            kv = await store.get(key)
            assert kv.create_revision == kv.mod_revision == r0 + 1
        resp = await asyncio.wait_for(anext(w), WAIT)          # one response: the revision's events in write order
        assert resp.revision == r0 + 1
        assert [(e.type, e.kv.key) for e in resp.events] == [("put", "a"), ("put", "b"), ("delete", "x")]
        bad = await store.txn([Compare("x", "value", "=", b"0")], [Put("never", b"!")],
                              [Put("a", b"f1"), Put("c", b"f2")])
        assert not bad.succeeded and bad.revision == r0 + 2
        assert (await store.get("never")) is None
        assert (await store.get("a")).version == 2 and (await store.get("c")).mod_revision == r0 + 2
        # no branch to run, nothing written, revision unchanged
        none = await store.txn([Compare("x", "value", "=", b"0")])
        assert not none.succeeded and none.revision == r0 + 2 and none.results == []
        await w.aclose()
    run(body())


def test_txn_refused_whole(store, run):
    async def body():
        r0 = await store.put("k", b"v")
        with pytest.raises(StoreError):                          # one key put twice in one branch
            await store.txn([], [Put("n1", b"1"), Put("n1", b"2")])
        with pytest.raises(StoreError):                          # put inside a deleted range
            await store.txn([], [Delete("n", prefix=True), Put("n2", b"1")])
        with pytest.raises(LeaseNotFound):                       # a put with an unknown lease: nothing written
            await store.txn([], [Put("n3", b"1"), Put("n4", b"1", lease=987654321)])
        assert (await store.range("n"))[0] == [] and await revision(store) == r0
    run(body())


# ---------------------------------------------------------------- leases


def test_lease_expiry_deletes_its_keys_in_one_revision(store, run, ttl):
    async def body():
        lease = await store.grant(ttl)
        assert lease.id != 0 and lease.ttl == ttl
        await store.put("brokers/ids/1", b"b1", lease=lease.id)
        await store.put("brokers/ids/2", b"b2", lease=lease.id)
        r = await store.put("brokers/ids/3", b"b3")
        kv = await store.get("brokers/ids/1")
        assert kv.lease == lease.id
        async with store.watch("brokers/", r + 1) as w:
            resp = await asyncio.wait_for(anext(w), ttl + WAIT)
            assert resp.revision == r + 1
            assert [(e.type, e.kv.key, e.kv.mod_revision) for e in resp.events] == \
                [("delete", "brokers/ids/1", r + 1), ("delete", "brokers/ids/2", r + 1)]
            assert [e.prev_kv.value for e in resp.events] == [b"b1", b"b2"]
        assert [kv.key for kv in (await store.range("brokers/"))[0]] == ["brokers/ids/3"]
        with pytest.raises(LeaseNotFound):
            await store.keep_alive(lease.id)
        with pytest.raises(LeaseNotFound):
            await store.put("brokers/ids/1", b"again", lease=lease.id)
    run(body())


def test_keep_alive_extends(store, run, ttl):
    async def body():
        lease = await store.grant(ttl)
        r = await store.put("controller", b"1", lease=lease.id)
        loop = asyncio.get_running_loop()
        until = loop.time() + 3 * ttl
        while loop.time() < until:
            await asyncio.sleep(ttl / 4)
            assert await store.keep_alive(lease.id) == ttl
        assert (await store.get("controller")).value == b"1"
        async with store.watch("controller", r + 1) as w:     # stops being renewed: gone within about a TTL
            assert await asyncio.wait_for(take(w, 1), ttl + WAIT) == [(r + 1, "delete", "controller", b"")]
    run(body())


def test_keep_alive_after_expiry_raises(store, run, ttl):
    async def body():
        lease = await store.grant(ttl)
        await asyncio.sleep(ttl * 3)
        with pytest.raises(LeaseNotFound):
            await store.keep_alive(lease.id)
        with pytest.raises(LeaseNotFound):
            await store.revoke(lease.id)
    run(body())


def test_revoke_deletes_keys(store, run):
    async def body():
        lease = await store.grant(60)
        await store.put("a", b"1", lease=lease.id)
        await store.put("b", b"2", lease=lease.id)
        r = await store.put("b", b"3")                   # put without a lease detaches the key from it
        assert (await store.get("b")).lease == 0
        assert await store.revoke(lease.id) == r + 1
        assert await store.get("a") is None and (await store.get("b")).value == b"3"
        with pytest.raises(LeaseNotFound):
            await store.keep_alive(lease.id)
        with pytest.raises(LeaseNotFound):
            await store.revoke(lease.id)
        empty = await store.grant(60)                    # revoking a lease without keys writes nothing
        assert await store.revoke(empty.id) == r + 1
    run(body())


def test_expire_lever(store, run):
    if not hasattr(store, "expire"):
        pytest.skip("backend has no expire() test lever")

    async def body():
        lease = await store.grant(60)
        r = await store.put("a", b"1", lease=lease.id)
        w = store.watch("a", r + 1)
        expired = store.expire(lease.id)                 # MemoryStore: a plain call; EtcdStore: a coroutine
        assert (await expired if inspect.isawaitable(expired) else expired) == r + 1
        assert await take(w, 1) == [(r + 1, "delete", "a", b"")]
        with pytest.raises(LeaseNotFound):
            await store.keep_alive(lease.id)
        await w.aclose()
    run(body())


# ---------------------------------------------------------------- watches


def test_watch_order_across_keys_and_prefix(store, run):
    async def body():
        r0 = await revision(store)
        async with store.watch("t/") as w:                 # start_revision 0: from the next write
            await store.put("t/b", b"1")
            await store.put("other", b"x")
            await store.put("t/a", b"2")
            await store.delete("t/b")
            await store.txn([], [Put("t/z", b"3"), Put("t/c", b"4"), Put("u", b"5")])
            assert await take(w, 5) == [(r0 + 1, "put", "t/b", b"1"), (r0 + 3, "put", "t/a", b"2"),
                                        (r0 + 4, "delete", "t/b", b""), (r0 + 5, "put", "t/z", b"3"),
                                        (r0 + 5, "put", "t/c", b"4")]
            await nothing_more(w)
    run(body())


def test_watch_events_carry_kv_and_prev_kv(store, run):
    async def body():
        r0 = await revision(store)
        async with store.watch("k", r0 + 1) as w:
            await store.put("k", b"1")
            await store.put("k", b"2")
            await store.delete("k")
            events = []
            for _ in range(3):
                events += (await asyncio.wait_for(anext(w), WAIT)).events
        create, update, delete = events
        assert create.prev_kv is None and (create.kv.version, create.kv.create_revision) == (1, r0 + 1)
        assert update.prev_kv.value == b"1" and (update.kv.version, update.kv.mod_revision) == (2, r0 + 2)
        assert delete.type == "delete" and delete.kv.key == "k" and delete.kv.mod_revision == r0 + 3
        assert delete.prev_kv.value == b"2" and delete.prev_kv.version == 2
    run(body())


def test_watch_from_older_revision_replays_history(store, run):
    async def body():
        r0 = await revision(store)
        for i in range(5):
            await store.put(f"h/{i}", str(i).encode())
        async with store.watch("h/", r0 + 3) as w:
            await store.put("h/5", b"5")
            got = await take(w, 4)
        assert got == [(r0 + 3, "put", "h/2", b"2"), (r0 + 4, "put", "h/3", b"3"), (r0 + 5, "put", "h/4", b"4"),
                       (r0 + 6, "put", "h/5", b"5")]
        async with store.watch("h/", r0 + 1) as w:          # the whole history, again, for a new watcher
            assert [g[2] for g in await take(w, 6)] == [f"h/{i}" for i in range(6)]
    run(body())


def test_watch_resumption_no_loss_no_duplicates(store, run):
    async def body():
        r0 = await revision(store)
        total = 30
        seen: list[int] = []

        async def writer():
            for i in range(total):
                await store.put(f"r/{i % 4}", str(i).encode())
                if i % 3 == 0:
                    await asyncio.sleep(0)

        task = asyncio.ensure_future(writer())
        next_rev = r0 + 1
        while len(seen) < total:                              # a watcher that stops after every few responses
            async with store.watch("r/", next_rev) as w:
                for _ in range(4):
                    if len(seen) == total:
                        break
                    resp = await asyncio.wait_for(anext(w), WAIT)
                    seen.extend(int(e.kv.value) for e in resp.events)
                    next_rev = resp.revision + 1
        await asyncio.wait_for(task, WAIT)
        assert seen == list(range(total))
    run(body())


def test_two_watchers_each_get_every_event(store, run):
    async def body():
        r0 = await revision(store)
        w1, w2 = store.watch("", r0 + 1), store.watch("", r0 + 1)
        lease = await store.grant(60)
        await store.put("a", b"1", lease=lease.id)
        await store.put("b", b"2")
        await store.revoke(lease.id)
        expect = [(r0 + 1, "put", "a", b"1"), (r0 + 2, "put", "b", b"2"), (r0 + 3, "delete", "a", b"")]
        got1, got2 = await asyncio.gather(take(w1, 3), take(w2, 3))
        assert got1 == got2 == expect
        await w1.aclose()
        await store.put("c", b"3")                             # w1 closed: w2 still follows
        assert await take(w2, 1) == [(r0 + 4, "put", "c", b"3")]
        await w2.aclose()
    run(body())


def test_compaction(store, run):
    async def body():
        r0 = await revision(store)
        for i in range(6):
            await store.put("c", str(i).encode())
        live = store.watch("c", r0 + 1)
        assert [g[3] for g in await take(live, 6)] == [str(i).encode() for i in range(6)]
        await store.compact(r0 + 4)
        with pytest.raises(CompactedError):
            await asyncio.wait_for(anext(store.watch("c", r0 + 3)), WAIT)
        async with store.watch("c", r0 + 4) as w:               # the compaction revision itself stays watchable
            assert [g[3] for g in await take(w, 3)] == [b"3", b"4", b"5"]
        await store.put("c", b"6")                              # a caught-up watcher goes on after compaction
        assert await take(live, 1) == [(r0 + 7, "put", "c", b"6")]
        await live.aclose()
        with pytest.raises(CompactedError):
            await store.compact(r0 + 2)
        with pytest.raises(StoreError):
            await store.compact(r0 + 100)                       # a future revision
        assert (await store.get("c")).value == b"6"             # compaction keeps the current state
    run(body())


def test_slow_watcher_does_not_block_writers(store, run):
    async def body():
        r0 = await revision(store)
        n = 300
        got: list[bytes] = []
        writer_done = asyncio.Event()

        async def slow():
            async with store.watch("s/", r0 + 1) as w:
                while len(got) < n:
                    resp = await asyncio.wait_for(anext(w), WAIT)
                    got.extend(e.kv.value for e in resp.events)
                    await writer_done.wait()                    # stops reading until every write is done
                    await asyncio.sleep(0.001)

        reader = asyncio.ensure_future(slow())
        await asyncio.sleep(0)
        for i in range(n):
            await asyncio.wait_for(store.put(f"s/{i % 7}", str(i).encode()), WAIT)
        assert len(got) < n                                     # the writer finished first, without waiting
        writer_done.set()
        await asyncio.wait_for(reader, WAIT * 4)
        assert got == [str(i).encode() for i in range(n)]
    run(body())


def test_watch_close_and_cancel(store, run):
    async def body():
        r0 = await revision(store)
        w = store.watch("k", r0 + 1)
        waiting = asyncio.ensure_future(anext(w))
        await asyncio.sleep(0.01)
        waiting.cancel()                                         # a cancelled wait leaves the watch usable
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await store.put("k", b"1")
        assert await take(w, 1) == [(r0 + 1, "put", "k", b"1")]
        pending = asyncio.ensure_future(anext(w))
        await asyncio.sleep(0.01)
        await w.aclose()                                         # closing ends a pending wait and the iteration
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, WAIT)
        await store.put("k", b"2")
        assert [r async for r in w] == []
        other = store.watch("k", r0 + 1)
        await store.close()                                      # closing the store ends every watch
        assert [r async for r in other] == []
        with pytest.raises(StoreError):
            await store.put("k", b"3")
    run(body())
