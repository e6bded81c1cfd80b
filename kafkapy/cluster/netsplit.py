"""Network partitions in an in-process cluster (``kafkapy.Cluster.isolate`` / ``heal``).

The brokers of ``kafkapy.Cluster`` share one event loop and one :class:`~kafkapy.cluster.store.MemoryStore`, so a
partition is simulated at the three places where traffic crosses between brokers, clients and the store:

- the store: each broker reaches it through its own :class:`PartitionableStore`; while the broker is ``cut_off``
  (on the side without the store) every call raises :class:`StoreError`, as a lost connection to etcd would, and a
  watch it follows raises StoreError at its next change (nothing of a revision after the cut is seen);
- broker to broker: a broker's :class:`Isolation` names the brokers of the other side. Its outgoing connections
  (:class:`~kafkapy.cluster.replica.LeaderConnection`: replica fetchers, transaction markers) to them are refused and
  closed; its server closes a connection on a request whose client id (``broker-<id>-...``) names one of them, and
  closes instead of answering when the partition began while the request was handled (a follower's long poll, an
  acks=all produce);
- clients (any other client id): a ``cut_off`` broker's server closes their connections in the same way.

Not isolated, ``Broker.isolation`` is None and the store wrapper's flag is false: one attribute check per request
and per store call.
"""

from __future__ import annotations

from typing import Sequence

from kafkapy.cluster.store import Compare, DeleteResult, KeyValue, Lease, MetadataStore, Op, RangeResult, \
    StoreError, TxnResult, Watch, WatchResponse

_PREFIX = "broker-"


def broker_of(client_id: str | None) -> int | None:
    """The broker id a broker-to-broker client id names (``broker-<id>-fetcher-<leader>``,
    ``broker-<id>-txn-markers``), None for any other client."""
    if client_id is None or not client_id.startswith(_PREFIX):
        return None
    head = client_id[len(_PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


class Isolation:
    """One broker's side of a network partition: ``cut_off`` (on the side without the store and the clients) and
    the brokers it cannot reach (the other side)."""

    __slots__ = ("cut_off", "unreachable")

    def __init__(self, cut_off: bool, unreachable: frozenset[int]):
        self.cut_off = cut_off
        self.unreachable = unreachable

    def refuses(self, client_id: str | None) -> bool:
        """Whether a request from ``client_id`` cannot reach this broker."""
        peer = broker_of(client_id)
        return self.cut_off if peer is None else peer in self.unreachable

    def __repr__(self) -> str:
        return f"Isolation(cut_off={self.cut_off}, unreachable={sorted(self.unreachable)})"


class Unreachable(StoreError):
    """The metadata store cannot be reached (a network partition)."""


class PartitionableStore(MetadataStore):
    """One broker's connection to a shared store: every call raises :class:`Unreachable` while ``cut_off``."""

    def __init__(self, inner: MetadataStore):
        self.inner = inner
        self.cut_off = False

    def _check(self) -> None:
        if self.cut_off:
            raise Unreachable("the metadata store is unreachable (network partition)")

    async def get(self, key: str) -> KeyValue | None:
        self._check()
        return await self.inner.get(key)

    async def range(self, prefix: str) -> RangeResult:
        self._check()
        return await self.inner.range(prefix)

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        self._check()
        return await self.inner.put(key, value, lease)

    async def delete(self, key: str, *, prefix: bool = False) -> DeleteResult:
        self._check()
        return await self.inner.delete(key, prefix=prefix)

    async def txn(self, compares: Sequence[Compare], success: Sequence[Op] = (),
                  failure: Sequence[Op] = ()) -> TxnResult:
        self._check()
        return await self.inner.txn(compares, success, failure)

    async def grant(self, ttl: float) -> Lease:
        self._check()
        return await self.inner.grant(ttl)

    async def keep_alive(self, lease_id: int) -> float:
        self._check()
        return await self.inner.keep_alive(lease_id)

    async def revoke(self, lease_id: int) -> int:
        self._check()
        return await self.inner.revoke(lease_id)

    def watch(self, prefix: str, start_revision: int = 0) -> Watch:
        self._check()
        return _PartitionableWatch(self, self.inner.watch(prefix, start_revision))

    async def compact(self, revision: int) -> None:
        self._check()
        await self.inner.compact(revision)

    async def close(self) -> None:
        """The shared store is the cluster's to close."""


class _PartitionableWatch(Watch):
    def __init__(self, store: PartitionableStore, inner: Watch):
        self._store = store
        self._inner = inner

    async def __aenter__(self):
        await self._inner.__aenter__()
        return self

    async def __anext__(self) -> WatchResponse:
        resp = await self._inner.__anext__()
        if self._store.cut_off:          # a change after the cut: the stream is broken, not delivered
            await self._inner.aclose()
            raise Unreachable("the metadata store is unreachable (network partition): watch broken")
        return resp

    async def aclose(self) -> None:
        await self._inner.aclose()
