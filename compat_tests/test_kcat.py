"""kcat (librdkafka's command-line client, the Debian package) against the broker.

Topics are created with confluent-kafka's AdminClient (kcat cannot create topics); everything else is kcat:
metadata (-L), produce (-P with -K keys, -H headers, -z compression), consume (-C, -o, -e, -c, -f, -J),
offset lookup by time (-Q) and a balanced consumer group (-G).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
COMMON = ["-m", "10", "-X", "socket.timeout.ms=10000", "-X", "socket.connection.setup.timeout.ms=5000"]


class KcatError(AssertionError):
    pass


@pytest.fixture(scope="session")
def kcat_bin():
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        pytest.skip("kcat is not installed (Debian: apt-get install kcat)")
    return path


@pytest.fixture
def kcat(kcat_bin, broker):
    """``kcat("-C", "-t", topic, ..., input=b"...", timeout=30) -> stdout``; -b is filled in."""

    def run(*args, input: bytes | None = None, timeout: float = 30, check: bool = True) -> str:
        cmd = [kcat_bin, "-b", broker.bootstrap, *COMMON, *map(str, args)]
        try:
            proc = subprocess.run(cmd, input=input if input is not None else b"", capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise KcatError(f"{cmd} did not finish in {timeout}s\nstderr:\n{(exc.stderr or b'').decode()[-3000:]}"
                            ) from None
        out, err = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
        if check and proc.returncode != 0:
            raise KcatError(f"{cmd} exited {proc.returncode}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-3000:]}")
        return out

    return run


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict | None = None) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=10,
                                  request_timeout=15)
    futures[name].result(timeout=20)


def produce(kcat, topic, lines: list[str], *opts, partition=0, codec="none"):
    data = "".join(line + "\n" for line in lines).encode()
    args = ["-P", "-t", topic, "-z", codec, "-X", "acks=all", "-X", "message.timeout.ms=15000", *opts]
    if partition is not None:
        args += ["-p", partition]
    kcat(*args, input=data)


def consume_json(kcat, topic, *opts, partition=0, offset="beginning"):
    args = ["-C", "-t", topic, "-o", offset, "-e", "-J", *opts]
    if partition is not None:
        args += ["-p", partition]
    return [json.loads(line) for line in kcat(*args).splitlines() if line.strip()]


def pairs(flat):
    """kcat -J prints headers as a flat list [k1, v1, k2, v2, ...]."""
    flat = flat or []
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def test_metadata(kcat, broker, topic):
    create_topic(broker.bootstrap, topic, 3)
    meta = json.loads(kcat("-L", "-J", "-t", topic))
    brokers = {b["id"]: b["name"] for b in meta["brokers"]}
    assert broker.bootstrap in brokers.values(), f"advertised address is not {broker.bootstrap}: {brokers}"
    [t] = meta["topics"]
    assert t["topic"] == topic and "error" not in t
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2]
    for p in t["partitions"]:
        assert p["leader"] in brokers
        assert [r["id"] for r in p["replicas"]] == [p["leader"]]
    text = kcat("-L")
    assert f'topic "{topic}" with 3 partitions' in text
    assert "1 brokers" in text


@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume(kcat, broker, topic, codec):
    create_topic(broker.bootstrap, topic, 1)
    produce(kcat, topic, [f"key-{i}:value-{i}-" + "x" * 100 for i in range(10)], "-K:", "-H", "h1=one", "-H",
            "h2=", codec=codec)
    produce(kcat, topic, [f"plain-{i}" for i in range(10, 13)], codec=codec)
    msgs = consume_json(kcat, topic)
    assert [m["offset"] for m in msgs] == list(range(13))
    assert all(m["partition"] == 0 and m["topic"] == topic for m in msgs)
    for m in msgs[:10]:
        i = m["offset"]
        assert m["key"] == f"key-{i}"
        assert m["payload"] == f"value-{i}-" + "x" * 100
        assert pairs(m.get("headers")) == [("h1", "one"), ("h2", "")]
    for m in msgs[10:]:
        assert m["key"] is None
        assert m["payload"] == f"plain-{m['offset']}"
        assert not m.get("headers")
    now_ms = time.time() * 1000
    assert all(now_ms - 600_000 < m["ts"] <= now_ms + 60_000 for m in msgs)


def test_format_string_and_offsets(kcat, broker, topic):
    create_topic(broker.bootstrap, topic, 1)
    produce(kcat, topic, [f"k{i}|v{i}" for i in range(8)], "-K|", "-H", "n=1", codec="lz4")

    out = kcat("-C", "-t", topic, "-p", 0, "-o", "beginning", "-e", "-f", r"%p:%o:%k=%s;%h;%K;%S\n")
    assert out.splitlines() == [f"0:{i}:k{i}=v{i};n=1;2;2" for i in range(8)]
    # start at an absolute offset, stop after a count
    out = kcat("-C", "-t", topic, "-p", 0, "-o", 3, "-c", 2, "-e", "-f", r"%o %s\n")
    assert out.splitlines() == ["3 v3", "4 v4"]
    # relative to the end: the last two
    out = kcat("-C", "-t", topic, "-p", 0, "-o", -2, "-e", "-f", r"%o %s\n")
    assert out.splitlines() == ["6 v6", "7 v7"]
    # from the end: nothing new
    assert kcat("-C", "-t", topic, "-p", 0, "-o", "end", "-e", "-f", r"%o\n") == ""


def test_query_offset_by_timestamp(kcat, broker, topic):
    create_topic(broker.bootstrap, topic, 1)
    produce(kcat, topic, ["a", "b", "c"])
    msgs = consume_json(kcat, topic)
    assert len(msgs) == 3
    t0 = msgs[0]["ts"]
    out = kcat("-Q", "-t", f"{topic}:0:{t0}")
    assert f"{topic} [0] offset 0" in out, out
    out = kcat("-Q", "-t", f"{topic}:0:{msgs[-1]['ts'] + 3_600_000}")  # later than everything: the end
    assert f"{topic} [0] offset -1" in out or f"{topic} [0] offset 3" in out, out


def test_keyed_partitioning(kcat, broker, topic):
    create_topic(broker.bootstrap, topic, 4)
    keys = [f"user-{i % 6}" for i in range(24)]
    produce(kcat, topic, [f"{k}:{n}" for n, k in enumerate(keys)], "-K:", partition=None)
    seen = {}
    total = 0
    for p in range(4):
        msgs = consume_json(kcat, topic, partition=p)
        total += len(msgs)
        assert [m["offset"] for m in msgs] == list(range(len(msgs)))
        values = [int(m["payload"]) for m in msgs]
        assert values == sorted(values), "per-partition order lost"
        for m in msgs:
            assert seen.setdefault(m["key"], p) == p, f"key {m['key']} in two partitions"
    assert total == 24 and len(seen) == 6


def test_consumer_group(kcat, broker, topic):
    group = f"g-{topic}"
    create_topic(broker.bootstrap, topic, 2)
    produce(kcat, topic, [f"k{i}:v{i}" for i in range(10)], "-K:", partition=None)

    def group_consume(n):
        out = kcat("-G", group, "-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=10000",
                   "-c", n, "-e", "-f", r"%p %o %s\n", topic, timeout=60)
        return [line.split() for line in out.splitlines() if line.strip()]

    got = group_consume(10)
    assert sorted(v for _, _, v in got) == sorted(f"v{i}" for i in range(10))
    # the group's offsets were committed on close: a second run sees only what is new
    produce(kcat, topic, [f"k{i}:v{i}" for i in range(10, 13)], "-K:", partition=None)
    got = group_consume(3)
    assert sorted(v for _, _, v in got) == ["v10", "v11", "v12"]
