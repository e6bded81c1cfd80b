"""The command-line tools (kafkapy topics|produce|consume|groups) as a shell user runs them: subprocesses
against a live broker, checking output and exit codes, and round trips with confluent-kafka and kcat."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import kafkapy
from kafkapy.tools.client import murmur2, partition_for_key

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def broker():
    with kafkapy.Broker() as b:
        yield b


@pytest.fixture
def topic():
    return f"tools-{uuid.uuid4().hex[:10]}"


def kp(broker, *args, input: bytes | str | None = None, timeout: float = 60, env=None):
    """Run ``python -m kafkapy ARGS`` with KAFKAPY_BOOTSTRAP pointing at ``broker``; CompletedProcess with
    text stdout/stderr."""
    e = dict(os.environ, PYTHONPATH=str(ROOT))
    if broker is not None:
        e["KAFKAPY_BOOTSTRAP"] = broker.bootstrap_servers
    e.update(env or {})
    if isinstance(input, str):
        input = input.encode()
    r = subprocess.run([sys.executable, "-m", "kafkapy", *map(str, args)], input=input, capture_output=True,
                       timeout=timeout, env=e, cwd=ROOT)
    r.stdout = r.stdout.decode("utf-8", "replace")
    r.stderr = r.stderr.decode("utf-8", "replace")
    return r


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stderr
    return r


def consume_json(broker, topic, *args):
    r = ok(kp(broker, "consume", topic, "--from-beginning", "--timeout-ms", 1500, "--format", "json", *args))
    return [json.loads(line) for line in r.stdout.splitlines()]


# ---------------------------------------------------------------- topics

def test_topics_create_list_describe_alter_delete(broker, topic):
    r = ok(kp(broker, "topics", "create", topic, "--partitions", 3, "--config", "cleanup.policy=compact",
              "--config", "retention.ms=60000"))
    assert r.stdout.strip() == f"Created topic {topic}."
    assert topic in ok(kp(broker, "topics", "list")).stdout.splitlines()

    r = kp(broker, "topics", "create", topic)
    assert r.returncode == 1
    assert r.stderr.strip() == f"kafkapy topics create: TOPIC_ALREADY_EXISTS: Topic '{topic}' already exists."
    ok(kp(broker, "topics", "create", topic, "--if-not-exists"))

    ok(kp(broker, "produce", topic, "--partition", 2, "--key-separator", ":", input="a:1\nb:2\nc:3\n"))
    lines = ok(kp(broker, "topics", "describe", topic)).stdout.splitlines()
    assert lines[0].startswith(f"Topic: {topic}\tTopicId: ")
    assert "PartitionCount: 3\tReplicationFactor: 1\tConfigs: cleanup.policy=compact,retention.ms=60000" in lines[0]
    assert len(lines) == 4
    assert lines[3] == f"\tTopic: {topic}\tPartition: 2\tLeader: 1\tReplicas: 1\tIsr: 1\tEarliest: 0\tLatest: 3"
    assert lines[1].endswith("Earliest: 0\tLatest: 0")

    r = ok(kp(broker, "topics", "alter-config", topic, "--set", "retention.ms=1000", "--delete", "cleanup.policy"))
    assert r.stdout.strip() == f"Completed updating config for topic {topic}."
    head = ok(kp(broker, "topics", "describe", topic)).stdout.splitlines()[0]
    assert head.endswith("Configs: retention.ms=1000")

    r = kp(broker, "topics", "alter-config", topic, "--set", "no.such.config=1")
    assert r.returncode == 1 and r.stderr.startswith("kafkapy topics alter-config: INVALID_CONFIG")

    r = ok(kp(broker, "topics", "delete", topic))
    assert r.stdout.strip() == f"Deleted topic {topic}."
    assert topic not in ok(kp(broker, "topics", "list")).stdout.splitlines()
    r = kp(broker, "topics", "describe", topic)
    assert r.returncode == 1
    assert r.stderr.strip() == f"kafkapy topics describe: UNKNOWN_TOPIC_OR_PARTITION: Topic '{topic}' does not exist."
    r = kp(broker, "topics", "delete", topic)
    assert r.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr


def test_topics_describe_all_and_bootstrap_flag(broker, topic):
    ok(kp(broker, "topics", "create", topic, "--partitions", 2))
    r = ok(kp(None, "topics", "--bootstrap-server", broker.bootstrap_servers, "describe", "--exclude-internal"))
    assert f"Topic: {topic}\t" in r.stdout
    assert "__consumer_offsets" not in r.stdout


def test_usage_errors_exit_2(broker, topic):
    for args in (["topics"], ["topics", "bogus"], ["topics", "create"], ["topics", "create", topic, "--partitions", 0],
                 ["produce"], ["consume", topic, "--format", "xml"],
                 ["consume", topic, "--from-beginning", "--offset", "3"],
                 ["groups", "reset-offsets", "g", "--topic", topic],
                 ["topics", "alter-config", topic]):
        r = kp(broker, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.strip(), args


def test_unreachable_broker(tmp_path):
    import socket

    with socket.socket() as s:      # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    r = kp(None, "topics", "list", "--bootstrap-server", f"127.0.0.1:{port}")
    assert r.returncode == 1
    assert r.stderr.strip() == f"kafkapy topics list: cannot connect to 127.0.0.1:{port}: Connection refused"
    # a server that accepts the connection but never answers: the request timeout bounds the wait
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        addr = f"127.0.0.1:{silent.getsockname()[1]}"
        t1 = time.monotonic()
        r = kp(None, "consume", "t", "--bootstrap-server", addr, "--request-timeout-ms", 500)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert r.stderr.strip() == f"kafkapy consume: ApiVersions request to {addr} timed out"
        assert time.monotonic() - t1 < 10
    assert time.monotonic() - t0 < 20


def test_broker_command_still_starts_a_broker():
    """``kafkapy [broker options]`` (no tool name) is still the broker."""
    with kafkapy.Broker(mode="subprocess") as b:
        assert ok(kp(b, "topics", "list")).returncode == 0


# ---------------------------------------------------------------- produce / consume

@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_roundtrip(broker, topic, compression):
    ok(kp(broker, "topics", "create", topic, "--partitions", 1))
    lines = [f"k{i}|value {i} ünïcode" for i in range(7)] + ["no separator here", "|empty key", "k|"]
    r = ok(kp(broker, "produce", topic, "--key-separator", "|", "--header", "h1=x", "--header", "h2=y=z",
              "--compression", compression, input="\n".join(lines) + "\n"))
    assert r.stderr.strip() == f"kafkapy produce: 10 records written to {topic} (partition 0: offsets 0-9)"
    got = consume_json(broker, topic)
    assert [m["offset"] for m in got] == list(range(10))
    assert [(m["key"], m["value"]) for m in got][:7] == [(f"k{i}", f"value {i} ünïcode") for i in range(7)]
    assert (got[7]["key"], got[7]["value"]) == (None, "no separator here")
    assert (got[8]["key"], got[8]["value"]) == ("", "empty key")
    assert (got[9]["key"], got[9]["value"]) == ("k", "")
    assert all(m["headers"] == [["h1", "x"], ["h2", "y=z"]] for m in got)
    assert all(m["topic"] == topic and m["partition"] == 0 and m["timestamp_type"] == "CreateTime" for m in got)
    assert all(abs(m["timestamp"] - time.time() * 1000) < 120_000 for m in got)


def test_consume_text_formats_and_positions(broker, topic):
    ok(kp(broker, "topics", "create", topic, "--partitions", 1))
    ok(kp(broker, "produce", topic, "--key-separator", ":", "--header", "a=1", input="k1:v1\nk2:v2\nk3:v3\n"))
    r = ok(kp(broker, "consume", topic, "--from-beginning", "--max-messages", 2, "--print-key", "--print-offset",
              "--print-headers"))
    assert r.stdout == "Partition:0\tOffset:0\ta:1\tk1\tv1\nPartition:0\tOffset:1\ta:1\tk2\tv2\n"
    assert r.stderr.strip() == "Processed a total of 2 messages"
    r = ok(kp(broker, "consume", topic, "--offset", 1, "--timeout-ms", 800))
    assert r.stdout == "v2\nv3\n"
    r = ok(kp(broker, "consume", topic, "--offset", -1, "--timeout-ms", 800, "--print-key", "--separator", "="))
    assert r.stdout == "k3=v3\n"
    r = ok(kp(broker, "consume", topic, "--from-beginning", "--max-messages", 1, "--format", "hex", "--print-key"))
    assert r.stdout == f"{b'k1'.hex()}\t{b'v1'.hex()}\n"
    # the default start is the end: nothing old, exits when idle
    t0 = time.monotonic()
    r = ok(kp(broker, "consume", topic, "--timeout-ms", 700))
    assert r.stdout == "" and r.stderr.strip() == "Processed a total of 0 messages"
    assert time.monotonic() - t0 < 15


def test_consume_from_timestamp(broker, topic):
    ok(kp(broker, "topics", "create", topic))
    ok(kp(broker, "produce", topic, input="old1\nold2\n"))
    time.sleep(0.05)
    cut = int(time.time() * 1000)
    time.sleep(0.05)
    ok(kp(broker, "produce", topic, input="new1\nnew2\n"))
    r = ok(kp(broker, "consume", topic, "--from-timestamp", cut, "--timeout-ms", 800))
    assert r.stdout == "new1\nnew2\n"
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut / 1000 - 3600)) + "Z"
    r = ok(kp(broker, "consume", topic, "--from-timestamp", iso, "--timeout-ms", 800))
    assert r.stdout == "old1\nold2\nnew1\nnew2\n"


def test_consume_waits_for_new_records(broker, topic):
    """Long-poll: a consumer started at the end prints what is produced afterwards."""
    ok(kp(broker, "topics", "create", topic))
    e = dict(os.environ, PYTHONPATH=str(ROOT), KAFKAPY_BOOTSTRAP=broker.bootstrap_servers)
    proc = subprocess.Popen([sys.executable, "-m", "kafkapy", "consume", topic, "--max-messages", "2",
                             "--timeout-ms", "20000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    try:
        time.sleep(1.5)
        ok(kp(broker, "produce", topic, input="late1\nlate2\n"))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert out == b"late1\nlate2\n"


def test_produce_partitioning_batching_and_acks(broker, topic):
    ok(kp(broker, "topics", "create", topic, "--partitions", 4))
    keys = [f"key-{i}" for i in range(40)]
    ok(kp(broker, "produce", topic, "--key-separator", "=", input="".join(f"{k}=v\n" for k in keys)))
    got = consume_json(broker, topic)
    assert len(got) == 40
    for m in got:      # the Java client's partition for a key
        assert m["partition"] == partition_for_key(m["key"].encode(), 4)
    # Kafka's murmur2 test vectors (from Kafka's UtilsTest)
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107

    # many lines: several batches, all records, in order
    n = 3000
    r = ok(kp(broker, "produce", topic, "--partition", 1, "--batch-size", 250,
              input="".join(f"line {i}\n" for i in range(n))))
    assert f"{n} records written to {topic}" in r.stderr
    got = [m for m in consume_json(broker, topic, "--partition", 1) if m["key"] is None]
    assert [m["value"] for m in got] == [f"line {i}" for i in range(n)]

    r = ok(kp(broker, "produce", topic, "--partition", 3, "--acks", "0", input="fire\nforget\n"))
    assert "2 records sent" in r.stderr and "acks=0" in r.stderr
    deadline = time.monotonic() + 10
    vals = []
    while time.monotonic() < deadline and vals[-2:] != ["fire", "forget"]:
        vals = [m["value"] for m in consume_json(broker, topic, "--partition", 3)]
    assert vals[-2:] == ["fire", "forget"]

    r = kp(broker, "produce", topic, "--partition", 9, input="x\n")
    assert r.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr


def test_produce_to_missing_topic_without_auto_create():
    with kafkapy.Broker(config={"auto.create.topics.enable": "false"}) as b:
        r = kp(b, "produce", "nope", input="x\n")
        assert r.returncode == 1
        assert "kafkapy produce: UNKNOWN_TOPIC_OR_PARTITION: Topic 'nope' does not exist" in r.stderr
        r = kp(b, "consume", "nope", "--timeout-ms", 100)
        assert r.returncode == 1
        assert r.stderr.strip() == "kafkapy consume: UNKNOWN_TOPIC_OR_PARTITION: Topic 'nope' does not exist."


# ---------------------------------------------------------------- groups

def _describe_rows(out: str) -> dict[tuple[str, int], list[str]]:
    rows = {}
    lines = out.splitlines()
    if not any(line.startswith("GROUP ") for line in lines):
        return rows
    start = next(i for i, line in enumerate(lines) if line.startswith("GROUP "))
    for line in lines[start + 1:]:
        if not line.strip():
            break
        cols = line.split()
        rows[(cols[1], int(cols[2]))] = cols
    return rows


def test_group_commit_describe_lag_reset(broker, topic):
    group = f"g-{topic}"
    ok(kp(broker, "topics", "create", topic, "--partitions", 2))
    ok(kp(broker, "produce", topic, "--partition", 0, input="".join(f"a{i}\n" for i in range(5))))
    ok(kp(broker, "produce", topic, "--partition", 1, input="".join(f"b{i}\n" for i in range(3))))

    r = ok(kp(broker, "consume", topic, "--group", group, "--from-beginning", "--partition", 0,
              "--max-messages", 3))
    assert r.stdout == "a0\na1\na2\n"
    assert group in ok(kp(broker, "groups", "list")).stdout.splitlines()
    out = ok(kp(broker, "groups", "describe", group)).stdout
    assert out.splitlines()[0] == f"Group: {group}\tState: Empty\tProtocol: -\tMembers: 0"
    rows = _describe_rows(out)
    assert rows[(topic, 0)][3:6] == ["3", "5", "2"]       # current, log end, lag
    assert (topic, 1) not in rows
    assert f"Consumer group '{group}' has no active members." in out

    # resumes at the committed offset; without --from-beginning too
    r = ok(kp(broker, "consume", topic, "--group", group, "--timeout-ms", 1000))
    assert r.stdout.splitlines() == ["a3", "a4"]           # partition 1 had no commit: starts at the end
    rows = _describe_rows(ok(kp(broker, "groups", "describe", group)).stdout)
    assert rows[(topic, 0)][3:6] == ["5", "5", "0"]
    assert rows[(topic, 1)][3:6] == ["3", "3", "0"]

    # dry run changes nothing
    r = ok(kp(broker, "groups", "reset-offsets", group, "--topic", topic, "--to-earliest"))
    assert r.stdout.split() == ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET", group, topic, "0", "0",
                                group, topic, "1", "0"]
    assert "dry run" in r.stderr
    rows = _describe_rows(ok(kp(broker, "groups", "describe", group)).stdout)
    assert rows[(topic, 0)][3] == "5"

    ok(kp(broker, "groups", "reset-offsets", group, "--topic", f"{topic}:0", "--to-offset", 1, "--execute"))
    ok(kp(broker, "groups", "reset-offsets", group, "--topic", f"{topic}:1", "--shift-by", -2, "--execute"))
    rows = _describe_rows(ok(kp(broker, "groups", "describe", group)).stdout)
    assert rows[(topic, 0)][3:6] == ["1", "5", "4"]
    assert rows[(topic, 1)][3:6] == ["1", "3", "2"]
    r = ok(kp(broker, "consume", topic, "--group", group, "--partition", 1, "--timeout-ms", 800))
    assert r.stdout == "b1\nb2\n"
    r = ok(kp(broker, "groups", "reset-offsets", group, "--topic", topic, "--to-offset", 99, "--execute"))
    assert [line.split()[-1] for line in r.stdout.splitlines()[1:]] == ["5", "3"]     # clamped to latest
    r = ok(kp(broker, "groups", "reset-offsets", group, "--topic", topic, "--to-latest", "--execute"))

    r = ok(kp(broker, "groups", "delete", group))
    assert r.stdout.strip() == f"Deletion of requested consumer groups ('{group}') was successful."
    assert group not in ok(kp(broker, "groups", "list")).stdout.splitlines()
    r = kp(broker, "groups", "describe", group)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"kafkapy groups describe: GROUP_ID_NOT_FOUND: Consumer group '{group}' "
                                f"does not exist.")
    r = kp(broker, "groups", "delete", group)
    assert r.returncode == 1 and "GROUP_ID_NOT_FOUND" in r.stderr


def test_group_describe_live_consumer_members_and_assignment(broker, topic):
    from confluent_kafka import Consumer

    group = f"live-{topic}"
    ok(kp(broker, "topics", "create", topic, "--partitions", 3))
    ok(kp(broker, "produce", topic, "--partition", 0, input="x\ny\nz\n"))
    c = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group, "client.id": "my-app",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        c.subscribe([topic])
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 1 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
        assert got
        c.commit(message=got[0], asynchronous=False)        # offset 1 on partition 0
        r = ok(kp(broker, "groups", "describe", group))
        lines = r.stdout.splitlines()
        assert lines[0] == f"Group: {group}\tState: Stable\tProtocol: consumer/range\tMembers: 1"
        rows = _describe_rows(r.stdout)
        assert rows[(topic, 0)][3:6] == ["1", "3", "2"]
        for p in (1, 2):
            assert rows[(topic, p)][3] == "-" and rows[(topic, p)][-1] == "my-app"
        member = rows[(topic, 0)][6]
        assert member.startswith("my-app-")
        assert any(line.startswith(member) and line.endswith(f"{topic}:0,1,2") for line in lines)

        r = kp(broker, "groups", "reset-offsets", group, "--topic", topic, "--to-earliest", "--execute")
        assert r.returncode == 1
        assert "can only be reset if the group" in r.stderr and "Stable" in r.stderr
        r = kp(broker, "groups", "delete", group)
        assert r.returncode == 1 and "NON_EMPTY_GROUP" in r.stderr
    finally:
        c.close()


# ---------------------------------------------------------------- transactions

def test_consume_read_committed(broker, topic):
    from confluent_kafka import Producer

    ok(kp(broker, "topics", "create", topic))
    p = Producer({"bootstrap.servers": broker.bootstrap_servers, "transactional.id": f"tx-{topic}"})
    p.init_transactions(20)
    p.begin_transaction()
    p.produce(topic, b"committed-1")
    p.commit_transaction(20)
    p.begin_transaction()
    p.produce(topic, b"aborted-1")
    p.produce(topic, b"aborted-2")
    p.flush(10)
    p.abort_transaction(20)
    p.begin_transaction()
    p.produce(topic, b"committed-2")
    p.commit_transaction(20)
    r = ok(kp(broker, "consume", topic, "--from-beginning", "--timeout-ms", 1000, "--isolation", "read_committed"))
    assert r.stdout == "committed-1\ncommitted-2\n"
    r = ok(kp(broker, "consume", topic, "--from-beginning", "--timeout-ms", 1000, "--print-offset"))
    # control batches (markers at offsets 1, 4, 6) are never printed
    assert r.stdout.splitlines() == ["Partition:0\tOffset:0\tcommitted-1", "Partition:0\tOffset:2\taborted-1",
                                     "Partition:0\tOffset:3\taborted-2", "Partition:0\tOffset:5\tcommitted-2"]


# ---------------------------------------------------------------- interop

def test_confluent_produces_kafkapy_consumes(broker, topic):
    from confluent_kafka import Producer

    ok(kp(broker, "topics", "create", topic, "--partitions", 3))
    p = Producer({"bootstrap.servers": broker.bootstrap_servers, "compression.type": "lz4",
                  "partitioner": "murmur2_random", "linger.ms": 5})
    sent = [(f"key{i}".encode(), f"value{i}".encode(), [("h", f"{i}".encode()), ("n", None)]) for i in range(30)]
    sent.append((None, b"\x00\xffbinary", []))
    for k, v, h in sent:
        p.produce(topic, v, key=k, headers=h, partition=0 if k is None else -1)
    assert p.flush(10) == 0
    got = consume_json(broker, topic)
    assert len(got) == len(sent)
    by_key = {m["key"]: m for m in got}
    for k, v, h in sent[:-1]:
        m = by_key[k.decode()]
        assert m["value"] == v.decode()
        assert m["headers"] == [["h", h[0][1].decode()], ["n", None]]
        assert m["partition"] == partition_for_key(k, 3)     # librdkafka's murmur2 agrees with ours
    assert by_key[None]["value"] == {"base64": "AP9iaW5hcnk="}


def test_kafkapy_produces_confluent_consumes(broker, topic):
    from confluent_kafka import Consumer

    ok(kp(broker, "topics", "create", topic, "--partitions", 2))
    ok(kp(broker, "produce", topic, "--key-separator", "\t", "--header", "src=kafkapy", "--compression", "snappy",
          input="".join(f"k{i}\tv{i}\n" for i in range(20))))
    c = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": f"cg-{topic}",
                  "auto.offset.reset": "earliest"})
    try:
        c.subscribe([topic])
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 20 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
    finally:
        c.close()
    assert sorted((m.key(), m.value()) for m in got) == sorted((f"k{i}".encode(), f"v{i}".encode())
                                                               for i in range(20))
    for m in got:
        assert m.headers() == [("src", b"kafkapy")]
        assert m.partition() == partition_for_key(m.key(), 2)


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_roundtrip(broker, topic):
    ok(kp(broker, "topics", "create", topic))
    ok(kp(broker, "produce", topic, "--key-separator", ":", "--compression", "gzip", input="a:1\nb:2\n"))
    r = subprocess.run(["kcat", "-C", "-b", broker.bootstrap_servers, "-t", topic, "-e", "-f", "%k=%s\\n"],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"a=1\nb=2\n"
    r = subprocess.run(["kcat", "-P", "-b", broker.bootstrap_servers, "-t", topic, "-K", ":", "-z", "zstd"],
                       input=b"c:3\nd:4\n", capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    r = ok(kp(broker, "consume", topic, "--offset", 2, "--timeout-ms", 1000, "--print-key"))
    assert r.stdout == "c\t3\nd\t4\n"
