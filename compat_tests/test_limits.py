"""Kafka's connection and size limits, and backpressure: max.connections.per.ip, max.connections,
connections.max.idle.ms, fetch.max.bytes, a pipelining client and a client that never reads its responses."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from inprocess import InProcessBroker, closed_by_peer, connect, recv_frame, request
from kafkapy import server as server_mod
from wire import protocol
from wire.messages import fetch_request as FQ
from wire.messages import produce_request as PQ
from wire.records import build_batch

METADATA = protocol.API[3].request.MESSAGE


def _metadata_ok(bootstrap, timeout=5.0):
    s = connect(bootstrap, timeout)
    try:
        started = time.monotonic()
        md = request(s, 3, 12, METADATA(topics=None))
        assert md.brokers
        return time.monotonic() - started
    finally:
        s.close()


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_max_connections_per_ip_drops_the_extra_connection():
    with InProcessBroker({"max.connections.per.ip": "3"}) as b:
        socks = [connect(b.bootstrap) for _ in range(3)]
        for s in socks:
            assert request(s, 3, 12, METADATA(topics=None)).brokers
        extra = connect(b.bootstrap)
        assert closed_by_peer(extra, 5), "a 4th connection from the same address must be dropped"
        extra.close()
        assert b.server.rejected_connections == 1
        socks.pop().close()
        assert _wait(lambda: len(b.server.connections) == 2)
        assert _metadata_ok(b.bootstrap) < 2          # a slot is free again
        for s in socks:
            s.close()


def test_max_connections_per_ip_overrides():
    with InProcessBroker({"max.connections.per.ip": "1", "max.connections.per.ip.overrides": "127.0.0.1:2"}) as b:
        a, c = connect(b.bootstrap), connect(b.bootstrap)
        assert request(a, 3, 12, METADATA(topics=None)).brokers
        assert request(c, 3, 12, METADATA(topics=None)).brokers
        d = connect(b.bootstrap)
        assert closed_by_peer(d, 5)
        for s in (a, c, d):
            s.close()


def test_max_connections_holds_new_connections_until_a_slot_frees():
    with InProcessBroker({"max.connections": "2"}) as b:
        a, c = connect(b.bootstrap), connect(b.bootstrap)
        for s in (a, c):
            assert request(s, 3, 12, METADATA(topics=None)).brokers
        waiting = connect(b.bootstrap)
        waiting.sendall(protocol.encode_request(3, 12, 9, "w", METADATA(topics=None)))
        waiting.settimeout(0.7)
        with pytest.raises(socket.timeout):
            waiting.recv(1)                            # not served while the broker is full
        assert b.server.waiting_connections == 1
        a.close()
        waiting.settimeout(5)
        frame = recv_frame(waiting)                    # served as soon as a connection closed
        assert protocol.decode_response(3, 12, frame)[0] == 9
        # a waiting client that gives up is dropped without ever being served
        gone = connect(b.bootstrap)
        assert _wait(lambda: b.server.waiting_connections == 1, 5)
        gone.close()
        assert _wait(lambda: b.server.waiting_connections == 0, 5)
        for s in (c, waiting):
            s.close()


def test_max_connections_waiting_beyond_the_backlog_are_closed():
    with InProcessBroker({"max.connections": "1", "socket.listen.backlog.size": "2"}) as b:
        served = connect(b.bootstrap)
        assert request(served, 3, 12, METADATA(topics=None)).brokers
        waiting = [connect(b.bootstrap) for _ in range(2)]
        assert _wait(lambda: b.server.waiting_connections == 2, 5)
        extra = connect(b.bootstrap)
        assert closed_by_peer(extra, 5)
        for s in waiting:
            assert not closed_by_peer(s, 0.2)            # still waiting, not dropped
        served.close()
        for s in [extra, *waiting]:
            s.close()


def test_idle_connection_is_closed():
    with InProcessBroker({"connections.max.idle.ms": "400"}) as b:
        s = connect(b.bootstrap)
        assert request(s, 3, 12, METADATA(topics=None)).brokers
        started = time.monotonic()
        assert closed_by_peer(s, 5)
        assert 0.3 < time.monotonic() - started < 3
        s.close()
        assert _wait(lambda: not b.server.connections, 5)


def _produce(s, topic, partition, payload_size, count):
    for i in range(count):
        batch = build_batch([(None, bytes([i % 251]) * payload_size)])
        body = PQ.ProduceRequest(transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
            PQ.TopicProduceData(name=topic, partition_data=[PQ.PartitionProduceData(index=partition,
                                                                                    records=batch)])])
        r = request(s, 0, 9, body, correlation_id=i + 1)
        assert r.responses[0].partition_responses[0].error_code == 0


def _fetch_body(topic, partitions, max_bytes, partition_max_bytes, offset=0):
    return FQ.FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=max_bytes, isolation_level=0,
                           session_id=0, session_epoch=-1, topics=[FQ.FetchTopic(topic=topic, partitions=[
                               FQ.FetchPartition(partition=p, current_leader_epoch=-1, fetch_offset=offset,
                                                 log_start_offset=-1, partition_max_bytes=partition_max_bytes)
                               for p in partitions])], forgotten_topics_data=[], rack_id="")


def test_fetch_response_is_bounded_by_fetch_max_bytes():
    with InProcessBroker({"fetch.max.bytes": "100000"}) as b:
        b.run(b.broker.create_topic, "big", 4)
        s = connect(b.bootstrap)
        for p in range(4):
            _produce(s, "big", p, 20_000, 5)            # 4 x 100 KB
        r = request(s, 1, 12, _fetch_body("big", range(4), 50 * 1024 * 1024, 10 * 1024 * 1024))
        sizes = [len(bytes(pd.records or b"")) for t in r.responses for pd in t.partitions]
        assert 0 < sum(sizes) <= 100_000, sizes
        # the request's own smaller max_bytes still applies
        r = request(s, 1, 12, _fetch_body("big", range(4), 30_000, 10 * 1024 * 1024), correlation_id=2)
        sizes = [len(bytes(pd.records or b"")) for t in r.responses for pd in t.partitions]
        assert 0 < sum(sizes) <= 30_000, sizes
        s.close()


def _server_conn(b, exclude=()):
    conns = [c for c in b.server.connections if c not in exclude]
    return conns


def test_pipelining_client_cannot_make_the_broker_buffer_requests():
    """A client writes 20 MB of Metadata requests without reading a response: the broker reads one request at a
    time, its read buffer stays at the StreamReader's bound and the rest waits in the kernel and the client."""
    with InProcessBroker() as b:
        s = connect(b.bootstrap)
        s.setblocking(False)
        one = protocol.encode_request(3, 12, 1, "pipeliner", METADATA(topics=None))
        blob = one * (20 * 1024 * 1024 // len(one))
        sent = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sent < len(blob):
            try:
                sent += s.send(blob[sent:sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
        assert sent < len(blob), "the broker should stop taking bytes from a client that does not read"
        conn = _wait(lambda: _server_conn(b), 5) and _server_conn(b)[0]
        sizes = b.run(lambda: (len(conn.reader._buffer), conn.writer.transport.get_write_buffer_size()))
        # paused past 2 * limit; one socket read (asyncio reads up to 256 KiB at a time) may land on top
        assert sizes[0] <= 2 * server_mod.READ_LIMIT + 256 * 1024, sizes
        assert sizes[1] <= server_mod.WRITE_HIGH_WATER + 64 * 1024, sizes
        assert _metadata_ok(b.bootstrap) < 1.0         # others are served meanwhile
        s.close()


def test_slow_reader_is_held_back_and_others_are_unaffected():
    """A client pipelines Fetch requests for 1 MB each and never reads: the broker stops reading its requests
    once its socket is full (drain), holds at most about one response for it, keeps serving a second client,
    and closes the stalled connection after connections.max.idle.ms."""
    with InProcessBroker({"connections.max.idle.ms": "3000"}) as b:
        b.run(b.broker.create_topic, "slow", 1)
        s = connect(b.bootstrap)
        _produce(s, "slow", 0, 100_000, 10)             # 1 MB in the log
        s.close()
        assert _wait(lambda: not b.server.connections, 5)
        slow = connect(b.bootstrap)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        fetch = protocol.encode_request(1, 12, 1, "slow", _fetch_body("slow", [0], 2 << 20, 2 << 20))
        slow.settimeout(2)
        for _ in range(200):                             # 200 x 1 MB of responses asked for, none read
            slow.sendall(fetch)
        conn = _wait(lambda: _server_conn(b), 5) and _server_conn(b)[0]
        time.sleep(0.5)
        served_before = conn.requests
        time.sleep(0.5)
        assert conn.requests == served_before < 200, "the broker must stop serving a client that does not read"
        buffered = b.run(lambda: conn.writer.transport.get_write_buffer_size())
        assert buffered <= server_mod.WRITE_HIGH_WATER + 1_100_000, buffered
        for _ in range(5):
            assert _metadata_ok(b.bootstrap) < 1.0
        # connections.max.idle.ms: the stalled connection is closed
        assert _wait(lambda: conn not in b.server.connections, 8)
        slow.close()


def test_client_gone_during_a_fetch_long_poll_frees_its_connection():
    """Kafka closes a connection as soon as its peer does, even with a Fetch waiting in purgatory."""
    with InProcessBroker() as b:
        b.run(b.broker.create_topic, "idle", 1)
        s = connect(b.bootstrap)
        body = _fetch_body("idle", [0], 1 << 20, 1 << 20)
        body.max_wait_ms = 60_000
        s.sendall(protocol.encode_request(1, 12, 1, "longpoll", body))
        assert _wait(lambda: len(b.server.connections) == 1, 5)
        s.close()
        assert _wait(lambda: not b.server.connections and not b.server._tasks, 3)


def test_client_stalled_inside_a_request_is_closed_when_idle():
    """A size prefix announcing 1 MB, 10 bytes of it, then nothing: closed after connections.max.idle.ms, not
    held forever (and the broker never allocated for more than what arrived)."""
    with InProcessBroker({"connections.max.idle.ms": "400"}) as b:
        s = connect(b.bootstrap)
        s.sendall(struct.pack(">i", 1 << 20) + b"\x00\x03\x00\x0c" + b"\x00" * 6)
        started = time.monotonic()
        assert closed_by_peer(s, 5)
        assert 0.3 < time.monotonic() - started < 3
        s.close()
        assert _wait(lambda: not b.server.connections and not b.server._tasks, 3)
