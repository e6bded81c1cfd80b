"""One partition on this broker, as Kafka's ``cluster/Partition``: its log and its leader state.

Every write to a partition log goes through :meth:`Partition.append` (Kafka's ``appendRecordsToLeader``), whatever
its origin: a producer (``AppendOrigin.CLIENT``, from the Produce handler), a coordinator (group metadata and
offsets, transaction state, transaction markers: ``AppendOrigin.COORDINATOR``), or, with replication, a follower
appending its leader's batches (``AppendOrigin.REPLICATION``). The log's one ``append`` validates, checks producer
state, assigns offsets and the leader epoch, writes and updates producer state (storage/log.py); this class then
moves the high watermark by its rule.

The high watermark rule (Kafka's ``maybeIncrementLeaderHW``): the smallest log end offset among the in-sync
replicas. A single broker is the whole ISR, so today the high watermark follows the log end offset after each
append; replication gives the leader follower log end offsets to take the minimum of.

The leader epoch is per partition (kept in the topic metadata); batches appended as leader carry it.
"""

from __future__ import annotations

from typing import Callable

from storage.log import AppendInfo, MemoryPartitionLog, PartitionLog
from storage.producer_state import AppendOrigin

__all__ = ["AppendOrigin", "Partition"]


class Partition:
    def __init__(self, topic: str, index: int, log: PartitionLog | MemoryPartitionLog, leader_epoch: int,
                 node_id: int, on_appended: Callable[[], None] | None = None):
        self.topic = topic
        self.index = index
        self.log = log
        self.leader_epoch = leader_epoch
        self.node_id = node_id
        self.replicas = [node_id]
        self.isr = {node_id}
        self._on_appended = on_appended
        self.maybe_increment_high_watermark()

    def append(self, records, origin: AppendOrigin, *, txn_verifier: Callable | None = None) -> AppendInfo:
        """Append as the leader: the one write path of this partition. Raises the log's StorageError."""
        info = self.log.append(records, leader_epoch=self.leader_epoch, origin=origin, txn_verifier=txn_verifier)
        if not info.duplicate and info.base_offset >= 0:
            self.maybe_increment_high_watermark()
            if self._on_appended is not None:
                self._on_appended()
        return info

    def follower_log_end_offsets(self) -> dict[int, int]:
        """Log end offset of each in-sync replica; the leader's own is its log's."""
        return {self.node_id: self.log.log_end_offset}

    def maybe_increment_high_watermark(self) -> bool:
        """Move the high watermark to the smallest log end offset of the ISR (never backwards)."""
        leos = self.follower_log_end_offsets()
        new_hw = min(leos[r] for r in self.isr if r in leos)
        if new_hw > self.log.high_watermark or self.log.high_watermark > self.log.log_end_offset:
            self.log.update_high_watermark(new_hw)
            return True
        return False

    @property
    def high_watermark(self) -> int:
        return self.log.high_watermark

    def last_stable_offset(self) -> int:
        return self.log.last_stable_offset()

    def __repr__(self) -> str:
        return f"<Partition {self.topic}-{self.index} epoch={self.leader_epoch} hw={self.high_watermark}>"
