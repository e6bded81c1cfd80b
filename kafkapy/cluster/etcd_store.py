"""EtcdStore: the :class:`~kafkapy.cluster.store.MetadataStore` on etcd v3, a thin mapping of the interface.

Client: ``aetcd`` (the ``cluster`` extra) for the gRPC channel and etcd's generated v3 protobuf messages and stubs;
every call goes to the stubs directly (``KV.Range``/``Txn``/``Compact``, ``Lease.LeaseGrant``/``LeaseRevoke``/
``LeaseKeepAlive``, one ``Watch`` stream per watch), because aetcd's convenience layer drops what the interface
needs: a transaction's header revision, lease compares, and watch response boundaries (its watch hands out single
events through callbacks).

Mapping:

- Keys live under a cluster prefix (``prefix``, default ``/kafkapy/default/``), so several clusters can share one
  etcd; the store's API sees keys without it. Ranges, prefix deletes and watches are etcd key ranges under it.
- Revisions are etcd's. They are global to the etcd: writes of other clusters sharing it move them too, so a
  cluster's revisions strictly increase but are consecutive only while nobody else writes to that etcd. Likewise
  :meth:`EtcdStore.compact` compacts the whole etcd's history, and a fresh prefix is not at revision 1.
- Transactions, compares (a value compare on a missing key is false), the refusal of a key put twice or put and
  deleted in one branch (etcd checks both branches, the interface promises only the branch that runs) are etcd's.
- Leases: etcd TTLs are whole seconds: ``grant(ttl)`` asks for ``ceil(ttl)`` and returns the TTL etcd granted (at
  least its minimum, 1.5 election timeouts: 2 s with etcd's defaults, 1 s with :class:`EtcdServer`'s). etcd checks
  expiry every 500 ms, so keys go up to about half a second after the TTL. :meth:`~EtcdStore.keep_alive` is one
  ``LeaseKeepAlive`` round (etcd answers TTL 0 for an unknown lease: :class:`LeaseNotFound`). etcd has no way to
  expire a lease on demand, so the test lever :meth:`EtcdStore.expire` revokes it (same effect on keys and
  watchers; a coroutine, where MemoryStore's is a plain call).
- Watches: one gRPC Watch stream each, with ``prev_kv``; a background task reads it into the watcher's unbounded
  buffer, one :class:`WatchResponse` per revision (events grouped by ``mod_revision``). ``start_revision=0`` is
  etcd's "from the next revision", fixed when etcd creates the watch: on ``async with`` entry (which waits for the
  creation) or on the first ``__anext__``. A start before etcd's compaction revision raises
  :class:`CompactedError` on iteration; a broken stream raises :class:`StoreError` once, then the iteration ends.
- Errors: gRPC statuses become :class:`StoreError` (unavailable, deadline, invalid argument),
  :class:`LeaseNotFound` (lease not found) or :class:`CompactedError` (revision compacted). A compacted error from
  :meth:`~EtcdStore.compact` knows only the compaction revisions this store has seen (etcd does not say).
- One endpoint (``http://host:port`` or ``host:port``); every unary call is bounded by ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import collections
import math
from typing import Sequence
from urllib.parse import urlsplit

from kafkapy.cluster.store import (CompactedError, Compare, Delete, Event, Get, KeyValue, Lease,
                                   LeaseNotFound, MetadataStore, Op, Put, Range, RangeResult, StoreError, TxnResult,
                                   Watch, WatchResponse)

try:
    import aetcd
    from aetcd import rpc
except ImportError:                                  # the optional "cluster" extra
    aetcd = rpc = None

__all__ = ["EtcdStore", "aetcd_missing"]

_TARGET = {"version": 0, "create": 1, "mod": 2, "value": 3, "lease": 4}     # rpc.Compare.CompareTarget
_RESULT = {"=": 0, ">": 1, "<": 2, "!=": 3}                                 # rpc.Compare.CompareResult
# gRPC channel: responses (a large range) up to 256 MiB instead of 4; pings every 10 s so a dead etcd connection is
# noticed by watch streams too (etcd allows pings every 5 s and more, --grpc-keepalive-min-time)
_CHANNEL = {"grpc.max_receive_message_length": 256 << 20, "grpc.keepalive_time_ms": 10_000,
            "grpc.keepalive_timeout_ms": 5_000}
_FIELD = {"version": "version", "create": "create_revision", "mod": "mod_revision", "value": "value",
          "lease": "lease"}


def aetcd_missing() -> str | None:
    """Why EtcdStore cannot be used here (``aetcd`` not installed), or None."""
    return None if aetcd is not None else "the aetcd package is not installed (pip install 'kafkapy[cluster]')"


def _range_end(prefix: bytes) -> bytes:
    """etcd's end of the range of keys starting with ``prefix`` (``b"\\0"`` with key ``b"\\0"``: every key)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def _check_key(key) -> None:
    if not isinstance(key, str):
        raise StoreError(f"keys are str, not {type(key).__name__}")


