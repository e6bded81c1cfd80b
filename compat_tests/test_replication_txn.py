"""Transactions in a cluster: the transaction coordinator moves with the leadership of its __transaction_state
partition, and its markers reach partitions led by other brokers (WriteTxnMarkers).

With confluent-kafka against ``kafkapy.Cluster(3)``: commits visible and aborts hidden for read_committed across
partitions led by different brokers; a transaction in flight when its coordinator is killed ends all-or-nothing and
the producer goes on; consume-transform-produce keeps exactly-once across a coordinator kill. Raw WriteTxnMarkers
requests check the API itself.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

import kafkapy
from compat_tests.inprocess import InProcessBroker, connect, request
from compat_tests.test_replication import FAST, consume_all, wait_until
from kafkapy.control import Delay
from kafkapy.groups.group import OffsetAndMetadata
from kafkapy.internal_topics import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC, partition_for
from kafkapy.partition import AppendOrigin
from wire.messages import describe_transactions_request as DTQ
from wire.messages import init_producer_id_request as IQ
from wire.messages import list_transactions_request as LTQ
from wire.messages import write_txn_markers_request as WQ
from wire.messages.error_codes import ErrorCode
from wire.records import build_batch

WRITE_TXN_MARKERS = 27
INIT_PRODUCER_ID = 22
DESCRIBE_TRANSACTIONS = 65
LIST_TRANSACTIONS = 66


def _markers(pid: int, epoch: int, commit: bool, coordinator_epoch: int, topics: dict[str, list[int]]):
    return WQ.WriteTxnMarkersRequest(markers=[WQ.WritableTxnMarker(
        producer_id=pid, producer_epoch=epoch, transaction_result=commit, coordinator_epoch=coordinator_epoch,
        topics=[WQ.WritableTxnMarkerTopic(name=t, partition_indexes=ps) for t, ps in topics.items()])])


def _codes(resp) -> dict:
    return {(t.name, p.partition_index): ErrorCode(p.error_code) for m in resp.markers for t in m.topics
            for p in t.partitions}


# ---------------------------------------------------------------- WriteTxnMarkers, raw


@pytest.mark.parametrize("version", [0, 1])
def test_write_txn_markers_raw(version):
    with InProcessBroker() as b:
        def setup():
            br = b.broker
            br.create_topic("wm", 2)
            batch = build_batch([(None, b"open")], producer_id=4242, producer_epoch=0, base_sequence=0,
                                transactional=True)
            br.partition("wm", 0).append(bytearray(batch), AppendOrigin.CLIENT)
            # a transactional offset commit of producer 4243, pending until its marker
            br.groups.txn_offset_commit("g", 4243, 0, {("wm", 0): OffsetAndMetadata(7, -1, "", 0)})
            return br.partition_log("wm", 0).last_stable_offset()
        assert b.run(setup) == 0                               # the open transaction holds the LSO back
        s = connect(b.bootstrap)
        resp = request(s, WRITE_TXN_MARKERS, version, _markers(4242, 0, True, 3, {"wm": [0, 1], "nope": [0]}))
        assert _codes(resp) == {("wm", 0): ErrorCode.NONE, ("wm", 1): ErrorCode.NONE,
                                ("nope", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
        assert [m.producer_id for m in resp.markers] == [4242]
        lg = b.run(lambda: b.broker.partition_log("wm", 0))
        assert b.run(lambda: (lg.last_stable_offset(), lg.log_end_offset)) == (2, 2)   # record + marker
        # a marker from an older coordinator epoch: a zombie coordinator, fenced by the log's producer state
        resp = request(s, WRITE_TXN_MARKERS, version, _markers(4242, 0, False, 2, {"wm": [0]}), correlation_id=2)
        assert _codes(resp) == {("wm", 0): ErrorCode.TRANSACTION_COORDINATOR_FENCED}
        # the commit marker in the group's __consumer_offsets partition applies the pending offsets there
        assert b.run(lambda: b.broker.groups.fetch_offsets("g", [("wm", 0)])[0][2]) is None
        gp = partition_for("g", b.run(lambda: b.broker.topics[OFFSETS_TOPIC].partitions))
        resp = request(s, WRITE_TXN_MARKERS, version, _markers(4243, 0, True, 0, {OFFSETS_TOPIC: [gp]}),
                       correlation_id=3)
        assert _codes(resp) == {(OFFSETS_TOPIC, gp): ErrorCode.NONE}
        assert b.run(lambda: b.broker.groups.fetch_offsets("g", [("wm", 0)])[0][2].offset) == 7
        s.close()


# ---------------------------------------------------------------- confluent-kafka against three brokers


def _txn_producer(bootstrap: str, tid: str, **extra) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5,
                  "transaction.timeout.ms": 60000, "message.timeout.ms": 60000, "retry.backoff.ms": 50, **extra})
    p.init_transactions(30)
    return p


def _values(stored: dict) -> list[bytes]:
    return [v for recs in stored.values() for _o, v in recs]


def test_commit_and_abort_across_partitions_led_by_different_brokers():
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("txc", 3, 3, {"min.insync.replicas": 2})
        assert len({c.leader_for("txc", p) for p in range(3)}) > 1
        p = _txn_producer(c.bootstrap_servers, "cross")
        tx_coordinator = c.leader_for(TRANSACTION_STATE_TOPIC, partition_for("cross", 50))
        assert any(c.leader_for("txc", q) != tx_coordinator for q in range(3))   # some markers go to other brokers
        for n, commit in ((0, True), (1, False), (2, True)):
            p.begin_transaction()
            for q in range(3):
                for i in range(4):
                    p.produce("txc", b"t%d-p%d-%d" % (n, q, i), partition=q)
            if commit:
                p.commit_transaction(30)
            else:
                p.abort_transaction(30)
        stored = consume_all(c.bootstrap_servers, "txc", 3, 24)
        assert sorted(_values(stored)) == sorted(b"t%d-p%d-%d" % (n, q, i) for n in (0, 2) for q in range(3)
                                                 for i in range(4))
        # every partition's LSO reaches its log end: each got its markers, on whichever broker leads it
        for q in range(3):
            leader = c.leader_for("txc", q)
            lg = c.call(lambda cl, q=q, leader=leader: cl.core(leader).partition_log("txc", q))
            wait_until(lambda lg=lg: c.call(lambda cl: lg.last_stable_offset() == lg.log_end_offset), 10,
                       f"txc-{q}: LSO at the log end")
        # a broker answers WriteTxnMarkers only for partitions it leads
        follower = next(n for n in (1, 2, 3) if n != c.leader_for("txc", 0))
        s = connect(f"127.0.0.1:{c.nodes[follower].port}")
        resp = request(s, WRITE_TXN_MARKERS, 1, _markers(99, 0, True, 0, {"txc": [0]}))
        s.close()
        assert _codes(resp) == {("txc", 0): ErrorCode.NOT_LEADER_OR_FOLLOWER}
        # the coordinator answers only for the ids it coordinates: the others say NOT_COORDINATOR
        other = next(n for n in (1, 2, 3) if n != tx_coordinator)
        assert c.call(lambda cl: "cross" not in cl.core(other).transactions.txns)
        s = connect(f"127.0.0.1:{c.nodes[other].port}")
        resp = request(s, DESCRIBE_TRANSACTIONS, 0, DTQ.DescribeTransactionsRequest(transactional_ids=["cross"]))
        assert resp.transaction_states[0].error_code == ErrorCode.NOT_COORDINATOR
        resp = request(s, INIT_PRODUCER_ID, 4, IQ.InitProducerIdRequest(transactional_id="cross",
                                                                        transaction_timeout_ms=60000), correlation_id=2)
        assert resp.error_code == ErrorCode.NOT_COORDINATOR
        resp = request(s, LIST_TRANSACTIONS, 0, LTQ.ListTransactionsRequest(state_filters=[], producer_id_filters=[]),
                       correlation_id=3)
        assert "cross" not in [t.transactional_id for t in resp.transaction_states]
        s.close()
        s = connect(f"127.0.0.1:{c.nodes[tx_coordinator].port}")
        resp = request(s, DESCRIBE_TRANSACTIONS, 0, DTQ.DescribeTransactionsRequest(transactional_ids=["cross"]))
        assert (resp.transaction_states[0].error_code, resp.transaction_states[0].transaction_state) == \
            (0, "CompleteCommit")
        s.close()
        p.flush(5)


@pytest.mark.parametrize("when", ["ongoing", "markers_in_flight"])
def test_a_transaction_in_flight_when_its_coordinator_dies_ends_all_or_nothing(when):
    tid = f"dying-{when}"
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("txk", 3, 3, {"min.insync.replicas": 2})
        p = _txn_producer(c.bootstrap_servers, tid)
        p.begin_transaction()
        for q in range(3):
            p.produce("txk", b"before-%d" % q, partition=q)
        p.commit_transaction(30)
        coordinator = c.leader_for(TRANSACTION_STATE_TOPIC, partition_for(tid, 50))
        p.begin_transaction()
        inflight = [b"inflight-%d-%d" % (q, i) for q in range(3) for i in range(5)]
        for v in inflight:
            p.produce("txk", v, partition=int(v.split(b"-")[1]))
        assert p.flush(30) == 0
        others = [q for q in range(3) if c.leader_for("txk", q) != coordinator]
        assert others, "every partition led by the transaction coordinator: no remote markers"
        outcome = None
        if when == "ongoing":
            c.kill(coordinator)
        else:
            # markers to the other brokers are held up: the coordinator dies with its decision made and replicated
            # but its markers not all written
            holds = [c.call(lambda cl, n=c.leader_for("txk", q): cl.core(n).add_control(
                lambda req: Delay(8), key="WriteTxnMarkers")) for q in others]
            p.commit_transaction(30)
            outcome = "committed"
            assert all(h.wait(5) for h in holds)        # the markers reached the other brokers and wait there
            c.kill(coordinator)
            for h in holds:
                c.call(lambda cl, h=h: h.remove())
        wait_until(lambda: c.leader_for(TRANSACTION_STATE_TOPIC, partition_for(tid, 50)) not in (coordinator, -1), 15,
                   "a new transaction coordinator")
        if outcome is None:
            try:
                p.commit_transaction(30)
                outcome = "committed"
            except KafkaException as e:
                outcome = "failed: %s" % e
        # the producer goes on (a new one with the same id if the client cannot)
        try:
            p.begin_transaction()
            p.produce("txk", b"after", partition=0)
            p.commit_transaction(30)
        except KafkaException:
            p = _txn_producer(c.bootstrap_servers, tid)
            p.begin_transaction()
            p.produce("txk", b"after", partition=0)
            p.commit_transaction(30)
        stored = consume_all(c.bootstrap_servers, "txk", 3, 3 + 15 + 1, timeout=40)
        got = _values(stored)
        seen = [v for v in inflight if v in got]
        assert seen in ([], inflight), f"part of a transaction visible ({len(seen)} of {len(inflight)})"
        if outcome == "committed":
            assert seen == inflight
        assert b"after" in got and all(b"before-%d" % q in got for q in range(3))
        assert len(got) == len(set(got)), "duplicated records"
        print(f"{when}: {outcome}")


def test_consume_transform_produce_keeps_exactly_once_across_a_coordinator_kill():
    n = 300
    with kafkapy.Cluster(3, config=FAST) as c:
        c.create_topic("etl-in", 3, 3, {"min.insync.replicas": 2})
        c.create_topic("etl-out", 3, 3, {"min.insync.replicas": 2})
        src = Producer({"bootstrap.servers": c.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
        for i in range(n):
            src.produce("etl-in", b"%d" % i, partition=i % 3)
        assert src.flush(30) == 0
        tid, group = "etl", "etl-group"
        cons = Consumer({"bootstrap.servers": c.bootstrap_servers, "group.id": group, "enable.auto.commit": False,
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
        parts = [TopicPartition("etl-in", q) for q in range(3)]

        def rewind():
            """Back to the committed offsets (after an abort): what they say is what was processed."""
            committed = cons.committed(parts, timeout=30)
            cons.assign([TopicPartition("etl-in", tp.partition, tp.offset if tp.offset >= 0 else 0)
                         for tp in committed])
        cons.assign([TopicPartition("etl-in", q, 0) for q in range(3)])
        prod = _txn_producer(c.bootstrap_servers, tid)
        done_at: dict[int, int] = {}
        killed = False
        aborted = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            msgs = [m for m in cons.consume(50, 0.5) if not m.error()]
            if not msgs:
                if all(done_at.get(q) == n // 3 for q in range(3)):
                    break
                continue
            try:
                prod.begin_transaction()
                for m in msgs:
                    prod.produce("etl-out", b"out-" + m.value(), partition=m.partition())
                positions = cons.position(parts)
                prod.send_offsets_to_transaction(positions, cons.consumer_group_metadata(), 30)
                if not killed and sum(done_at.values()) > n // 3:
                    killed = True
                    victim = c.leader_for(TRANSACTION_STATE_TOPIC, partition_for(tid, 50))
                    c.kill(victim)
                prod.commit_transaction(30)
                done_at.update({tp.partition: tp.offset for tp in positions if tp.offset >= 0})
            except KafkaException as e:
                aborted += 1
                err = e.args[0]
                if err.txn_requires_abort():
                    prod.abort_transaction(30)
                else:
                    prod = _txn_producer(c.bootstrap_servers, tid)
                rewind()
                done_at = {tp.partition: tp.offset for tp in cons.committed(parts, timeout=30) if tp.offset >= 0}
        assert killed
        print(f"consume-transform-produce: {aborted} transaction(s) aborted or re-initialised")
        committed = {tp.partition: tp.offset for tp in cons.committed(parts, timeout=30)}
        cons.close()
        assert committed == {q: n // 3 for q in range(3)}, committed
        stored = consume_all(c.bootstrap_servers, "etl-out", 3, n, timeout=40)
        got = _values(stored)
        assert len(got) == len(set(got)), f"duplicated outputs ({len(got) - len(set(got))}); aborted {aborted}"
        assert sorted(got) == sorted(b"out-%d" % i for i in range(n))
