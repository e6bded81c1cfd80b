"""Fixtures for the compat tests: a running broker, the Java client, fresh topic names.

By default the broker is ``python -m kafkapy ... --storage disk``; see harness.py for running the suite
against another broker (KAFKAPY_BROKER_CMD / KAFKAPY_BROKER_READY).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BrokerProcess, java_available, java_client, unique_topic  # noqa: E402


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One broker for the whole session (disk storage). ``.bootstrap``, ``.data_dir``, ``.restart()``,
    ``.kill()``. A test that kills or restarts it must leave it running; tests that crash a broker on
    purpose should start their own with ``broker_factory``."""
    proc = BrokerProcess(storage="disk")
    proc.start(tmp_path_factory.mktemp("broker") / "data")
    try:
        yield proc
    finally:
        rc = proc.stop()
        if rc not in (0, None, -9):
            print(f"warning: broker exited with code {rc} on SIGTERM\n{proc.log_tail(2000)}", file=sys.stderr)


@pytest.fixture
def broker_factory(tmp_path):
    """Start extra brokers owned by one test: ``b = broker_factory(storage="memory", extra_args=[...])``;
    each is stopped (SIGTERM, then SIGKILL) when the test ends."""
    started: list[BrokerProcess] = []

    def start(storage: str = "disk", extra_args=(), data_dir=None) -> BrokerProcess:
        proc = BrokerProcess(storage=storage)
        started.append(proc)
        return proc.start(data_dir or tmp_path / f"broker{len(started)}" / "data", extra_args)

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def java():
    """The Java client runner: ``java(bootstrap, "produce", topic, 10, ...) -> list[dict]``.

    Skips only when java/javac are not installed; failing to fetch or compile kafka-clients is an error."""
    reason = java_available()
    if reason:
        pytest.skip(f"Java client tests need a JDK: {reason}")
    return java_client()


@pytest.fixture
def topic(request):
    """A fresh, unique topic name for this test."""
    return unique_topic(request.node.name)