class EtcdStore(MetadataStore):
    """The metadata store on etcd v3 (see the module docstring)."""

    def __init__(self, endpoint: str = "http://127.0.0.1:2379", prefix: str = "/kafkapy/default/", *,
                 timeout: float = 5.0):
        reason = aetcd_missing()
        if reason:
            raise StoreError(reason)
        if not prefix:
            raise StoreError("the cluster prefix must not be empty")
        url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if url.scheme != "http" or not url.hostname:
            raise StoreError(f"bad etcd endpoint {endpoint!r} (http://host:port)")
        self.endpoint = endpoint
        self.prefix = prefix
        self.timeout = timeout
        self._prefix = prefix.encode()
        self._client = aetcd.Client(host=url.hostname, port=url.port or 2379, timeout=timeout, options=_CHANNEL)
        self._watches: set[_EtcdWatch] = set()
        self._compact_revision = 0
        self._closed = False

    # ---- plumbing

    async def _stubs(self):
        self._check_open()
        try:
            await self._client.connect()
        except Exception as e:
            raise StoreError(f"cannot connect to etcd at {self.endpoint}: {e}") from e
        return self._client

    async def _call(self, stub_name: str, method: str, request):
        client = await self._stubs()
        try:
            return await getattr(getattr(client, stub_name), method)(request, timeout=self.timeout,
                                                                     metadata=client.metadata)
        except rpc.AioRpcError as e:
            raise self._error(e) from e

    def _error(self, e: rpc.AioRpcError, revision: int = 0) -> StoreError:
        details = e.details() or str(e.code())
        if e.code() == rpc.StatusCode.NOT_FOUND and "lease not found" in details:
            return LeaseNotFound(details)
        if e.code() == rpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
            return CompactedError(revision, max(self._compact_revision, revision))
        return StoreError(f"etcd: {details}")

    def _key(self, key: str) -> bytes:
        _check_key(key)
        return self._prefix + key.encode()

    def _kv(self, kv) -> KeyValue:
        return KeyValue(kv.key[len(self._prefix):].decode(), kv.value, kv.create_revision, kv.mod_revision,
                        kv.version, kv.lease)

    def _range_request(self, prefix: str):
        key = self._key(prefix)
        return rpc.RangeRequest(key=key, range_end=_range_end(key))

    # ---- reads

    async def get(self, key: str) -> KeyValue | None:
        resp = await self._call("kvstub", "Range", rpc.RangeRequest(key=self._key(key)))
        return self._kv(resp.kvs[0]) if resp.kvs else None

    async def range(self, prefix: str) -> RangeResult:
        resp = await self._call("kvstub", "Range", self._range_request(prefix))
        return RangeResult([self._kv(kv) for kv in resp.kvs], resp.header.revision)

    # ---- writes

    async def txn(self, compares: Sequence[Compare], success: Sequence[Op] = (),
                  failure: Sequence[Op] = ()) -> TxnResult:
        request = rpc.TxnRequest(compare=[self._compare(c) for c in compares],
                                 success=[self._op(op) for op in success], failure=[self._op(op) for op in failure])
        resp = await self._call("kvstub", "Txn", request)
        results: list = []
        for r in resp.responses:
            kind = r.WhichOneof("response")
            if kind == "response_put":
                results.append(None)
            elif kind == "response_delete_range":
                results.append(r.response_delete_range.deleted)
            else:
                results.append([self._kv(kv) for kv in r.response_range.kvs])
        ops = success if resp.succeeded else failure
        for i, op in enumerate(ops):
            if isinstance(op, Get):
                results[i] = results[i][0] if results[i] else None
        return TxnResult(resp.succeeded, resp.header.revision, results)

    def _compare(self, c: Compare):
        if not isinstance(c, Compare):
            raise StoreError(f"not a Compare: {c!r}")
        return rpc.Compare(key=self._key(c.key), target=_TARGET[c.target], result=_RESULT[c.op],
                           **{_FIELD[c.target]: c.value})

    def _op(self, op: Op):
        if isinstance(op, Put):
            if not isinstance(op.key, str) or not op.key or not isinstance(op.value, bytes):
                raise StoreError(f"bad put: key must be a non-empty str, value bytes: {op!r}")
            return rpc.RequestOp(request_put=rpc.PutRequest(key=self._key(op.key), value=op.value, lease=op.lease))
        if isinstance(op, Delete):
            key = self._key(op.key)
            return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                key=key, range_end=_range_end(key) if op.prefix else b""))
        if isinstance(op, Get):
            return rpc.RequestOp(request_range=rpc.RangeRequest(key=self._key(op.key)))
        if isinstance(op, Range):
            return rpc.RequestOp(request_range=self._range_request(op.prefix))
        raise StoreError(f"not a txn op: {op!r}")

    # ---- leases

    async def grant(self, ttl: float) -> Lease:
        if ttl <= 0:
            raise StoreError(f"lease TTL must be positive, not {ttl}")
        resp = await self._call("leasestub", "LeaseGrant", rpc.LeaseGrantRequest(TTL=math.ceil(ttl)))
        if resp.error:
            raise StoreError(f"etcd: {resp.error}")
        return Lease(resp.ID, resp.TTL)

    async def keep_alive(self, lease_id: int) -> float:
        client = await self._stubs()
        try:
            call = client.leasestub.LeaseKeepAlive(iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]),
                                                   timeout=self.timeout, metadata=client.metadata)
            async for resp in call:
                if resp.TTL <= 0:
                    raise LeaseNotFound(f"lease {lease_id} not found")
                return resp.TTL
        except rpc.AioRpcError as e:
            raise self._error(e) from e
        raise StoreError("etcd: lease keep-alive stream ended without an answer")

    async def revoke(self, lease_id: int) -> int:
        resp = await self._call("leasestub", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id))
        return resp.header.revision

    async def expire(self, lease_id: int) -> int:
        """Test lever: the lease ends now, its keys deleted; returns the store revision. etcd cannot expire a lease
        on demand: this revokes it, which has the same effect on keys and watchers."""
        return await self.revoke(lease_id)

    # ---- watches and history

    def watch(self, prefix: str, start_revision: int = 0) -> Watch:
        self._check_open()
        w = _EtcdWatch(self, self._range_request(prefix), start_revision)
        self._watches.add(w)
        return w

    async def compact(self, revision: int) -> None:
        try:
            await self._call("kvstub", "Compact", rpc.CompactionRequest(revision=revision, physical=True))
        except CompactedError as e:
            raise CompactedError(revision, max(self._compact_revision, e.compact_revision)) from None
        self._compact_revision = max(self._compact_revision, revision)

    # ---- lifecycle

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        watches, self._watches = list(self._watches), set()
        for w in watches:
            await w._stop()
        await self._client.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")


