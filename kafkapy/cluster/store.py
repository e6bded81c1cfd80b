"""The cluster metadata store: one interface with etcd v3's semantics, and :class:`MemoryStore` for one process.

Brokers never agree on anything by themselves: the store is the only place where cluster metadata is decided
(ZooKeeper's role in Kafka before KRaft). Backends: :class:`MemoryStore` (an in-process cluster) and
:class:`~kafkapy.cluster.etcd_store.EtcdStore` (etcd v3, brokers in separate processes). The interface is etcd
v3's, so that backend is a thin mapping (its header says where etcd differs: revisions shared by every cluster on
one etcd, whole-second TTLs, ``expire`` by revoking).

The rules, the same for every backend (``tests/test_metadata_store.py`` checks them):

- Keys are ``str`` (paths such as ``"brokers/ids/1"``), values ``bytes``. A prefix is a plain string prefix:
  ``"topics/t"`` also matches ``"topics/t2"``, so end prefixes with ``"/"``; the prefix ``""`` matches every key.
- The store has one revision. Every write (a put, a delete that deletes something, a transaction with writes, a
  lease expiry or revoke that deletes keys) increments it by one; all the writes of that one operation share the new
  revision. Operations that change nothing do not move it. A fresh store is at revision 1, as etcd. (On an etcd
  shared with other writers, their writes move it too: revisions then only strictly increase.)
- A :class:`KeyValue` carries ``create_revision`` (revision of the put that created it), ``mod_revision`` (of its
  last put), ``version`` (puts since creation, 1 at creation) and ``lease`` (0: none). Deleting a key forgets it:
  a put after a delete creates it again with version 1.
- A put attaches the key to the given lease, or detaches it from any lease (``lease=0``). Putting with a lease that
  does not exist raises :class:`LeaseNotFound` and writes nothing.
- :meth:`MetadataStore.txn`: if every :class:`Compare` holds, the ``success`` ops run, else the ``failure`` ops;
  atomically, with one revision for all their writes. Ops run in order, and a Get or Range sees the writes of the
  ops before it. A missing key has create and mod revision 0, version 0 and lease 0; a ``value`` compare on a
  missing key is false whatever the operator (etcd). Within one branch a key may be put at most once and may not be
  both put and deleted (etcd refuses such a request): :class:`StoreError`, nothing written.
- Leases: :meth:`~MetadataStore.grant` a TTL in seconds; :meth:`~MetadataStore.keep_alive` restarts it (raises
  :class:`LeaseNotFound` once expired or revoked). On expiry or revoke, every key attached to the lease is deleted,
  all in one revision, and watchers see the delete events.
- Watches: :meth:`~MetadataStore.watch` yields :class:`WatchResponse` objects, one per revision that touched the
  prefix, in revision order, with that revision's events in the order it wrote them (a lease's keys in key order):
  every event from ``start_revision`` on, old ones replayed from history. ``start_revision=0`` means from the next
  write after the watch is established (MemoryStore: at the call; a remote backend: on ``async with`` entry or the
  first iteration). Resuming at the last seen revision + 1 misses nothing and repeats nothing. A delete event's
  ``kv`` has only the key and the delete's ``mod_revision`` (etcd); ``prev_kv`` is the key-value before the event
  (None for a creation). :meth:`~MetadataStore.compact` drops the history before a revision; a watch starting
  before it raises :class:`CompactedError` when iterated. Each watcher has its own unbounded buffer: a slow watcher
  never blocks writers. Close a watch with ``aclose()`` (or ``async with``); a task cancelled while waiting on one
  leaves it usable. Closing the store ends every watch.
- Errors are typed: :class:`StoreError` and its subclasses :class:`LeaseNotFound` and :class:`CompactedError`.

:class:`MemoryStore` claims no distribution: it holds the metadata of one process and is used from one asyncio event
loop. Every operation applies at once (nothing awaits inside it), which is its atomicity. Lease expiry runs on that
loop's clock (``loop.call_later``, no polling); :meth:`MemoryStore.expire` is a test lever that expires a lease now.
TTLs are float seconds (etcd rounds up to whole seconds with a minimum of about 2). History grows until
:meth:`~MetadataStore.compact` is called, as etcd without auto-compaction.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import collections
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Sequence, Union

__all__ = [
    "CompactedError", "Compare", "Delete", "DeleteResult", "Event", "Get", "KeyValue", "Lease", "LeaseNotFound",
    "MemoryStore", "MetadataStore", "Put", "Range", "RangeResult", "StoreError", "TxnResult", "Watch",
    "WatchResponse",
]


class StoreError(Exception):
    """The store refused an operation (closed, invalid request, future revision, ...)."""


class LeaseNotFound(StoreError):
    """The lease does not exist: never granted, expired or revoked."""


class CompactedError(StoreError):
    """The requested revision is older than the store's compaction revision."""

    def __init__(self, revision: int, compact_revision: int):
        super().__init__(f"revision {revision} is compacted (compacted up to {compact_revision})")
        self.revision = revision
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True)
class Event:
    type: Literal["put", "delete"]
    kv: KeyValue
    prev_kv: KeyValue | None = None


