"""A partition's leader state with followers (kafkapy/partition.py), without sockets: followers copy the leader's
batches with replication appends and report their fetch offsets as a follower's Fetch would."""

from __future__ import annotations

import asyncio

import pytest

from kafkapy.partition import AppendOrigin, NotEnoughReplicasError, NotLeaderError, Partition
from storage import MemoryPartitionLog
from wire.messages.error_codes import ErrorCode
from wire.records import build_batch


class Clock:
    def __init__(self):
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def batch(n: int = 1) -> bytearray:
    return bytearray(build_batch([(None, b"v%d" % i) for i in range(n)]))


def cluster(replicas=(1, 2, 3), min_isr: int = 1):
    clock = Clock()
    parts = {}
    for r in replicas:
        p = Partition("t", 0, MemoryPartitionLog(topic="t", partition=0), 0, r, replicas=list(replicas), clock=clock)
        p.min_insync_replicas = min_isr
        parts[r] = p
    leader = parts[replicas[0]]
    leader.make_leader(1, set(replicas), list(replicas), partition_epoch=1)
    for r in replicas[1:]:
        parts[r].make_follower(replicas[0], 1, set(replicas), list(replicas), partition_epoch=1)
    return clock, leader, parts


def fetch(leader: Partition, follower: Partition) -> None:
    """One follower fetch: report the fetch offset, copy what the leader has, take its high watermark."""
    leader.update_follower_fetch_state(follower.node_id, follower.log.log_end_offset, follower.log.log_start_offset)
    data = leader.log.read(follower.log.log_end_offset, 1 << 20) if follower.log.log_end_offset < \
        leader.log.log_end_offset else b""
    if data:
        follower.append_as_follower(bytearray(data))
    follower.update_follower_high_watermark(leader.high_watermark)


def test_high_watermark_is_the_smallest_log_end_offset_of_the_isr():
    _clock, leader, parts = cluster()
    leader.append(batch(3), AppendOrigin.CLIENT)
    assert leader.log.log_end_offset == 3 and leader.high_watermark == 0
    fetch(leader, parts[2])
    assert leader.high_watermark == 0           # follower 3 has nothing yet
    fetch(leader, parts[3])
    fetch(leader, parts[2])                     # the fetch after a copy reports the new log end offset
    assert leader.high_watermark == 0
    fetch(leader, parts[3])
    assert leader.high_watermark == 3
    assert parts[3].high_watermark == 3         # took the leader's high watermark with that fetch
    assert parts[2].high_watermark == 0
    fetch(leader, parts[2])
    assert parts[2].high_watermark == 3


def test_lagging_follower_leaves_the_isr_and_the_high_watermark_moves_on():
    clock, leader, parts = cluster()
    leader.append(batch(), AppendOrigin.CLIENT)
    fetch(leader, parts[2])
    fetch(leader, parts[2])
    assert leader.high_watermark == 0           # 3 never fetched
    clock.ms += 10_001
    fetch(leader, parts[2])
    leader.maybe_shrink_isr(max_lag_ms=10_000)
    assert leader.isr == {1, 2}
    assert leader.high_watermark == 1


def test_caught_up_follower_rejoins_the_isr():
    clock, leader, parts = cluster()
    leader.append(batch(2), AppendOrigin.CLIENT)
    clock.ms += 20_000
    fetch(leader, parts[2])
    leader.maybe_shrink_isr(max_lag_ms=10_000)
    assert 3 not in leader.isr
    fetch(leader, parts[2])
    assert leader.high_watermark == 2
    fetch(leader, parts[3])                      # copies offsets 0-1 ...
    assert 3 not in leader.isr
    fetch(leader, parts[3])                      # ... and reports them: at the high watermark, back in
    assert leader.isr == {1, 2, 3}


def test_acks_all_waits_for_the_isr_and_min_insync_replicas():
    async def main():
        clock, leader, parts = cluster(min_isr=2)
        info = leader.append(batch(), AppendOrigin.CLIENT, required_acks=-1)
        waiting = asyncio.ensure_future(leader.wait_for_high_watermark(info.last_offset + 1, 5))
        await asyncio.sleep(0)
        assert not waiting.done()
        for _ in range(2):
            fetch(leader, parts[2])
            fetch(leader, parts[3])
        assert await asyncio.wait_for(waiting, 5) == ErrorCode.NONE
        # followers 2 and 3 stop fetching while the leader gets more: the ISR shrinks to the leader alone (a
        # follower at the log end offset stays in, as in Kafka: its broker's death is the controller's business)
        leader.append(batch(), AppendOrigin.CLIENT, required_acks=1)
        clock.ms += 40_000
        leader.maybe_shrink_isr(max_lag_ms=30_000)
        assert leader.isr == {1}
        with pytest.raises(NotEnoughReplicasError):
            leader.append(batch(), AppendOrigin.CLIENT, required_acks=-1)
        assert leader.log.log_end_offset == 2                        # nothing appended
        assert leader.append(batch(), AppendOrigin.CLIENT, required_acks=1).base_offset == 2
        assert await leader.wait_for_high_watermark(3, 0.1) == ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
    asyncio.run(main())


def test_acks_all_times_out_and_a_resigning_leader_fails_waiters():
    async def main():
        _clock, leader, parts = cluster()
        info = leader.append(batch(), AppendOrigin.CLIENT, required_acks=-1)
        assert await leader.wait_for_high_watermark(info.last_offset + 1, 0.05) == ErrorCode.REQUEST_TIMED_OUT
        waiting = asyncio.ensure_future(leader.wait_for_high_watermark(info.last_offset + 1, 5))
        await asyncio.sleep(0)
        leader.make_follower(2, 2, {2, 3}, [1, 2, 3], partition_epoch=2)
        assert await asyncio.wait_for(waiting, 5) == ErrorCode.NOT_LEADER_OR_FOLLOWER
        with pytest.raises(NotLeaderError):
            leader.append(batch(), AppendOrigin.CLIENT)
    asyncio.run(main())


def test_isr_change_goes_through_alter_isr_and_waits_for_it():
    async def main():
        clock, leader, parts = cluster()
        proposals = []
        gate = asyncio.get_running_loop().create_future()

        async def alter_isr(new_isr):
            proposals.append(new_isr)
            return await gate
        leader.alter_isr = alter_isr
        leader.append(batch(), AppendOrigin.CLIENT)
        fetch(leader, parts[2])
        fetch(leader, parts[2])
        clock.ms += 40_000
        leader.maybe_shrink_isr(max_lag_ms=30_000)
        await asyncio.sleep(0)
        assert proposals == [{1, 2}] and leader.isr == {1, 2, 3}
        assert leader.high_watermark == 0        # until the store confirms, 3 still counts
        gate.set_result(True)
        for _ in range(3):
            await asyncio.sleep(0)
        assert leader.isr == {1, 2} and leader.high_watermark == 1
    asyncio.run(main())


def test_new_leader_epoch_starts_at_its_log_end_and_stamps_batches():
    _clock, leader, parts = cluster()
    leader.append(batch(2), AppendOrigin.CLIENT)
    fetch(leader, parts[2])
    new = parts[2]
    new.make_leader(2, {2, 3}, [1, 2, 3], partition_epoch=2)
    assert new.leader_epoch_start_offset == 2 and new.log.latest_epoch == 2
    info = new.append(batch(), AppendOrigin.CLIENT)
    assert info.base_offset == 2
    assert new.log.end_offset_for_epoch(1) == (1, 2)
