"""200 concurrent connections (produce, fetch, metadata, group heartbeats) against a broker subprocess for a
bounded time: no errors, no request slower than the clients' request timeout, and a flat RSS.
The mix and the client are scripts/bench_load.py (which also reports the figures)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys

from harness import ROOT, BrokerProcess

DURATION = float(os.environ.get("KAFKAPY_LOAD_SECONDS", "12"))


def _bench_load():
    spec = importlib.util.spec_from_file_location("kafkapy_bench_load", ROOT / "scripts" / "bench_load.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_200_connections_mixed_load(tmp_path):
    bench = _bench_load()
    broker = BrokerProcess(storage="disk").start(tmp_path / "data")
    try:
        result = asyncio.run(asyncio.wait_for(
            bench.run_load(broker.bootstrap, connections=200, duration=DURATION, rss_of=bench.rss_of_pid(broker.pid)),
            DURATION + 60))
        assert broker.is_running()
    finally:
        broker.stop()
    print(result)
    assert result["errors"] == 0, result["first_errors"]
    apis = result["apis"]
    for api in ("Produce", "Fetch", "Metadata", "Heartbeat", "JoinGroup", "SyncGroup"):
        assert apis.get(api, {}).get("count", 0) > 0, f"no {api} request completed"
    assert apis["Heartbeat"]["count"] >= 30 * DURATION   # 30 members, one heartbeat per ~100 ms each
    # no stall: every request well inside the clients' request.timeout.ms (30 s), heartbeats inside a session
    assert result["all"]["max_ms"] < bench.REQUEST_TIMEOUT * 1000 / 3, result["all"]
    assert apis["Heartbeat"]["max_ms"] < 3000, apis["Heartbeat"]
    # memory: after the first quarter (connections open, caches warm) the broker's RSS stays flat
    rss = [mb for t, mb in result["broker_rss_MB"] if t >= DURATION / 4]
    assert rss and max(rss) - rss[0] < 40, result["broker_rss_MB"]