@dataclass(frozen=True)
class WatchResponse:
    revision: int                 # the revision of every event in it
    events: list[Event]


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: float


class RangeResult(NamedTuple):
    kvs: list[KeyValue]
    revision: int


class DeleteResult(NamedTuple):
    deleted: int
    revision: int


# ---------------------------------------------------------------- transactions

_TARGETS = ("version", "create", "mod", "value", "lease")
_OPS = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b, ">": lambda a, b: a > b}


@dataclass(frozen=True)
class Compare:
    """``Compare("brokers/ids/1", "create", "=", 0)``: target is version, create, mod, value or lease."""
    key: str
    target: Literal["version", "create", "mod", "value", "lease"]
    op: Literal["=", "!=", "<", ">"]
    value: int | bytes

    def __post_init__(self):
        if self.target not in _TARGETS or self.op not in _OPS:
            raise StoreError(f"bad compare {self.target!r} {self.op!r}")
        if (self.target == "value") != isinstance(self.value, bytes):
            raise StoreError(f"compare on {self.target} needs {'bytes' if self.target == 'value' else 'an int'}")

    def holds(self, kv: KeyValue | None) -> bool:
        if kv is None:
            if self.target == "value":
                return False
            kv = KeyValue(self.key, b"", 0, 0, 0, 0)
        actual = {"version": kv.version, "create": kv.create_revision, "mod": kv.mod_revision, "value": kv.value,
                  "lease": kv.lease}[self.target]
        return _OPS[self.op](actual, self.value)


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False          # delete every key starting with ``key``


@dataclass(frozen=True)
class Get:
    key: str


@dataclass(frozen=True)
class Range:
    prefix: str


Op = Union[Put, Delete, Get, Range]


@dataclass(frozen=True)
class TxnResult:
    """``results``, one per op of the branch that ran: Put -> None, Delete -> count deleted, Get -> KeyValue or None,
    Range -> list of KeyValue sorted by key."""
    succeeded: bool
    revision: int
    results: list = field(default_factory=list)


# ---------------------------------------------------------------- the interface


class Watch(abc.ABC):
    """An async iterator of :class:`WatchResponse`; also an async context manager that closes it. A remote backend
    establishes its watch in ``__aenter__`` or on the first ``__anext__``."""

    def __aiter__(self):
        return self

    @abc.abstractmethod
    async def __anext__(self) -> WatchResponse: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()


class MetadataStore(abc.ABC):
    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    async def range(self, prefix: str) -> RangeResult: ...

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Returns the revision of the put (a transaction of one Put, for every backend)."""
        return (await self.txn((), [Put(key, value, lease)])).revision

    async def delete(self, key: str, *, prefix: bool = False) -> DeleteResult:
        result = await self.txn((), [Delete(key, prefix)])
        return DeleteResult(result.results[0], result.revision)

    @abc.abstractmethod
    async def txn(self, compares: Sequence[Compare], success: Sequence[Op] = (),
                  failure: Sequence[Op] = ()) -> TxnResult: ...

    @abc.abstractmethod
    async def grant(self, ttl: float) -> Lease: ...

    @abc.abstractmethod
    async def keep_alive(self, lease_id: int) -> float:
        """Restart the lease's TTL; returns it. Raises LeaseNotFound."""

    @abc.abstractmethod
    async def revoke(self, lease_id: int) -> int:
        """Delete the lease and its keys; returns the store revision. Raises LeaseNotFound."""

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int = 0) -> Watch: ...

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Drop history before ``revision``. CompactedError if already compacted there, StoreError if in the
        future."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the store (idempotent): watches end, later calls raise StoreError."""


