"""Network partitions (``kafkapy.Cluster.isolate`` / ``heal``) through a real client: three brokers in this process,
the store and the clients on the larger side. An isolated leader gives up its leadership before its lease expires,
the majority elects another within the session timeout, and nothing the isolated broker appended after the cut is
ever acknowledged; an isolated follower leaves the ISR and rejoins it after the heal. Every wait is bounded.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer
from test_replication import FAST, ContinuousProducer, _raw_produce, check_exactly_once, consume_all, full_isr, \
    wait_until

import kafkapy

SESSION = FAST["broker.session.timeout.ms"] / 1000


def acked(prod: ContinuousProducer) -> int:
    return sum(map(len, prod.acked.values()))


def same_log(c, a: int, b: int, topic: str) -> bool:
    def get(cl):
        la, lb = cl.core(a).partition_log(topic, 0), cl.core(b).partition_log(topic, 0)
        return (la.log_end_offset, bytes(la.read(0, 1 << 22))) == (lb.log_end_offset, bytes(lb.read(0, 1 << 22)))
    return c.call(get)


def test_an_isolated_leader_is_replaced_within_the_session_timeout_and_acknowledges_nothing_after_the_cut():
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("split-leader", 1, 3, {"min.insync.replicas": 2})
        with ContinuousProducer(c.bootstrap_servers, "split-leader", 1) as prod:
            wait_until(lambda: acked(prod) > 200, 30, "first acknowledgements")
            old = c.leader_for("split-leader")
            majority = {1, 2, 3} - {old}
            c.isolate({old}, majority)
            cut = time.monotonic()
            hw_at_cut = c.call(lambda cl: cl.core(old).partition("split-leader", 0).high_watermark)
            wait_until(lambda: c.leader_for("split-leader") in majority, SESSION + 1.0,
                       "a new leader on the majority side within the session timeout + 1 s")
            new = c.leader_for("split-leader")
            assert time.monotonic() - cut < SESSION + 1.5
            # the isolated broker gave up its leadership (before the controller elected another) ...
            assert c.call(lambda cl: cl.core(old).cluster.fenced)
            assert c.call(lambda cl: not cl.core(old).partition("split-leader", 0).is_leader)
            # ... clients cannot reach it ...
            with pytest.raises(OSError):
                _raw_produce("127.0.0.1", c.nodes[old].port, "split-leader", b"to-the-isolated-leader", timeout=5)
            # ... and the producer goes on with the new leader
            before = acked(prod)
            wait_until(lambda: acked(prod) > before + 200, 30, "progress on the majority side")
            # nothing the old leader appended after the cut was committed there: its high watermark stood still
            assert c.call(lambda cl: cl.core(old).partition("split-leader", 0).high_watermark) == hw_at_cut
            assert c.leader_for("split-leader") == new
            c.heal()
            wait_until(lambda: full_isr(c, "split-leader", 1), 30, "the old leader back in the ISR")
            assert c.leader_for("split-leader") == new
            assert c.call(lambda cl: not cl.core(old).cluster.fenced)
            before = acked(prod)
            wait_until(lambda: acked(prod) > before + 100, 30, "progress after the heal")
        assert not prod.errors, prod.errors[:5]
        # the old leader truncated what it alone had and caught up: the same log as the new leader's
        wait_until(lambda: same_log(c, old, new, "split-leader"), 20, "the old leader's log equal to the new one's")
        total = acked(prod)
        check_exactly_once(prod.acked, consume_all(c.bootstrap_servers, "split-leader", 1, total))


def test_an_isolated_follower_leaves_the_isr_and_rejoins_it_after_the_heal():
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("split-follower", 1, 3, {"min.insync.replicas": 2})
        with ContinuousProducer(c.bootstrap_servers, "split-follower", 1) as prod:
            wait_until(lambda: acked(prod) > 200, 30, "first acknowledgements")
            leader = c.leader_for("split-follower")
            follower = max({1, 2, 3} - {leader})
            c.isolate({follower})                           # the other side: every other broker
            rest = sorted({1, 2, 3} - {follower})
            wait_until(lambda: c.isr_for("split-follower") == rest, SESSION + 1.0,
                       "the controller to remove the isolated follower from the ISR")
            assert c.leader_for("split-follower") == leader
            before = acked(prod)
            wait_until(lambda: acked(prod) > before + 200, 30, "progress without the follower")
            assert c.isr_for("split-follower") == rest
            c.heal()
            wait_until(lambda: full_isr(c, "split-follower", 1), 30, "the follower back in the ISR")
            assert c.leader_for("split-follower") == leader
            before = acked(prod)
            wait_until(lambda: acked(prod) > before + 100, 30, "progress after the heal")
        assert not prod.errors, prod.errors[:5]
        wait_until(lambda: same_log(c, follower, leader, "split-follower"), 20, "the follower caught up")
        total = acked(prod)
        check_exactly_once(prod.acked, consume_all(c.bootstrap_servers, "split-follower", 1, total))


def test_isolate_checks_its_sides_and_an_isolated_broker_backs_off_then_registers_anew():
    with kafkapy.Cluster(3, config=FAST) as c:
        for a, b in (({1}, {1, 2, 3}), ({1}, {2}), (set(), {1, 2, 3})):
            with pytest.raises(ValueError):
                c.isolate(a, b)
        epoch = c.call(lambda cl: cl.core(3).cluster.broker_epoch)
        watches = []

        def count_watches(cl):
            store = cl.nodes[3].store
            inner = store.watch
            store.watch = lambda *a, **k: watches.append(time.monotonic()) or inner(*a, **k)
        c.call(count_watches)
        c.isolate({1, 2}, {3})                 # the store is with 1 and 2: 3 is cut off
        assert c.call(lambda cl: [cl.nodes[n].isolation.cut_off for n in (1, 2, 3)]) == [False, False, True]
        assert c.call(lambda cl: cl.nodes[1].isolation.unreachable) == {3}
        wait_until(lambda: 3 not in c.call(lambda cl: cl.core(1).cluster.image.brokers), SESSION + 1.0,
                   "broker 3's registration to expire")
        assert c.call(lambda cl: cl.core(3).cluster.fenced)
        time.sleep(2.0)
        # its watch broke at the first change after the cut and is retried with a backoff, not in a loop
        assert 1 <= len(watches) <= 12, len(watches)
        c.heal()
        assert c.call(lambda cl: [cl.nodes[n].isolation for n in (1, 2, 3)]) == [None, None, None]
        wait_until(lambda: c.call(lambda cl: not cl.core(3).cluster.fenced and 3 in cl.core(1).cluster.image.brokers),
                   5, "broker 3 registered again")
        assert c.call(lambda cl: cl.core(3).cluster.broker_epoch) > epoch
        # its view caught up with the store: the same revision as the others' once nothing changes
        wait_until(lambda: c.call(lambda cl: cl.core(3).cluster.image.revision == cl.core(1).cluster.image.revision),
                   5, "broker 3's metadata caught up")


def test_a_broker_fenced_while_its_lease_survived_registers_anew():
    """Back in touch with the store just before its lease expired, after it had fenced itself: it must not stay
    fenced on a live lease (leading nothing while the store says it leads); it ends that lease and registers anew."""
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("fenced-alive", 1, 3, {"min.insync.replicas": 2})
        leader = c.leader_for("fenced-alive")
        epoch = c.call(lambda cl: cl.core(leader).cluster.broker_epoch)
        c.call(lambda cl: cl.core(leader).cluster._fence("test"))
        wait_until(lambda: c.call(lambda cl: not cl.core(leader).cluster.fenced), 5, "the broker to register anew")
        assert c.call(lambda cl: cl.core(leader).cluster.broker_epoch) > epoch
        wait_until(lambda: c.leader_for("fenced-alive") > 0 and full_isr(c, "fenced-alive", 1), 10,
                   "a leader and a full ISR again")
        p = Producer({"bootstrap.servers": c.bootstrap_servers, "acks": "all", "enable.idempotence": True})
        p.produce("fenced-alive", b"after")
        assert p.flush(20) == 0
