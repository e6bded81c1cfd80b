#!/usr/bin/env python3
"""The throughput cost of TLS: the same confluent-kafka produce run over PLAINTEXT and SASL_SSL (SCRAM-SHA-512).

    .venv/bin/python scripts/bench_tls.py [--messages 200000] [--rounds 3] [--storage memory|disk] [--no-consume]

One kafkapy broker (a subprocess) with both listeners, certificates from kafkapy.tls (needs the openssl
command). Each round produces N x 100-byte messages (acks=all, linger.ms=5, one partition, as
scripts/bench_broker.py does) to a fresh topic over each listener, alternating which goes first, then consumes
them back (assign, no group) over the same listener. Medians over the rounds; the ratio is SASL_SSL/PLAINTEXT.
Not a test: the figures depend on the machine; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "compat_tests"))

from harness import BrokerProcess  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from bench_broker import create_topic, produce  # noqa: E402
from bench_broker import consume as _consume  # noqa: E402


def consume(conf: dict, topic: str, n: int) -> float:
    return _consume(conf, topic, n, group="bench-tls")

USER, PASSWORD = "bench", "bench-secret"


def client_confs(b: BrokerProcess, ca: str) -> dict[str, dict]:
    return {
        "PLAINTEXT": {"bootstrap.servers": f"127.0.0.1:{b.listener_port('PLAINTEXT')}"},
        "SASL_SSL": {"bootstrap.servers": f"127.0.0.1:{b.listener_port('SASL_SSL')}", "security.protocol": "SASL_SSL",
                     "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER, "sasl.password": PASSWORD,
                     "ssl.ca.location": ca},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--storage", choices=("memory", "disk"), default="memory")
    ap.add_argument("--no-consume", action="store_true")
    args = ap.parse_args()
    from kafkapy import tls

    n = args.messages
    with tempfile.TemporaryDirectory() as d:
        certs = Path(d) / "certs"
        certs.mkdir()
        tls.make_ca(str(certs))
        tls.make_cert(str(certs), "server", hosts=("localhost", "127.0.0.1"), server=True)
        b = BrokerProcess(storage=args.storage)
        b.start(Path(d) / "data", [
            "-o", "listeners=PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
            "-o", "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512",
            "-o", f"kafkapy.scram.users=SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
            "-o", f"ssl.keystore.location={certs / 'server.pem'}",
            "-o", f"ssl.truststore.location={certs / 'ca.pem'}",
        ])
        try:
            confs = client_confs(b, str(certs / "ca.pem"))
            results: dict[str, dict[str, list[float]]] = {k: {"produce": [], "consume": []} for k in confs}
            for r in range(args.rounds):
                order = list(confs) if r % 2 == 0 else list(reversed(confs))
                for name in order:
                    conf = confs[name]
                    topic = f"bench-tls-{name.lower()}-{r}"
                    create_topic(conf, topic)
                    pt = produce(conf, topic, n)
                    results[name]["produce"].append(pt)
                    line = f"round {r + 1} {name:<10} produce {n / pt:>9,.0f} msgs/s"
                    if not args.no_consume:
                        ct = consume(conf, topic, n)
                        results[name]["consume"].append(ct)
                        line += f"   consume {n / ct:>9,.0f} msgs/s"
                    print(line, flush=True)
        finally:
            b.stop()

    print(f"\nkafkapy ({args.storage} storage), {n:,} x 100 B, confluent-kafka acks=all linger.ms=5, "
          f"median of {args.rounds} rounds")
    med = {k: {op: statistics.median(v) for op, v in ops.items() if v} for k, ops in results.items()}
    for op in ("produce", "consume"):
        if op not in med["PLAINTEXT"]:
            continue
        for name in confs:
            t = med[name][op]
            print(f"  {op:<8} {name:<10} {n / t:>9,.0f} msgs/s  {n * 100 / t / 1e6:6.2f} MB/s  ({t:.2f} s)")
        ratio = med["PLAINTEXT"][op] / med["SASL_SSL"][op]
        print(f"  {op:<8} SASL_SSL/PLAINTEXT throughput: {ratio:.2f} ({(1 - ratio) * 100:.0f}% cost of TLS + SASL)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