# ---------------------------------------------------------------- MemoryStore


class _LeaseState:
    __slots__ = ("ttl", "keys", "timer")

    def __init__(self, ttl: float):
        self.ttl = ttl
        self.keys: set[str] = set()
        self.timer: asyncio.TimerHandle | None = None


class _MemoryWatch(Watch):
    def __init__(self, store: MemoryStore, prefix: str, start_revision: int):
        self._store = store
        self._prefix = prefix
        self._start = start_revision
        self._buffer: collections.deque[WatchResponse] = collections.deque()
        self._waiter: asyncio.Future | None = None
        self._error: StoreError | None = None
        self._closed = False

    def _deliver(self, revision: int, events: list[Event]) -> None:
        if self._closed or revision < self._start:
            return
        mine = [e for e in events if e.kv.key.startswith(self._prefix)]
        if mine:
            self._buffer.append(WatchResponse(revision, mine))
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self) -> None:
        self._closed = True
        self._wake()

    async def __anext__(self) -> WatchResponse:
        while True:
            if self._error is not None:
                error, self._error = self._error, None
                self._end()
                raise error
            if self._closed:
                raise StopAsyncIteration
            if self._buffer:
                return self._buffer.popleft()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def aclose(self) -> None:
        self._buffer.clear()
        self._end()
        self._store._watchers.discard(self)


