"""The controller (Kafka's ZooKeeper-era ``KafkaController`` with ``PartitionStateMachine`` and ``Election``).

One broker at a time is the controller: the one whose ``controller`` key (under its lease) exists. On election it
increments ``controller_epoch`` and every write it makes afterwards compares that epoch (a controller that lost its
lease while paused can no longer change anything), and compares the partition state's revision it read.

It reconciles, idempotently, every time brokers come or go, a controlled shutdown is asked for, or partition states
change:

- a partition whose leader is gone (its registration expired) or shutting down: Kafka's offline-partition election
  (``Election.leaderForOffline``): the first replica in assignment order that is alive, not shutting down and in the
  ISR; with ``unclean.leader.election.enable`` (topic or broker), otherwise the first alive replica, with an ISR of
  itself. The leader epoch goes up by one; the ISR loses the replicas that are gone. No candidate: leader -1 (the
  partition is offline), and the ISR keeps its last member, so that it can be elected when it returns;
- an offline partition (leader -1) one of whose ISR replicas is back: elected (epoch + 1);
- a live leader with ISR replicas that are gone: they leave the ISR (Kafka removes a dead broker's replicas from the
  ISR at once rather than waiting for the leader's replica.lag.time.max.ms).
"""

from __future__ import annotations

import logging

from kafkapy.cluster.metadata import CONTROLLER_EPOCH, NO_LEADER, PartitionState, encode, state_key
from kafkapy.cluster.store import Compare, Put

log = logging.getLogger("kafkapy.controller")


def elect(state: PartitionState, replicas: list[int], live: set[int], shutting_down: set[int],
          unclean: bool) -> PartitionState | None:
    """The new state of one partition, or None when nothing is to change (pure: tested without a store)."""
    eligible = live - shutting_down
    leaving = {r for r in state.isr if r not in eligible}      # gone, or shutting down (controlled shutdown)
    leader = state.leader
    if leader != NO_LEADER and leader in eligible:
        if not leaving:
            return None
        return PartitionState(leader, state.leader_epoch, [r for r in state.isr if r not in leaving],
                              state.controller_epoch)
    isr = [r for r in state.isr if r not in leaving]
    candidates = [r for r in replicas if r in isr]
    if candidates:
        return PartitionState(candidates[0], state.leader_epoch + 1, isr, state.controller_epoch)
    if leader != NO_LEADER and leader in live:
        return None            # shutting down with no other in-sync replica: it leads until it stops (Kafka)
    if unclean:
        alive = [r for r in replicas if r in eligible]
        if alive:
            return PartitionState(alive[0], state.leader_epoch + 1, [alive[0]], state.controller_epoch)
    if leader == NO_LEADER:
        return None
    # offline: no leader; the ISR keeps its last member, so that it can be elected when it returns (Kafka's
    # removeReplicasFromIsr never empties an ISR)
    last = [leader] if leader in state.isr else state.isr[:1]
    return PartitionState(NO_LEADER, state.leader_epoch + 1, last, state.controller_epoch)


class Controller:
    """Active on the broker that won the election; ``epoch`` is its controller epoch."""

    def __init__(self, member, epoch: int):
        self.member = member
        self.epoch = epoch
        self.active = True
        self.unclean_elections = 0       # Kafka's UncleanLeaderElectionsPerSec, as a count

    async def reconcile(self) -> None:
        """Bring every partition state in line with who is alive (see the module docstring)."""
        m = self.member
        image = m.image
        live = set(image.brokers)
        for (topic, p), state in sorted(image.states.items()):
            if not self.active:
                return
            t = image.topics.get(topic)
            if t is None or p >= len(t.assignment):
                continue
            new = elect(state, t.assignment[p], live, image.shutting_down, m.unclean_election_enabled(topic))
            if new is None:
                continue
            new.controller_epoch = self.epoch
            res = await m.store.txn(
                [Compare(CONTROLLER_EPOCH, "value", "=", encode(self.epoch)),
                 Compare(state_key(topic, p), "mod", "=", state.partition_epoch)],
                [Put(state_key(topic, p), new.to_json())])
            if res.succeeded:
                if new.leader not in (NO_LEADER, state.leader) and new.leader not in state.isr:
                    self.unclean_elections += 1
                    log.warning("controller %d: unclean leader election of %s-%d: replica %d (not in the ISR %s) "
                                "leads; records only the old ISR had are lost", m.node_id, topic, p, new.leader,
                                state.isr)
                log.info("controller %d: %s-%d leader %d -> %d, epoch %d, isr %s", m.node_id, topic, p, state.leader,
                         new.leader, new.leader_epoch, new.isr)
            elif (await m.store.get(CONTROLLER_EPOCH)) is not None and \
                    int((await m.store.get(CONTROLLER_EPOCH)).value) != self.epoch:
                log.info("controller %d: fenced by a newer controller epoch; resigning", m.node_id)
                self.active = False
                return
