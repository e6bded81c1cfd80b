"""EtcdStore beyond the conformance suite (tests/test_metadata_store.py): the cluster prefix, revisions shared with
other writers, errors when etcd goes away, and the EtcdServer helper. Each test starts its own etcd."""

from __future__ import annotations

import asyncio
import os

import pytest

from kafkapy.cluster import EtcdStore, LeaseNotFound, StoreError
from kafkapy.cluster.etcd_server import INSTALL_HINT, EtcdServer, etcd_binary
from kafkapy.cluster.etcd_store import aetcd_missing

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(etcd_binary() is None, reason=f"no etcd binary found ({INSTALL_HINT})"),
              pytest.mark.skipif(aetcd_missing() is not None, reason=str(aetcd_missing()))]

WAIT = 5.0


@pytest.fixture
def etcd():
    with EtcdServer() as server:
        yield server


def test_server_starts_and_stops_cleanly():
    server = EtcdServer().start()
    data_dir, process = server.data_dir, server.process
    assert os.path.isdir(data_dir) and process.poll() is None and server.endpoint.startswith("http://127.0.0.1:")
    server.stop()
    assert process.poll() is not None and not os.path.exists(data_dir)
    server.stop()                                                # idempotent


def test_clusters_share_one_etcd_under_their_prefixes(etcd):
    async def body():
        a, b = EtcdStore(etcd.endpoint, "/kafkapy/a/"), EtcdStore(etcd.endpoint, "/kafkapy/b/")
        try:
            async with a.watch("") as wa:
                r1 = await a.put("brokers/ids/1", b"a1")
                r2 = await b.put("brokers/ids/1", b"b1")       # the other cluster's write moves the revision too
                r3 = await a.put("brokers/ids/2", b"a2")
                assert r1 < r2 < r3 and r3 == r1 + 2
                kvs, rev = await a.range("")
                assert [(kv.key, kv.value) for kv in kvs] == [("brokers/ids/1", b"a1"), ("brokers/ids/2", b"a2")]
                assert rev == r3
                got = [await asyncio.wait_for(anext(wa), WAIT) for _ in range(2)]
                assert [(g.revision, g.events[0].kv.key) for g in got] == [(r1, "brokers/ids/1"), (r3, "brokers/ids/2")]
            assert (await b.delete("", prefix=True)).deleted == 1   # a prefix delete stays inside its cluster
            assert len((await a.range("")).kvs) == 2
            with pytest.raises(StoreError):
                EtcdStore(etcd.endpoint, "")
        finally:
            await a.close()
            await b.close()
    asyncio.run(body())


def test_ttl_is_whole_seconds(etcd):
    async def body():
        store = EtcdStore(etcd.endpoint)
        lease = await store.grant(0.3)
        assert lease.ttl == 1 and await store.keep_alive(lease.id) == 1
        assert await store.expire(lease.id) == await store.revoke((await store.grant(5)).id)
        with pytest.raises(LeaseNotFound):
            await store.keep_alive(lease.id)
        await store.close()
    asyncio.run(body())


def test_etcd_gone_raises_store_errors():
    async def body():
        server = await asyncio.to_thread(EtcdServer().start)
        store = EtcdStore(server.endpoint, timeout=2)
        try:
            r = await store.put("k", b"1")
            w = store.watch("k", r)
            assert (await asyncio.wait_for(anext(w), WAIT)).revision == r
            await asyncio.to_thread(server.stop)
            with pytest.raises(StoreError):                  # the watch fails once, typed, then ends
                await asyncio.wait_for(anext(w), 20)
            with pytest.raises(StopAsyncIteration):
                await anext(w)
            with pytest.raises(StoreError):
                await store.get("k")
            with pytest.raises(StoreError):
                await store.grant(5)
        finally:
            await store.close()
            server.stop()
    asyncio.run(body())
