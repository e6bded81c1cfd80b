"""One partition on this broker, as Kafka's ``cluster/Partition``: its log and its leader (or follower) state.

Every write to a partition log goes through :meth:`Partition.append` (Kafka's ``appendRecordsToLeader``) or, on a
follower, :meth:`Partition.append_as_follower`: a producer (``AppendOrigin.CLIENT``, from the Produce handler), a
coordinator (group metadata and offsets, transaction state, transaction markers: ``AppendOrigin.COORDINATOR``), or
a follower appending its leader's batches (``AppendOrigin.REPLICATION``). The log's one ``append`` validates, checks
producer state, assigns offsets and the leader epoch, writes and updates producer state (storage/log.py); this class
then moves the high watermark by its rule.

Rules (Kafka's ``Partition.scala``; the names are Kafka's):

- ``update_follower_fetch_state``: a follower's Fetch at ``fetch_offset`` tells the leader the follower's log end
  offset. Its last caught-up time moves to the fetch time when it fetched at the leader's log end offset, or to its
  previous fetch time when it fetched at or past the leader's log end offset as of that previous fetch.
- ``maybe_expand_isr``: a follower outside the ISR joins when its log end offset has reached the high watermark and
  the start offset of the leader's current epoch.
- ``maybe_shrink_isr``: a follower in the ISR whose last caught-up time is older than ``replica.lag.time.max.ms``
  (and that is not at the log end offset) leaves it. ISR changes are proposed to ``alter_isr`` (the metadata store's
  compare-and-set on the partition state, kafkapy/cluster); until it confirms, the ISR used for the high watermark
  is the larger one (Kafka's "maximal ISR"), so an acknowledgement never counts a replica being added early.
- ``maybe_increment_high_watermark``: the high watermark is the smallest log end offset of the ISR; it never goes
  back. A single broker is the whole ISR, so there the high watermark follows the log end offset after each append.
- acks=all (``check_enough_replicas_reach_offset``): done when the high watermark has passed the batch; answered
  NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR is then smaller than ``min.insync.replicas``; an append is refused
  up front with NOT_ENOUGH_REPLICAS when the ISR is already smaller.
- A follower's high watermark is min(the leader's high watermark, its own log end offset).

The leader epoch is per partition; batches appended as leader carry it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from storage.errors import StorageError
from storage.log import AppendInfo, MemoryPartitionLog, PartitionLog
from storage.producer_state import AppendOrigin
from wire.messages.error_codes import ErrorCode

__all__ = ["AppendOrigin", "Partition", "ReplicaState"]


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


@dataclass
class ReplicaState:
    """What the leader knows of one follower (Kafka's ``Replica``)."""

    replica_id: int
    log_end_offset: int = -1
    log_start_offset: int = -1
    last_caught_up_ms: int = 0
    last_fetch_ms: int = 0
    last_fetch_leader_log_end_offset: int = -1

    def update_fetch_state(self, fetch_offset: int, log_start_offset: int, fetch_ms: int,
                           leader_end_offset: int) -> None:
        if fetch_offset >= leader_end_offset:
            self.last_caught_up_ms = max(self.last_caught_up_ms, fetch_ms)
        elif fetch_offset >= self.last_fetch_leader_log_end_offset:
            self.last_caught_up_ms = max(self.last_caught_up_ms, self.last_fetch_ms)
        self.log_end_offset = fetch_offset
        self.log_start_offset = log_start_offset
        self.last_fetch_leader_log_end_offset = leader_end_offset
        self.last_fetch_ms = fetch_ms

    def is_caught_up(self, leader_end_offset: int, now_ms: int, max_lag_ms: int) -> bool:
        return leader_end_offset == self.log_end_offset or now_ms - self.last_caught_up_ms <= max_lag_ms


class Partition:
    def __init__(self, topic: str, index: int, log: PartitionLog | MemoryPartitionLog, leader_epoch: int,
                 node_id: int, on_appended: Callable[[], None] | None = None, *, replicas: list[int] | None = None,
                 leader: bool = True, clock: Callable[[], int] = _now_ms):
        self.topic = topic
        self.index = index
        self.log = log
        self.leader_epoch = leader_epoch
        self.node_id = node_id
        self.replicas = list(replicas) if replicas else [node_id]
        self.isr: set[int] = {node_id}
        self.pending_isr: set[int] | None = None     # an ISR change proposed to alter_isr, not confirmed yet
        self.leader_id: int | None = node_id if leader else None   # a cluster node learns it from the metadata
        self.partition_epoch = 0                      # the store revision of the partition state (for CAS)
        self.min_insync_replicas = 1
        self.remote: dict[int, ReplicaState] = {}
        self.leader_epoch_start_offset = log.log_end_offset
        self.clock = clock
        # alter_isr(new isr) -> awaitable of True when the store took it; None: the ISR is local (one broker)
        self.alter_isr: Callable[[set[int]], Awaitable[bool]] | None = None
        self._on_appended = on_appended
        self._hw_waiters: list[tuple[int, asyncio.Future]] = []
        self.maybe_increment_high_watermark()

    # ------------------------------------------------------------------ roles

    @property
    def is_leader(self) -> bool:
        return self.leader_id == self.node_id

    def make_leader(self, leader_epoch: int, isr: set[int], replicas: list[int], partition_epoch: int) -> None:
        """Kafka's makeLeader: this broker leads from ``leader_epoch``; followers' states start unknown."""
        now = self.clock()
        new_epoch = leader_epoch != self.leader_epoch or not self.is_leader
        self.leader_id = self.node_id
        self.leader_epoch = leader_epoch
        self.replicas = list(replicas)
        self.isr = set(isr)
        self.pending_isr = None
        self.partition_epoch = partition_epoch
        if new_epoch:
            self.leader_epoch_start_offset = self.log.log_end_offset
            self.remote = {r: ReplicaState(r, last_caught_up_ms=now if r in isr else 0)
                           for r in replicas if r != self.node_id}
            if leader_epoch > self.log.latest_epoch:
                self.log.epochs.assign(leader_epoch, self.log.log_end_offset)
        else:
            for r in replicas:
                if r != self.node_id and r not in self.remote:
                    self.remote[r] = ReplicaState(r)
            for r in list(self.remote):
                if r not in replicas:
                    del self.remote[r]
        self.maybe_increment_high_watermark()

    def make_follower(self, leader_id: int | None, leader_epoch: int, isr: set[int], replicas: list[int],
                      partition_epoch: int) -> bool:
        """Kafka's makeFollower; True when the leader or epoch changed (the fetcher must restart for it)."""
        changed = leader_id != self.leader_id or leader_epoch != self.leader_epoch
        self.leader_id = leader_id
        self.leader_epoch = leader_epoch
        self.replicas = list(replicas)
        self.isr = set(isr)
        self.pending_isr = None
        self.partition_epoch = partition_epoch
        self.remote.clear()
        self._fail_waiters(ErrorCode.NOT_LEADER_OR_FOLLOWER)
        return changed

    # ------------------------------------------------------------------ appends

    def append(self, records, origin: AppendOrigin, *, txn_verifier: Callable | None = None,
               required_acks: int = 1) -> AppendInfo:
        """Append as the leader: the one write path of this partition. Raises the log's StorageError, or
        NotLeaderError / NotEnoughReplicasError (acks=all with the ISR below min.insync.replicas)."""
        if not self.is_leader:
            raise NotLeaderError(f"broker {self.node_id} is not the leader of {self.topic}-{self.index}")
        if required_acks == -1 and len(self.isr) < self.min_insync_replicas:
            raise NotEnoughReplicasError(
                f"The size of the current ISR {sorted(self.isr)} is insufficient to satisfy the min.isr requirement "
                f"of {self.min_insync_replicas} for partition {self.topic}-{self.index}")
        info = self.log.append(records, leader_epoch=self.leader_epoch, origin=origin, txn_verifier=txn_verifier)
        if not info.duplicate and info.base_offset >= 0:
            self.maybe_increment_high_watermark()
            if self._on_appended is not None:
                self._on_appended()
        return info

    def append_as_follower(self, records) -> AppendInfo:
        """A follower appends its leader's batches as they are (offsets and epochs kept)."""
        info = self.log.append(records, leader_epoch=-1, origin=AppendOrigin.REPLICATION)
        return info

    def update_follower_high_watermark(self, leader_high_watermark: int) -> None:
        hw = min(leader_high_watermark, self.log.log_end_offset)
        if hw > self.log.high_watermark:
            self.log.update_high_watermark(hw)
            if self._on_appended is not None:
                self._on_appended()

    # ------------------------------------------------------------------ the leader's view of its followers

    def update_follower_fetch_state(self, replica_id: int, fetch_offset: int, log_start_offset: int) -> None:
        """A follower fetched at ``fetch_offset`` (Kafka's updateFollowerFetchState): maybe expand the ISR and move
        the high watermark."""
        r = self.remote.get(replica_id)
        if r is None:
            return
        r.update_fetch_state(fetch_offset, log_start_offset, self.clock(), self.log.log_end_offset)
        self.maybe_expand_isr(replica_id)
        self.maybe_increment_high_watermark()

    def _effective_isr(self) -> set[int]:
        """The ISR the high watermark waits for: the maximal one while a change is in flight."""
        return self.isr | self.pending_isr if self.pending_isr is not None else self.isr

    def is_follower_in_sync(self, r: ReplicaState) -> bool:
        return r.log_end_offset >= self.log.high_watermark and r.log_end_offset >= self.leader_epoch_start_offset

    def maybe_expand_isr(self, replica_id: int) -> None:
        if self.pending_isr is not None or replica_id in self.isr or replica_id not in self.replicas:
            return
        r = self.remote[replica_id]
        if self.is_follower_in_sync(r):
            self._propose_isr(self.isr | {replica_id})

    def out_of_sync_replicas(self, max_lag_ms: int) -> set[int]:
        now = self.clock()
        leo = self.log.log_end_offset
        return {rid for rid in self.isr if rid != self.node_id and rid in self.remote
                and not self.remote[rid].is_caught_up(leo, now, max_lag_ms)}

    def maybe_shrink_isr(self, max_lag_ms: int) -> None:
        if not self.is_leader or self.pending_isr is not None:
            return
        out = self.out_of_sync_replicas(max_lag_ms)
        if out:
            self._propose_isr(self.isr - out)

    def _propose_isr(self, new_isr: set[int]) -> None:
        if self.alter_isr is None:
            self.isr = set(new_isr)
            self.maybe_increment_high_watermark()
            return
        self.pending_isr = set(new_isr)
        task = asyncio.ensure_future(self.alter_isr(set(new_isr)))

        def done(t: asyncio.Future) -> None:
            if self.pending_isr != new_isr:
                return               # superseded (new leader epoch, or metadata applied meanwhile)
            self.pending_isr = None
            if not t.cancelled() and t.exception() is None and t.result():
                self.isr = set(new_isr)
            self.maybe_increment_high_watermark()
        task.add_done_callback(done)

    def apply_isr(self, isr: set[int], partition_epoch: int) -> None:
        """The partition state as the store now holds it (the leader's own change, or the controller's)."""
        self.isr = set(isr)
        self.partition_epoch = partition_epoch
        self.pending_isr = None
        self.maybe_increment_high_watermark()

    def maybe_increment_high_watermark(self) -> bool:
        """Move the high watermark to the smallest log end offset of the ISR (never backwards)."""
        if not self.is_leader:
            return False
        new_hw = self.log.log_end_offset
        for rid in self._effective_isr():
            if rid == self.node_id:
                continue
            r = self.remote.get(rid)
            new_hw = min(new_hw, r.log_end_offset if r is not None else -1)
        old = self.log.high_watermark
        if new_hw > old or old > self.log.log_end_offset:
            self.log.update_high_watermark(new_hw)
            self._wake_waiters()
            if self._on_appended is not None and new_hw > old:
                self._on_appended()
            return True
        return False

    # ------------------------------------------------------------------ acks=all

    def check_enough_replicas_reach_offset(self, required_offset: int) -> tuple[bool, ErrorCode]:
        """(done, error): done when the high watermark is at or past ``required_offset`` (one past the batch)."""
        if not self.is_leader:
            return True, ErrorCode.NOT_LEADER_OR_FOLLOWER
        if self.log.high_watermark >= required_offset:
            if len(self.isr) >= self.min_insync_replicas:
                return True, ErrorCode.NONE
            return True, ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
        return False, ErrorCode.NONE

    async def wait_for_high_watermark(self, required_offset: int, timeout: float) -> ErrorCode:
        """acks=all: wait (woken by high-watermark moves, no polling) until the batch is replicated to the ISR;
        REQUEST_TIMED_OUT after ``timeout`` seconds."""
        done, err = self.check_enough_replicas_reach_offset(required_offset)
        if done:
            return err
        fut = asyncio.get_running_loop().create_future()
        self._hw_waiters.append((required_offset, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return ErrorCode.REQUEST_TIMED_OUT
        finally:
            self._hw_waiters = [(o, f) for o, f in self._hw_waiters if f is not fut]

    def _wake_waiters(self) -> None:
        if not self._hw_waiters:
            return
        keep = []
        for offset, fut in self._hw_waiters:
            done, err = self.check_enough_replicas_reach_offset(offset)
            if done and not fut.done():
                fut.set_result(err)
            elif not done:
                keep.append((offset, fut))
        self._hw_waiters = keep

    def _fail_waiters(self, code: ErrorCode) -> None:
        for _offset, fut in self._hw_waiters:
            if not fut.done():
                fut.set_result(code)
        self._hw_waiters = []

    # ------------------------------------------------------------------ reads

    @property
    def high_watermark(self) -> int:
        return self.log.high_watermark

    def last_stable_offset(self) -> int:
        return self.log.last_stable_offset()

    def __repr__(self) -> str:
        return (f"<Partition {self.topic}-{self.index} leader={self.leader_id} epoch={self.leader_epoch} "
                f"isr={sorted(self.isr)} hw={self.high_watermark}>")


class NotLeaderError(StorageError):
    """An append to a partition this broker does not lead."""

    error_code = ErrorCode.NOT_LEADER_OR_FOLLOWER


class NotEnoughReplicasError(StorageError):
    """acks=all while the ISR is smaller than min.insync.replicas: nothing was appended."""

    error_code = ErrorCode.NOT_ENOUGH_REPLICAS
