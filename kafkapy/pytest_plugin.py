"""pytest plugin (registered through the ``pytest11`` entry point, so installing kafkapy is enough).

Fixtures:

- ``kafkapy_broker`` (session): an in-process, in-memory :class:`kafkapy.Broker` on a free port, started on
  first use and stopped at the end of the session.
- ``kafkapy_bootstrap`` (session): its ``host:port`` string, for ``bootstrap.servers``.
- ``kafka_topic`` (function): a fresh, unique topic name, already created on that broker (1 partition;
  ``@pytest.mark.kafka_topic(partitions=3, config={"cleanup.policy": "compact"})`` to change that).

- ``kafkapy_cluster`` (function, sharing a session's cluster): a :class:`kafkapy.Cluster` of 3 in-process,
  in-memory brokers with replication (``.bootstrap_servers``, ``.create_topic(name, partitions, replication_factor,
  config)``, ``.leader_for``, and the levers ``kill``, ``restart``, ``pause``, ``resume``, ``stop_broker``,
  ``move_leader``). ``@pytest.mark.kafkapy_cluster(brokers=5, config={"min.insync.replicas": 2})`` (on a test, a
  class or a module) sets the broker count and settings. One cluster is kept for the session and handed to every
  test that asks for the same count and settings (it is replaced, not kept alongside, when they change); after each
  test, brokers it killed, stopped or paused are restarted or resumed and its request control hooks removed, so the
  next test finds every broker running. Topics stay: use a name per test. ``--kafkapy-config`` settings apply to
  it too, under the marker's.

Options: ``--kafkapy-trace`` writes the broker's protocol trace (one JSON line per request/response) to
stderr, ``--kafkapy-trace-file PATH`` to a file; ``--kafkapy-config NAME=VALUE`` sets a broker setting
(repeatable). The same as ini keys: ``kafkapy_trace_file``, ``kafkapy_config`` (lines of NAME=VALUE).
"""

from __future__ import annotations

import re
import uuid

import pytest

_ILLEGAL = re.compile(r"[^a-zA-Z0-9._-]+")


def pytest_addoption(parser):
    group = parser.getgroup("kafkapy", "kafkapy broker fixtures")
    group.addoption("--kafkapy-trace", action="store_true", default=False,
                    help="trace the kafkapy_broker's requests and responses (JSON lines) to stderr")
    group.addoption("--kafkapy-trace-file", default=None, metavar="PATH",
                    help="write the kafkapy_broker's protocol trace to PATH")
    group.addoption("--kafkapy-config", action="append", default=[], metavar="NAME=VALUE",
                    help="a broker setting for kafkapy_broker, e.g. num.partitions=3 (repeatable)")
    parser.addini("kafkapy_trace_file", "write the kafkapy_broker's protocol trace to this file", default=None)
    parser.addini("kafkapy_config", "broker settings for kafkapy_broker, NAME=VALUE per line", type="linelist",
                  default=[])


def pytest_configure(config):
    config.addinivalue_line("markers", "kafka_topic(partitions=1, config=None): how the kafka_topic fixture "
                                       "creates this test's topic")
    config.addinivalue_line("markers", "kafkapy_cluster(brokers=3, config=None): the broker count and settings of "
                                       "the kafkapy_cluster fixture's cluster")


def _settings(config) -> dict[str, str]:
    out = {}
    for item in list(config.getini("kafkapy_config")) + list(config.getoption("kafkapy_config")):
        if "=" not in item:
            raise pytest.UsageError(f"kafkapy_config expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@pytest.fixture(scope="session")
def kafkapy_broker(pytestconfig):
    """An in-process, in-memory kafkapy broker for the whole session (``.bootstrap_servers``,
    ``.create_topic(name, partitions=1, config=None)``)."""
    from kafkapy.embedded import EmbeddedBroker

    trace = pytestconfig.getoption("kafkapy_trace_file") or pytestconfig.getini("kafkapy_trace_file") or None
    if trace is None and pytestconfig.getoption("kafkapy_trace"):
        trace = True
    broker = EmbeddedBroker(config=_settings(pytestconfig), trace=trace)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafkapy_bootstrap(kafkapy_broker) -> str:
    """``host:port`` of the session's kafkapy broker."""
    return kafkapy_broker.bootstrap_servers


@pytest.fixture
def kafka_topic(request, kafkapy_broker) -> str:
    """A fresh topic name, unique to this test, created on the session's kafkapy broker."""
    marker = request.node.get_closest_marker("kafka_topic")
    kwargs = dict(marker.kwargs) if marker else {}
    base = _ILLEGAL.sub("-", request.node.name).strip("-.")[:180] or "test"
    name = f"{base}-{uuid.uuid4().hex[:10]}"
    kafkapy_broker.create_topic(name, partitions=int(kwargs.get("partitions", 1)), config=kwargs.get("config"))
    return name


class _ClusterPool:
    """The session's one kafkapy.Cluster, kept while consecutive tests ask for the same count and settings."""

    def __init__(self):
        self.key = None
        self.cluster = None

    def get(self, brokers: int, config: dict[str, str]):
        from kafkapy.cluster.embedded import Cluster

        key = (brokers, tuple(sorted(config.items())))
        if self.cluster is not None and key != self.key:
            self.close()
        if self.cluster is None:
            self.cluster = Cluster(brokers, config=config).start()
            self.key = key
        return self.cluster

    def heal(self) -> None:
        """Every broker running again, none paused, no request control hooks; a cluster that cannot be healed is
        closed (the next test gets a new one)."""
        c = self.cluster
        if c is None:
            return
        try:
            for node, n in c.nodes.items():
                if n.core is None:
                    c.restart(node)
                elif n.core.paused is not None:
                    c.resume(node)
            c.call(lambda cl: [n.core.clear_controls() for n in cl.nodes.values() if n.core is not None])
        except Exception as e:  # noqa: BLE001 - a new cluster for the next test
            import warnings

            warnings.warn(f"kafkapy_cluster: could not restore the cluster after a test ({e!r}); the next test gets "
                          "a new one", stacklevel=1)
            self.close()

    def close(self) -> None:
        if self.cluster is not None:
            cluster, self.cluster, self.key = self.cluster, None, None
            cluster.stop()


@pytest.fixture(scope="session")
def _kafkapy_cluster_pool():
    pool = _ClusterPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def kafkapy_cluster(request, pytestconfig, _kafkapy_cluster_pool):
    """A :class:`kafkapy.Cluster` (3 in-memory brokers with replication, in this process); the marker
    ``@pytest.mark.kafkapy_cluster(brokers=N, config={...})`` sets its broker count and settings. Shared with the
    other tests of the session that ask for the same; healed after each test (brokers running, hooks removed)."""
    marker = request.node.get_closest_marker("kafkapy_cluster")
    args, kwargs = (marker.args, dict(marker.kwargs)) if marker else ((), {})
    brokers = int(kwargs.pop("brokers", args[0] if args else 3))
    config = dict(_settings(pytestconfig))
    config.update({k: str(v) for k, v in (kwargs.pop("config", None) or {}).items()})
    if kwargs:
        raise pytest.UsageError(f"kafkapy_cluster marker: unknown argument(s) {', '.join(sorted(kwargs))}")
    cluster = _kafkapy_cluster_pool.get(brokers, config)
    try:
        yield cluster
    finally:
        _kafkapy_cluster_pool.heal()
