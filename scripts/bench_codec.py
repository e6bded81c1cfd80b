"""Codec micro-benchmark: our generated codec vs kio vs kafka-python's protocol classes.

    .venv/bin/python scripts/bench_codec.py [--profile]

Three cases, message bodies only (no request/response header, no size prefix):

- decode ProduceRequest v9 (1 topic, 3 partitions, 1 KiB of records each) from bytes;
- encode FetchResponse v16 (1 topic, 3 partitions, 1 KiB of records each) to bytes;
- encode MetadataResponse v12 (100 topics x 3 partitions, 1 broker) to bytes.

Each contender gets the same message: we build it with our classes, encode it, and the others decode those
bytes into their own objects (each encoder's output is checked against ours before timing). Timing is
``timeit`` with ``autorange`` to pick the loop count, then 7 repeats; the median per-call time is reported.

Contenders:
- ours: ``protocol.decode`` / ``protocol.encode`` (generated straight-line Python);
- kio: ``entity_reader`` (Rust extension, ``kio._kio_native``) and ``entity_writer`` (pure Python);
- kafka-python 3.0.12: the JSON-schema ``ApiMessage`` classes its client uses (``kafka.protocol.producer``
  etc., with compiled per-version encoders/decoders);
- kafka-python "old" ``Struct``/``Schema`` classes (``kafka.protocol.old``), which stop at ProduceRequest v8,
  FetchResponse v11 and MetadataResponse v8, so they are timed at those versions (marked in the table).

``--profile`` runs cProfile over our three code paths and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import timeit
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wire import protocol  # noqa: E402

REPEAT = 7
RECORDS = os.urandom(1024)


# ---------------------------------------------------------------- the messages (ours)

def produce_request():
    m = protocol.module("produce_request")
    return m.ProduceRequest(
        transactional_id=None, acks=-1, timeout_ms=30000,
        topic_data=[m.TopicProduceData(name="bench-topic", partition_data=[
            m.PartitionProduceData(index=i, records=RECORDS) for i in range(3)])])


def fetch_response():
    m = protocol.module("fetch_response")
    return m.FetchResponse(
        throttle_time_ms=0, error_code=0, session_id=123,
        responses=[m.FetchableTopicResponse(topic="bench-topic", topic_id=uuid.UUID(int=0x1234), partitions=[
            m.PartitionData(partition_index=i, error_code=0, high_watermark=1000 + i, last_stable_offset=1000 + i,
                            log_start_offset=0, aborted_transactions=[], preferred_read_replica=-1,
                            records=RECORDS)
            for i in range(3)])])


def metadata_response():
    m = protocol.module("metadata_response")
    return m.MetadataResponse(
        throttle_time_ms=0,
        brokers=[m.MetadataResponseBroker(node_id=1, host="localhost", port=9092, rack=None)],
        cluster_id="kafkapy-bench-cluster", controller_id=1,
        topics=[m.MetadataResponseTopic(
            error_code=0, name=f"topic-{t:03d}", topic_id=uuid.UUID(int=t + 1), is_internal=False,
            partitions=[m.MetadataResponsePartition(
                error_code=0, partition_index=p, leader_id=1, leader_epoch=0, replica_nodes=[1], isr_nodes=[1],
                offline_replicas=[]) for p in range(3)],
            topic_authorized_operations=-2147483648) for t in range(100)],
        cluster_authorized_operations=-2147483648)


# (label, api key, our module, version, message factory, direction, kafka-python old version)
CASES = [
    ("decode ProduceRequest v9", 0, "produce_request", 9, produce_request, "decode", 8),
    ("encode FetchResponse v16", 1, "fetch_response", 16, fetch_response, "encode", 11),
    ("encode MetadataResponse v12", 3, "metadata_response", 12, metadata_response, "encode", 8),
]


# ---------------------------------------------------------------- contenders

def ours(case):
    _label, _key, mod_name, version, make, direction, _old = case
    mod = protocol.module(mod_name)
    msg = make()
    raw = protocol.encode(mod, version, msg)
    decode, encode = protocol.decode, protocol.encode
    if direction == "decode":
        assert decode(mod, version, raw)[0] == msg
        return (lambda: decode(mod, version, raw)), version
    return (lambda: encode(mod, version, msg)), version


def kio(case):
    from kio.index import load_entity_schema
    from kio.schema.index import api_key_map
    from kio.serial import entity_reader, entity_writer
    from kio.static.constants import EntityType

    _label, key, mod_name, version, make, direction, _old = case
    etype = EntityType.request if mod_name.endswith("_request") else EntityType.response
    cls = load_entity_schema(api_key_map[key], version, etype)
    raw = protocol.encode(protocol.module(mod_name), version, make())
    read, write = entity_reader(cls), entity_writer(cls)
    obj, size = read(raw, 0)
    assert size == len(raw)
    if direction == "decode":
        return (lambda: read(raw, 0)), version

    def enc():
        buf = io.BytesIO()
        write(buf, obj)
        return buf.getvalue()

    assert enc() == raw, "kio's encoding differs from ours"
    return enc, version


def kafka_python(case):
    from kafka.protocol.consumer import FetchResponse
    from kafka.protocol.metadata import MetadataResponse
    from kafka.protocol.producer import ProduceRequest

    _label, key, mod_name, version, make, direction, _old = case
    cls = {0: ProduceRequest, 1: FetchResponse, 3: MetadataResponse}[key]
    raw = protocol.encode(protocol.module(mod_name), version, make())
    obj = cls.decode(raw, version=version)
    if direction == "decode":
        return (lambda: cls.decode(raw, version=version)), version
    # a decoded ApiMessage keeps its version (and has no _header slot, so encode(version=...) would fail)
    assert obj.API_VERSION == version
    assert bytes(obj.encode()) == raw, "kafka-python's encoding differs from ours"
    return obj.encode, version


def kafka_python_old(case):
    from kafka.protocol.old.fetch import FetchResponse
    from kafka.protocol.old.metadata import MetadataResponse
    from kafka.protocol.old.produce import ProduceRequest

    _label, key, mod_name, _version, make, direction, version = case
    cls = {0: ProduceRequest, 1: FetchResponse, 3: MetadataResponse}[key][version]
    raw = protocol.encode(protocol.module(mod_name), version, make())
    obj = cls.decode(raw)
    if direction == "decode":
        return (lambda: cls.decode(raw)), version
    assert bytes(obj.encode()) == raw, "kafka-python (old)'s encoding differs from ours"
    return obj.encode, version


CONTENDERS = [("ours", ours), ("kio", kio), ("kafka-python", kafka_python), ("kafka-python old", kafka_python_old)]


def measure(fn) -> float:
    """Median microseconds per call over REPEAT runs of an autoranged loop."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    runs = timer.repeat(repeat=REPEAT, number=number)
    return statistics.median(runs) / number * 1e6


