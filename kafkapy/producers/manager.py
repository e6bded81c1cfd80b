"""Wiring of producer state and the transaction coordinator into the broker (installed by an on_start hook).

The broker core only knows four hooks (``producer_check``, ``producer_appended``, ``last_stable_offset``,
``aborted_transactions``); everything about producers lives in this package.
"""

from __future__ import annotations

import logging
import time

from kafkapy.broker import on_start
from wire.messages import fetch_response

from .coordinator import GROUP_METADATA_TOPIC, TransactionCoordinator
from .ids import ProducerIdManager
from .state import PartitionProducerState

log = logging.getLogger("kafkapy.producers")


class ProducerStateRegistry:
    """One PartitionProducerState per partition log, built lazily (a re-scan of the log) on first use."""

    def __init__(self):
        self.by_partition: dict[tuple[str, int], PartitionProducerState] = {}

    def state(self, plog) -> PartitionProducerState:
        key = (plog.topic, plog.partition)
        s = self.by_partition.get(key)
        if s is None or s.log is not plog:     # first use, or the topic was deleted and created again
            s = PartitionProducerState(plog)
            s.rebuild()
            self.by_partition[key] = s
        return s

    def existing(self, topic: str, partition: int) -> PartitionProducerState | None:
        return self.by_partition.get((topic, partition))

    def forget_topic(self, topic: str) -> None:
        for key in [k for k in self.by_partition if k[0] == topic]:
            del self.by_partition[key]

    def remove_expired(self, expiration_ms: int) -> int:
        now = int(time.time() * 1000)
        return sum(s.remove_expired(now, expiration_ms) for s in list(self.by_partition.values()))


class Producers:
    """broker.coordinators["transaction"]: the coordinator plus the producer-state registry."""

    def __init__(self, broker):
        self.broker = broker
        self.states = ProducerStateRegistry()
        self.ids = ProducerIdManager(None if broker.memory else broker.config.data_dir)
        self.coordinator = TransactionCoordinator(broker, self.states, self.ids)

    def close(self) -> None:
        self.coordinator.close()

    def ensure_state_topic(self) -> None:
        """FindCoordinator(TRANSACTION) creates __transaction_state, as Kafka does."""
        self.coordinator.ensure_topic()

    def complete_group_offsets(self, producer_id: int, _epoch: int, commit: bool, partitions: set) -> None:
        """Kafka's GroupMetadataManager.handleTxnCompletion: apply or drop the transactional offset commits of
        ``producer_id`` in the groups of the __consumer_offsets partitions the transaction touched."""
        groups = self.broker.coordinators.get("group")
        offsets_parts = {p for t, p in partitions if t == GROUP_METADATA_TOPIC}
        if groups is None or not offsets_parts:
            return
        for gid, g in list(groups.groups.items()):
            if producer_id in g.pending_txn_offsets and \
                    self.coordinator.group_partition(gid)[1] in offsets_parts:
                groups.complete_txn(gid, producer_id, commit)

    # the broker hooks
    def producer_check(self, topic, partition, records, transactional_id):
        plog = self.broker.logs.get(topic, partition)
        if plog is None:
            return None
        return self.states.state(plog).check(records, self.coordinator.partition_in_transaction)

    def producer_appended(self, topic, partition, plog, info) -> None:
        s = self.states.existing(topic, partition)
        if s is not None and s.log is plog:
            s.appended(info)

    def last_stable_offset(self, plog) -> int:
        return self.states.state(plog).last_stable_offset()

    def aborted_transactions(self, plog, fetch_offset: int, upper: int):
        return [fetch_response.AbortedTransaction(producer_id=pid, first_offset=first)
                for pid, first in self.states.state(plog).aborted_transactions(fetch_offset, upper)]


@on_start
def install(broker) -> None:
    p = Producers(broker)
    broker.coordinators["transaction"] = p
    broker.producer_check = p.producer_check
    broker.producer_appended = p.producer_appended
    broker.last_stable_offset = p.last_stable_offset
    broker.aborted_transactions = p.aborted_transactions
    broker.on_topic_deleted.append(p.states.forget_topic)
    p.coordinator.on_transaction_completed.append(p.complete_group_offsets)
    p.coordinator.load()
    p.coordinator.start()
