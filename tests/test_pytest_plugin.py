"""The pytest plugin, as a project that only installs kafkapy uses it: pytester writes a test file (no conftest,
no plugin option) into a temporary directory and runs pytest on it in a subprocess; the fixtures come from the
``pytest11`` entry point."""

from __future__ import annotations

import sys
from importlib import metadata

pytest_plugins = ["pytester"]

TEST_FILE = '''
import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

SEEN = []


def _consume(bootstrap, topic, n):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got, deadline = [], time.monotonic() + 20
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    return got


@pytest.mark.parametrize("n", [1, 3])
def test_roundtrip(kafkapy_bootstrap, kafka_topic, n):
    SEEN.append((kafkapy_bootstrap, kafka_topic))
    p = Producer({"bootstrap.servers": kafkapy_bootstrap})
    for i in range(n):
        p.produce(kafka_topic, f"v{i}".encode())
    assert p.flush(10) == 0
    assert _consume(kafkapy_bootstrap, kafka_topic, n) == [f"v{i}".encode() for i in range(n)]


@pytest.mark.kafka_topic(partitions=4, config={"cleanup.policy": "compact"})
def test_marker(kafkapy_broker, kafka_topic):
    SEEN.append((kafkapy_broker.bootstrap_servers, kafka_topic))
    md = AdminClient({"bootstrap.servers": kafkapy_broker.bootstrap_servers}).list_topics(kafka_topic, timeout=10)
    assert len(md.topics[kafka_topic].partitions) == 4


def test_one_broker_fresh_topics():
    bootstraps = {b for b, _ in SEEN}
    topics = [t for _, t in SEEN]
    assert len(bootstraps) == 1, bootstraps          # session-scoped broker
    assert len(set(topics)) == len(topics) == 3      # a new topic per test
    print("BOOTSTRAP", bootstraps.pop())
'''


def test_entry_point_is_registered():
    eps = [ep for ep in metadata.entry_points(group="pytest11") if ep.name == "kafkapy"]
    assert [ep.value for ep in eps] == ["kafkapy.pytest_plugin"]


def test_plugin_fixtures_with_confluent_kafka(pytester):
    pytester.makepyfile(test_uses_kafkapy=TEST_FILE)
    assert not (pytester.path / "conftest.py").exists()
    result = pytester.runpytest_subprocess("-v", "-s", "-p", "no:cacheprovider", timeout=240)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*BOOTSTRAP 127.0.0.1:*"])
    assert sys.executable   # the subprocess runs this interpreter, where kafkapy is installed
    # the fixtures come from the entry point: without the plugin they do not exist
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:kafkapy", timeout=240)
    result.stdout.fnmatch_lines(["*fixture 'kafka*' not found*"])


def test_plugin_trace_option(pytester):
    pytester.makepyfile(test_trace_opt='''
def test_produce(kafkapy_bootstrap, kafka_topic):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": kafkapy_bootstrap})
    p.produce(kafka_topic, b"x")
    assert p.flush(10) == 0
''')
    trace = pytester.path / "trace.jsonl"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--kafkapy-trace-file", str(trace),
                                           "--kafkapy-config", "num.partitions=2", timeout=240)
    result.assert_outcomes(passed=1)
    text = trace.read_text()
    assert '"api": "Produce"' in text and '"direction": "response"' in text


CLUSTER_TEST_FILE = '''
import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

SEEN = []


def _roundtrip(bootstrap, topic):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    p.produce(topic, b"hello")
    assert p.flush(20) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                return m.value()
    finally:
        c.close()


def test_three_brokers_by_default(kafkapy_cluster):
    SEEN.append(kafkapy_cluster.bootstrap_servers)
    assert len(kafkapy_cluster.bootstrap_servers.split(",")) == 3
    kafkapy_cluster.create_topic("replicated", 3, 3)
    md = AdminClient({"bootstrap.servers": kafkapy_cluster.bootstrap_servers}).list_topics("replicated", timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    assert all(len(p.replicas) == 3 for p in md.topics["replicated"].partitions.values())
    assert _roundtrip(kafkapy_cluster.bootstrap_servers, "replicated") == b"hello"


def test_a_killed_broker(kafkapy_cluster):
    SEEN.append(kafkapy_cluster.bootstrap_servers)
    kafkapy_cluster.kill(kafkapy_cluster.leader_for("replicated", 0))
    kafkapy_cluster.pause(next(n for n, node in kafkapy_cluster.nodes.items() if node.running))


def test_shared_and_healed(kafkapy_cluster):
    SEEN.append(kafkapy_cluster.bootstrap_servers)
    assert len(set(SEEN)) == 1                       # the same cluster for the same settings
    assert all(n.running and n.core.paused is None for n in kafkapy_cluster.nodes.values())
    assert _roundtrip(kafkapy_cluster.bootstrap_servers, "replicated") == b"hello"


@pytest.mark.kafkapy_cluster(brokers=2, config={"num.partitions": 4, "default.replication.factor": 2})
def test_marker(kafkapy_cluster):
    assert kafkapy_cluster.bootstrap_servers not in SEEN
    assert len(kafkapy_cluster.nodes) == 2
    kafkapy_cluster.create_topic("defaults", -1)
    md = AdminClient({"bootstrap.servers": kafkapy_cluster.bootstrap_servers}).list_topics("defaults", timeout=10)
    parts = md.topics["defaults"].partitions
    assert len(parts) == 4 and all(sorted(p.replicas) == [1, 2] for p in parts.values())
    print("CLUSTER", kafkapy_cluster.bootstrap_servers)
'''


def test_plugin_cluster_fixture(pytester):
    pytester.makepyfile(test_uses_cluster=CLUSTER_TEST_FILE)
    result = pytester.runpytest_subprocess("-v", "-s", "-p", "no:cacheprovider", timeout=240)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*CLUSTER 127.0.0.1:*,127.0.0.1:*"])
    # an unknown marker argument is a usage error, not a silent default
    pytester.makepyfile(test_bad_marker='''
import pytest

@pytest.mark.kafkapy_cluster(nodes=2)
def test_bad(kafkapy_cluster):
    pass
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_bad_marker.py", timeout=120)
    result.stdout.fnmatch_lines(["*unknown argument(s) nodes*"])