def profile():
    for case in CASES:
        fn, _ = ours(case)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(2000):
            fn()
        prof.disable()
        print(f"\n==== cProfile: ours, {case[0]} (2000 calls)")
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="cProfile our code paths afterwards")
    args = parser.parse_args()

    import kafka
    import kio
    import kio._kio_native as native
    from kio.serial import entity_reader

    print(f"Python {sys.version.split()[0]}; kio {kio.__version__} (decode: native extension "
          f"{Path(native.__file__).name}, entity_reader is {type(entity_reader).__name__}; encode: pure Python "
          f"entity_writer); kafka-python {kafka.__version__}")
    print(f"median of {REPEAT} runs (timeit autorange), microseconds per call\n")

    names = [n for n, _ in CONTENDERS]
    widths = [28] + [18] * len(names) + [12, 15]
    head = ["case"] + names + ["ours/kio", "ours/kafka-py"]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True))))
    results = {}
    for case in CASES:
        row = {}
        for name, make in CONTENDERS:
            fn, version = make(case)
            row[name] = (measure(fn), version)
        results[case[0]] = row
        cells = [case[0]]
        for name in names:
            us, version = row[name]
            cells.append(f"{us:.1f}" + ("" if version == case[3] else f" (v{version})"))
        ours_us = row["ours"][0]
        cells.append(f"{ours_us / row['kio'][0]:.2f}")
        cells.append(f"{ours_us / row['kafka-python'][0]:.2f}")
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))))

    print("\n(vN) = kafka-python's old Struct/Schema classes stop below the requested version; timed at vN.")
    misses = []
    for label, r in results.items():
        us = r["ours"][0]
        if us >= r["kafka-python"][0] or us >= r["kafka-python old"][0]:
            misses.append(f"{label}: not faster than kafka-python")
        if us > 4 * r["kio"][0]:
            misses.append(f"{label}: {us / r['kio'][0]:.2f}x kio (> 4x)")
    print("target (faster than kafka-python on all three, within 4x of kio):",
          "met" if not misses else "MISSED: " + "; ".join(misses))
    if args.profile:
        profile()


if __name__ == "__main__":
    main()