class MemoryStore(MetadataStore):
    """The store for one process, on one asyncio loop. See the module docstring for the rules."""

    def __init__(self):
        self._kv: dict[str, KeyValue] = {}
        self._revision = 1
        self._compact_revision = 0
        self._history: list[tuple[int, list[Event]]] = []     # (revision, its events), in revision order
        self._leases: dict[int, _LeaseState] = {}
        self._next_lease_id = 1
        self._watchers: set[_MemoryWatch] = set()
        self._closed = False

    # ---- reads

    async def get(self, key: str) -> KeyValue | None:
        self._check_open()
        return self._kv.get(key)

    async def range(self, prefix: str) -> RangeResult:
        self._check_open()
        return RangeResult(self._range(prefix), self._revision)

    def _range(self, prefix: str) -> list[KeyValue]:
        return [self._kv[k] for k in sorted(k for k in self._kv if k.startswith(prefix))]

    # ---- writes

    async def txn(self, compares: Sequence[Compare], success: Sequence[Op] = (),
                  failure: Sequence[Op] = ()) -> TxnResult:
        self._check_open()
        succeeded = all(c.holds(self._kv.get(c.key)) for c in compares)
        ops = list(success if succeeded else failure)
        self._validate(ops)
        revision = self._revision + 1
        events: list[Event] = []
        results: list = []
        for op in ops:
            if isinstance(op, Put):
                events.append(self._put(op, revision))
                results.append(None)
            elif isinstance(op, Delete):
                keys = [k for k in self._kv if k.startswith(op.key)] if op.prefix else [op.key] * (op.key in self._kv)
                events.extend(self._delete(k, revision) for k in sorted(keys))
                results.append(len(keys))
            elif isinstance(op, Get):
                results.append(self._kv.get(op.key))
            else:
                results.append(self._range(op.prefix))
        self._commit(revision, events)
        return TxnResult(succeeded, self._revision, results)

    def _validate(self, ops: list[Op]) -> None:
        puts = [op.key for op in ops if isinstance(op, Put)]
        if len(set(puts)) != len(puts):
            raise StoreError("duplicate key given in txn request")
        for op in ops:
            if isinstance(op, Put):
                if not isinstance(op.key, str) or not op.key or not isinstance(op.value, bytes):
                    raise StoreError(f"bad put: key must be a non-empty str, value bytes: {op!r}")
                if op.lease and op.lease not in self._leases:
                    raise LeaseNotFound(f"lease {op.lease} not found")
            elif isinstance(op, Delete):
                if any(k.startswith(op.key) if op.prefix else k == op.key for k in puts):
                    raise StoreError("duplicate key given in txn request")
            elif not isinstance(op, (Get, Range)):
                raise StoreError(f"not a txn op: {op!r}")

    def _put(self, op: Put, revision: int) -> Event:
        prev = self._kv.get(op.key)
        if prev is not None and prev.lease and prev.lease != op.lease and prev.lease in self._leases:
            self._leases[prev.lease].keys.discard(op.key)
        if op.lease:
            self._leases[op.lease].keys.add(op.key)
        kv = KeyValue(op.key, op.value, prev.create_revision if prev else revision, revision,
                      prev.version + 1 if prev else 1, op.lease)
        self._kv[op.key] = kv
        return Event("put", kv, prev)

    def _delete(self, key: str, revision: int) -> Event:
        prev = self._kv.pop(key)
        if prev.lease and prev.lease in self._leases:
            self._leases[prev.lease].keys.discard(key)
        return Event("delete", KeyValue(key, b"", 0, revision, 0, 0), prev)

    def _commit(self, revision: int, events: list[Event]) -> None:
        if not events:
            return
        self._revision = revision
        self._history.append((revision, events))
        for w in list(self._watchers):
            w._deliver(revision, events)

    # ---- leases

    async def grant(self, ttl: float) -> Lease:
        self._check_open()
        if ttl <= 0:
            raise StoreError(f"lease TTL must be positive, not {ttl}")
        lease_id = self._next_lease_id
        self._next_lease_id += 1
        self._leases[lease_id] = _LeaseState(ttl)
        self._arm(lease_id)
        return Lease(lease_id, ttl)

    async def keep_alive(self, lease_id: int) -> float:
        self._check_open()
        state = self._lease(lease_id)
        self._arm(lease_id)
        return state.ttl

    async def revoke(self, lease_id: int) -> int:
        self._check_open()
        return self._end_lease(lease_id)

    def expire(self, lease_id: int) -> int:
        """Test lever: the lease expires now (its keys are deleted); returns the store revision."""
        return self._end_lease(lease_id)

    def _lease(self, lease_id: int) -> _LeaseState:
        state = self._leases.get(lease_id)
        if state is None:
            raise LeaseNotFound(f"lease {lease_id} not found")
        return state

    def _arm(self, lease_id: int) -> None:
        state = self._leases[lease_id]
        if state.timer is not None:
            state.timer.cancel()
        state.timer = asyncio.get_running_loop().call_later(state.ttl, self._end_lease, lease_id)

    def _end_lease(self, lease_id: int) -> int:
        state = self._lease(lease_id)
        del self._leases[lease_id]
        if state.timer is not None:
            state.timer.cancel()
        revision = self._revision + 1
        self._commit(revision, [self._delete(k, revision) for k in sorted(state.keys)])
        return self._revision

    # ---- watches and history

    def watch(self, prefix: str, start_revision: int = 0) -> Watch:
        self._check_open()
        start = start_revision if start_revision > 0 else self._revision + 1
        w = _MemoryWatch(self, prefix, start)
        if start < self._compact_revision:
            w._error = CompactedError(start, self._compact_revision)
            return w
        first = bisect.bisect_left(self._history, start, key=lambda entry: entry[0])
        for revision, events in self._history[first:]:
            w._deliver(revision, events)
        self._watchers.add(w)
        return w

    async def compact(self, revision: int) -> None:
        self._check_open()
        if revision <= self._compact_revision:
            raise CompactedError(revision, self._compact_revision)
        if revision > self._revision:
            raise StoreError(f"cannot compact to future revision {revision} (store at {self._revision})")
        self._compact_revision = revision
        del self._history[:bisect.bisect_left(self._history, revision, key=lambda entry: entry[0])]

    # ---- lifecycle

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for state in self._leases.values():
            if state.timer is not None:
                state.timer.cancel()
        self._leases.clear()
        for w in list(self._watchers):
            w._end()
        self._watchers.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
