"""pytest plugin (registered through the ``pytest11`` entry point, so installing kafkapy is enough).

Fixtures:

- ``kafkapy_broker`` (session): an in-process, in-memory :class:`kafkapy.Broker` on a free port, started on
  first use and stopped at the end of the session.
- ``kafkapy_bootstrap`` (session): its ``host:port`` string, for ``bootstrap.servers``.
- ``kafka_topic`` (function): a fresh, unique topic name, already created on that broker (1 partition;
  ``@pytest.mark.kafka_topic(partitions=3, config={"cleanup.policy": "compact"})`` to change that).

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
