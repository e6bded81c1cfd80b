"""The short version of scripts/stress_crash.py: 3 SIGKILLs of the broker at random moments under an idempotent
producer (acks=all) and a consumer group; every acknowledged record present exactly once and in order, committed
offsets never backwards, every log file passes a full CRC scan."""

from __future__ import annotations

import importlib.util
import sys

from harness import ROOT


def _stress_module():
    spec = importlib.util.spec_from_file_location("kafkapy_stress_crash", ROOT / "scripts" / "stress_crash.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_three_kills_lose_nothing_acknowledged(tmp_path):
    r = _stress_module().run_stress(kills=3, max_seconds=25, partitions=3, seed=20251125, data_dir=tmp_path / "data",
                                    min_gap=0.5, max_gap=1.5)
    print(r)
    assert r["kills"] == 3
    assert r["records_acked"] > 1000 and r["commits_acked"] > 0
    assert not r["lost"] and not r["duplicated"] and not r["out_of_order_partitions"], r
    assert not r["commits_backwards"], r["commits_backwards"]
    assert r["log_scan"]["problems"] == [] and r["log_scan"]["batches"] > 0
    assert r["ok"]
