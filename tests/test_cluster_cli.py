"""``kafkapy cluster``: several brokers in one process from the command line (ready line, a record through
confluent-kafka at replication factor 3, SIGTERM stops every broker with exit code 0)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kafkapy.__main__ import build_cluster_parser

ROOT = Path(__file__).resolve().parent.parent
READY = "kafkapy cluster ready at "


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "kafkapy", "cluster", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def test_cluster_command_produce_consume_and_sigterm():
    p = start("--brokers", "3", "--port", "0")
    try:
        line = p.stdout.readline()
        assert line.startswith(READY), (line, p.stderr.read() if p.poll() is not None else "")
        bootstrap = line[len(READY):].strip()
        servers = bootstrap.split(",")
        assert len(servers) == 3 and all(s.startswith("127.0.0.1:") for s in servers)
        admin = AdminClient({"bootstrap.servers": servers[1]})
        admin.create_topics([NewTopic("cli", 1, 3)], operation_timeout=10)["cli"].result(20)
        md = admin.list_topics("cli", timeout=10)
        assert sorted(md.brokers) == [1, 2, 3]
        assert sorted(md.topics["cli"].partitions[0].replicas) == [1, 2, 3]
        prod = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        prod.produce("cli", b"through the cluster")
        assert prod.flush(20) == 0
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cli", "auto.offset.reset": "earliest"})
        c.subscribe(["cli"])
        got, deadline = None, time.monotonic() + 20
        while got is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got = m.value()
        c.close()
        assert got == b"through the cluster"
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        for s in servers:                 # every broker stopped listening
            host, port = s.rsplit(":", 1)
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                raise AssertionError(f"{s} still accepts connections")
            except ConnectionRefusedError:
                pass
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()


def test_cluster_command_consecutive_ports_and_errors(tmp_path):
    args = build_cluster_parser().parse_args([])
    assert (args.brokers, args.port, args.storage, args.host) == (3, 9092, "memory", "127.0.0.1")
    with socket.socket() as s:                 # the second of two consecutive ports is taken
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        p = start("--brokers", "2", "--port", str(taken - 1))
        out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and out == ""
    assert "already in use" in err or "cannot start" in err, err
    p = start("--storage", "disk")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "--data-dir" in err
    # disk storage: each broker's logs under the data dir
    p = start("--brokers", "2", "--port", "0", "--storage", "disk", "--data-dir", str(tmp_path))
    try:
        line = p.stdout.readline()
        assert line.startswith(READY), (line, p.stderr.read() if p.poll() is not None else "")
        assert sorted(os.listdir(tmp_path)) == ["broker-1", "broker-2"]
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
