"""Protocol trace: real clients' requests and responses show up decoded, filters work, records are summarised
(and decoded when asked), and tracing is off unless asked for."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kafkapy
from kafkapy.trace import Tracer, parse_apis, summarize_records
from wire.records import build_batch

ROOT = Path(__file__).resolve().parent.parent


def _produce_and_consume(bootstrap: str, topic: str, client_id: str = "trace-test", n: int = 3):
    from confluent_kafka import Consumer, Producer, TopicPartition

    p = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 50})
    for i in range(n):
        p.produce(topic, value=f"value-{i}".encode(), key=b"\xff\xfe" if i == 0 else f"key-{i}".encode(),
                  headers=[("h", b"hv")])
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "trace-g", "client.id": client_id + "-c",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.monotonic() + 15
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert got == [f"value-{i}".encode() for i in range(n)]


def test_confluent_produce_and_fetch_appear_decoded():
    events: list[dict] = []
    with kafkapy.Broker(trace=Tracer(callback=events.append, write=False)) as b:
        b.create_topic("traced")
        _produce_and_consume(b.bootstrap_servers, "traced")
    for ev in events:                       # every event is plain JSON data
        json.dumps(ev)
    produce_reqs = [e for e in events if e["api"] == "Produce" and e["direction"] == "request"]
    assert produce_reqs, [e["api"] for e in events]
    req = produce_reqs[0]
    assert req["api_key"] == 0 and req["client_id"] == "trace-test" and req["version"] >= 3
    assert req["peer"].startswith("127.0.0.1:")
    assert req["body"]["acks"] == -1
    [td] = req["body"]["topic_data"]
    assert td["name"] == "traced"
    [pd] = td["partition_data"]
    recs = pd["records"]
    assert recs["count"] == 3 and recs["size"] == sum(bt["size"] for bt in recs["batches"])
    [batch] = recs["batches"]
    assert batch["count"] == 3 and batch["last_offset"] - batch["base_offset"] == 2
    assert batch["compression"] == "none" and batch["transactional"] is False
    assert "records" not in batch                      # summary only unless asked
    # the response with the same correlation id carries the offsets the broker gave
    resp = next(e for e in events if e["direction"] == "response" and e["api"] == "Produce"
                and e["correlation_id"] == req["correlation_id"] and e["peer"] == req["peer"])
    assert resp["version"] == req["version"] and resp["elapsed_ms"] >= 0
    part = resp["body"]["responses"][0]["partition_responses"][0]
    assert part["error_code"] == 0 and part["base_offset"] == 0
    # a Fetch response brings the batch back, with offsets assigned by the broker
    fetches = [e for e in events if e["api"] == "Fetch" and e["direction"] == "response"]
    with_data = [p for e in fetches for t in e["body"]["responses"] for p in t["partitions"]
                 if p["records"] and p["records"]["count"]]
    assert with_data, fetches
    assert with_data[0]["high_watermark"] == 3
    fb = with_data[0]["records"]["batches"][0]
    assert (fb["base_offset"], fb["last_offset"], fb["count"]) == (0, 2, 3)
    # Fetch v13+ names topics by id: UUIDs are strings
    fetch_reqs = [e for e in events if e["api"] == "Fetch" and e["direction"] == "request"]
    if fetch_reqs[0]["version"] >= 13:
        t = fetch_reqs[0]["body"]["topics"][0]
        assert isinstance(t["topic_id"], str) and len(t["topic_id"]) == 36
    # ApiVersions and Metadata are there too, in order per connection
    assert {"ApiVersions", "Metadata", "Produce", "Fetch"} <= {e["api"] for e in events}


def test_records_decoded_when_asked(tmp_path):
    path = tmp_path / "trace.jsonl"
    with kafkapy.Broker(trace={"out": str(path), "records": True, "apis": ["Produce"]}) as b:
        b.create_topic("decoded")
        _produce_and_consume(b.bootstrap_servers, "decoded")
    lines = path.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert events and {e["api"] for e in events} == {"Produce"}
    req = next(e for e in events if e["direction"] == "request")
    [batch] = req["body"]["topic_data"][0]["partition_data"][0]["records"]["batches"]
    recs = batch["records"]
    assert [r["offset"] for r in recs] == [0, 1, 2]
    assert recs[0]["key"] == {"base64": base64.b64encode(b"\xff\xfe").decode()}   # not UTF-8
    assert recs[1]["key"] == "key-1" and recs[1]["value"] == "value-1"
    assert recs[2]["headers"] == [{"key": "h", "value": "hv"}]
    assert isinstance(recs[0]["timestamp"], int)


def test_filters_by_api_and_client_id():
    by_api: list[dict] = []
    by_client: list[dict] = []
    with kafkapy.Broker() as b:
        b.call(lambda core: setattr(core, "tracer", Tracer(callback=by_api.append, write=False, apis="Produce,Metadata")))
        b.create_topic("filtered")
        _produce_and_consume(b.bootstrap_servers, "filtered", client_id="wanted")
        b.call(lambda core: setattr(core, "tracer", Tracer(callback=by_client.append, write=False,
                                                           client_ids=["other"])))
        _produce_and_consume(b.bootstrap_servers, "filtered", client_id="unwanted")
        _produce_and_consume(b.bootstrap_servers, "filtered", client_id="other")
    assert {e["api"] for e in by_api} == {"Produce", "Metadata"}
    assert by_client and {e["client_id"] for e in by_client} == {"other"}
    assert "Produce" in {e["api"] for e in by_client}
    assert parse_apis("produce, 1") == {0, 1}
    with pytest.raises(ValueError, match="unknown api"):
        Tracer(apis="Prodcue")


def test_compressed_batches_from_aiokafka_are_summarised():
    from aiokafka import AIOKafkaProducer

    events: list[dict] = []

    async def run(bootstrap):
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", client_id="aio", linger_ms=50)
        await p.start()
        try:
            futs = [await p.send("gz", f"m{i}".encode(), key=b"k") for i in range(5)]
            await asyncio.wait_for(asyncio.gather(*futs), 15)
        finally:
            await p.stop()

    async def main():
        async with kafkapy.Broker(trace=Tracer(callback=events.append, write=False, records=True)) as b:
            b.create_topic("gz")
            await run(b.bootstrap_servers)

    asyncio.run(main())
    req = next(e for e in events if e["api"] == "Produce" and e["direction"] == "request")
    assert req["client_id"] == "aio"
    batches = req["body"]["topic_data"][0]["partition_data"][0]["records"]["batches"]
    assert sum(bt["count"] for bt in batches) == 5
    assert {bt["compression"] for bt in batches} == {"gzip"}
    assert [r["value"] for bt in batches for r in bt["records"]] == [f"m{i}" for i in range(5)]


def test_summary_of_several_batches_and_a_cut_fetch():
    b1 = build_batch([(None, b"a"), (b"k", b"b")], base_offset=10, producer_id=7, producer_epoch=1, base_sequence=0)
    b2 = build_batch([(None, b"c")], base_offset=12, compression=4)
    s = summarize_records(b1 + b2 + b2[:30])
    assert s["count"] == 3 and s["size"] == len(b1) + len(b2) + 30
    assert [(x["base_offset"], x["last_offset"], x["count"]) for x in s["batches"]] == [(10, 11, 2), (12, 12, 1)]
    assert s["batches"][0]["producer_id"] == 7 and s["batches"][1]["compression"] == "zstd"
    assert s["trailing_partial_bytes"] == 30
    assert summarize_records(b"")["count"] == 0 and summarize_records(None) is None


def test_off_by_default_and_cli_switch(tmp_path):
    with kafkapy.Broker() as b:
        assert b.core.tracer is None
    trace_file = tmp_path / "cli-trace.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKAPY_")}
    for args, expect in (([], False), (["--trace-file", str(trace_file), "--trace-api", "Metadata"], True)):
        p = subprocess.Popen([sys.executable, "-m", "kafkapy", "--host", "127.0.0.1", "--port", "0", "--storage",
                              "memory", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
        try:
            line = p.stdout.readline()
            assert line.startswith("kafkapy ready at "), line
            from confluent_kafka.admin import AdminClient

            md = AdminClient({"bootstrap.servers": line.split()[-1], "client.id": "cli"}).list_topics(timeout=10)
            assert md.brokers
        finally:
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=15)
        assert p.returncode == 0
        assert ('"direction"' in err) is False      # nothing on stderr but logs
        if expect:
            events = [json.loads(x) for x in trace_file.read_text().splitlines()]
            assert {e["api"] for e in events} == {"Metadata"}
            assert {e["direction"] for e in events} == {"request", "response"}
            assert all(e["client_id"] == "cli" for e in events)
            resp = next(e for e in events if e["direction"] == "response")
            assert resp["body"]["brokers"][0]["host"] == "127.0.0.1"


def test_cli_trace_to_stderr():
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKAPY_")}
    p = subprocess.Popen([sys.executable, "-m", "kafkapy", "--host", "127.0.0.1", "--port", "0", "--storage",
                          "memory", "--trace", "--trace-client-id", "cli2", "--log-level", "WARNING"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline()
        assert line.startswith("kafkapy ready at "), line
        from confluent_kafka.admin import AdminClient

        AdminClient({"bootstrap.servers": line.split()[-1], "client.id": "cli2"}).list_topics(timeout=10)
        AdminClient({"bootstrap.servers": line.split()[-1], "client.id": "cli3"}).list_topics(timeout=10)
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=15)
    events = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert events and {e["client_id"] for e in events} == {"cli2"}
    assert {"ApiVersions", "Metadata"} <= {e["api"] for e in events}
