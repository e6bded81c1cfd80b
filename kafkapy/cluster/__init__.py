"""Several brokers: the cluster metadata store (``store.py``); the controller and replication build on it.

See DESIGN.md, "Several brokers (replication, failover)": Kafka's ZooKeeper-era design, with ZooKeeper's role played
by a :class:`MetadataStore` (etcd v3 semantics), never a consensus protocol of our own."""

from __future__ import annotations

from kafkapy.cluster.store import (CompactedError, Compare, Delete, DeleteResult, Event, Get, KeyValue, Lease,
                                   LeaseNotFound, MemoryStore, MetadataStore, Put, Range, RangeResult, StoreError,
                                   TxnResult, Watch, WatchResponse)

__all__ = [
    "CompactedError", "Compare", "Delete", "DeleteResult", "EtcdStore", "Event", "Get", "KeyValue", "Lease",
    "LeaseNotFound", "MemoryStore", "MetadataStore", "Put", "Range", "RangeResult", "StoreError", "TxnResult", "Watch",
    "WatchResponse",
]


def __getattr__(name: str):
    """``EtcdStore`` on first use: its module imports gRPC (the optional ``cluster`` extra), which a broker with an
    in-process store does not need."""
    if name == "EtcdStore":
        from kafkapy.cluster.etcd_store import EtcdStore
        return EtcdStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