class _EtcdWatch(Watch):
    """One etcd Watch stream, read by a task into an unbounded buffer of responses (one per revision)."""

    def __init__(self, store: EtcdStore, request, start_revision: int):
        self._store = store
        self._create = rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=request.key, range_end=request.range_end, start_revision=max(start_revision, 0), prev_kv=True))
        self._start = start_revision
        self._buffer: collections.deque[WatchResponse] = collections.deque()
        self._pending: list[WatchResponse] = []
        self._waiter: asyncio.Future | None = None
        self._created: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._call = None
        self._error: StoreError | None = None
        self._closed = False

    def _ensure_started(self) -> None:
        if self._task is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._created = loop.create_future()
            self._task = loop.create_task(self._run())

    async def __aenter__(self):
        self._ensure_started()
        if self._created is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._created), self._store.timeout)
            except asyncio.TimeoutError:
                await self.aclose()
                raise StoreError(f"etcd did not create the watch within {self._store.timeout}s") from None
        return self

    async def _run(self) -> None:
        try:
            client = await self._store._stubs()

            async def requests():
                yield self._create
                await asyncio.Event().wait()           # keep our side of the stream open until cancelled

            self._call = rpc.WatchStub(client.channel).Watch(requests(), metadata=client.metadata)
            async for resp in self._call:
                if resp.created:
                    self._set_created()
                if resp.compact_revision:
                    raise CompactedError(self._start, resp.compact_revision)
                if resp.canceled:
                    raise StoreError(f"etcd canceled the watch: {resp.cancel_reason or 'no reason given'}")
                self._take(resp.events)
            if not self._closed:
                raise StoreError("etcd ended the watch stream")
        except asyncio.CancelledError:
            raise
        except rpc.AioRpcError as e:
            if not self._closed:
                self._error = self._store._error(e, self._start)
        except StoreError as e:
            if not self._closed:
                self._error = e
        except Exception as e:                          # never lose a failure silently in a background task
            if not self._closed:
                self._error = StoreError(f"etcd watch failed: {e!r}")
        finally:
            self._set_created()
            if self._call is not None:
                self._call.cancel()
            self._wake()

    def _set_created(self) -> None:
        if self._created is not None and not self._created.done():
            self._created.set_result(None)

    def _take(self, events) -> None:
        """One etcd response's events, as one WatchResponse per revision (etcd never splits a revision over two
        responses: fragmenting is off)."""
        store = self._store
        for ev in events:
            kv = store._kv(ev.kv)
            event = Event("delete" if ev.type == rpc.Event.DELETE else "put", kv,
                          store._kv(ev.prev_kv) if ev.HasField("prev_kv") else None)
            if self._pending and self._pending[-1].revision == kv.mod_revision:
                self._pending[-1].events.append(event)
            else:
                self._pending.append(WatchResponse(kv.mod_revision, [event]))
        if self._pending:
            self._buffer.extend(self._pending)
            self._pending = []
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def __anext__(self) -> WatchResponse:
        self._ensure_started()
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self._error is not None:
                error, self._error = self._error, None
                self._closed = True
                raise error
            if self._closed or self._task is None or self._task.done():
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def _stop(self) -> None:
        self._closed = True
        self._buffer.clear()
        self._error = None
        if self._call is not None:
            self._call.cancel()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():
                    raise
        self._set_created()
        self._wake()

    async def aclose(self) -> None:
        await self._stop()
        self._store._watches.discard(self)
