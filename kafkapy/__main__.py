"""``kafkapy`` / ``python -m kafkapy``: start a broker (``kafkapy topics|produce|consume|groups``: the tools;
``kafkapy cluster --brokers 3``: several brokers with replication in one process; ``kafkapy --store etcd --etcd URL
--node-id N``: one broker of a cluster coordinated through etcd, one process each).

Prints exactly one line to stdout when ready: ``kafkapy ready at HOST:PORT``, the address it listens
on (with port 0, the port it took); a cluster: ``kafkapy cluster ready at HOST:PORT,HOST:PORT,...``, its bootstrap
servers. Everything else is logged to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import sys

from kafkapy.config import BrokerConfig, ConfigError, default_data_dir, env_properties, load_properties_file


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="kafkapy",
        description="A Kafka-compatible broker. Every option has an environment variable (shown in brackets); "
                    "Kafka broker settings can also be given as KAFKA_* variables (KAFKA_NUM_PARTITIONS=3) or in a "
                    "server.properties file.",
        epilog="Tools for a running broker: kafkapy topics|produce|consume|groups --help. Several brokers with "
               "replication in one process: kafkapy cluster --help.")
    p.add_argument("--host", default=env("KAFKAPY_HOST", "localhost"),
                   help="listen address (KAFKAPY_HOST; default localhost)")
    p.add_argument("--port", type=int, default=int(env("KAFKAPY_PORT", "9092")),
                   help="listen port, 0 picks a free one (KAFKAPY_PORT; default 9092)")
    p.add_argument("--advertised-host", default=env("KAFKAPY_ADVERTISED_HOST"),
                   help="host clients are told to connect to (KAFKAPY_ADVERTISED_HOST; default: the listen host)")
    p.add_argument("--advertised-port", type=int, default=int(env("KAFKAPY_ADVERTISED_PORT", "0")) or None,
                   help="port clients are told to connect to (KAFKAPY_ADVERTISED_PORT; default: the bound port)")
    p.add_argument("--data-dir", default=env("KAFKAPY_DATA_DIR"),
                   help=f"log directory (KAFKAPY_DATA_DIR, or log.dirs; default {default_data_dir()})")
    p.add_argument("--storage", choices=("disk", "memory"), default=env("KAFKAPY_STORAGE", "disk"),
                   help="disk (default) or memory (nothing written, for tests) (KAFKAPY_STORAGE)")
    p.add_argument("--node-id", type=int, default=None, help="broker/node id (KAFKAPY_NODE_ID, node.id; default 1)")
    p.add_argument("--cluster-id", default=env("KAFKAPY_CLUSTER_ID"),
                   help="cluster id (KAFKAPY_CLUSTER_ID); default: generated once, kept in meta.properties")
    k = p.add_argument_group("cluster", "a broker of a cluster whose metadata lives in etcd (needs the cluster extra: "
                                        "pip install 'kafkapy[cluster]'); every broker gets its own --node-id")
    k.add_argument("--store", choices=("none", "etcd"), default=env("KAFKAPY_STORE"),
                   help="none: a single broker (default); etcd: join the cluster in --etcd "
                        "(KAFKAPY_STORE, kafkapy.store)")
    k.add_argument("--etcd", default=env("KAFKAPY_ETCD"), metavar="URL",
                   help="etcd endpoint, http://host:port (KAFKAPY_ETCD, kafkapy.etcd.endpoints; "
                        "default http://127.0.0.1:2379)")
    k.add_argument("--cluster-prefix", default=env("KAFKAPY_CLUSTER_PREFIX"), metavar="NAME",
                   help="the cluster's name in etcd, keys under /kafkapy/NAME/, so several clusters can share one "
                        "etcd (KAFKAPY_CLUSTER_PREFIX, kafkapy.cluster.prefix; default 'default')")
    p.add_argument("--config", default=env("KAFKAPY_CONFIG"), metavar="server.properties",
                   help="Kafka-style properties file with broker settings (KAFKAPY_CONFIG)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="NAME=VALUE",
                   help="a broker setting, e.g. -o num.partitions=3 (repeatable; beats file and environment)")
    p.add_argument("--log-level", default=env("KAFKAPY_LOG_LEVEL", "INFO"),
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="(KAFKAPY_LOG_LEVEL; default INFO)")
    t = p.add_argument_group("protocol trace", "one JSON line per request and per response, decoded")
    t.add_argument("--trace", action="store_true", default=env("KAFKAPY_TRACE", "").lower() in ("1", "true", "yes"),
                   help="trace requests and responses to stderr (KAFKAPY_TRACE=1)")
    t.add_argument("--trace-file", default=env("KAFKAPY_TRACE_FILE"), metavar="PATH",
                   help="write the trace to PATH (appended) instead of stderr; implies --trace (KAFKAPY_TRACE_FILE)")
    t.add_argument("--trace-api", action="append", default=_env_list("KAFKAPY_TRACE_API"), metavar="API[,API]",
                   help="trace only these apis, Kafka's names (Produce,Fetch,JoinGroup); implies --trace "
                        "(repeatable; KAFKAPY_TRACE_API)")
    t.add_argument("--trace-client-id", action="append", default=_env_list("KAFKAPY_TRACE_CLIENT_ID"),
                   metavar="ID[,ID]", help="trace only requests with this client id; implies --trace "
                                           "(repeatable; KAFKAPY_TRACE_CLIENT_ID)")
    t.add_argument("--trace-records", action="store_true",
                   default=env("KAFKAPY_TRACE_RECORDS", "").lower() in ("1", "true", "yes"),
                   help="decode the records of record batches (keys, values, headers), not just a summary; "
                        "implies --trace (KAFKAPY_TRACE_RECORDS=1)")
    c = p.add_argument_group("web console", "topics, messages, groups and a live trace in a browser; "
                                            "Prometheus metrics at /metrics")
    c.add_argument("--console", action="store_true",
                   default=env("KAFKAPY_CONSOLE", "").lower() in ("1", "true", "yes"),
                   help="serve the web console and /metrics (KAFKAPY_CONSOLE=1)")
    c.add_argument("--console-port", type=int, default=int(env("KAFKAPY_CONSOLE_PORT", "9080")),
                   help="console port, 0 picks a free one (KAFKAPY_CONSOLE_PORT; default 9080)")
    c.add_argument("--console-host", default=env("KAFKAPY_CONSOLE_HOST"),
                   help="console listen address (KAFKAPY_CONSOLE_HOST; default: --host)")
    return p


def _env_list(name: str) -> list[str]:
    v = os.environ.get(name)
    return [v] if v else []


def tracer_from_args(args):
    """A kafkapy.trace.Tracer when any --trace* option is given, else None (tracing off costs nothing)."""
    if not (args.trace or args.trace_file or args.trace_api or args.trace_client_id or args.trace_records):
        return None
    from kafkapy.trace import Tracer

    return Tracer(args.trace_file, apis=args.trace_api or None, client_ids=args.trace_client_id or None,
                  records=args.trace_records)


def config_from_args(args, environ=os.environ) -> BrokerConfig:
    props: dict[str, str] = {}
    if args.config:
        props.update(load_properties_file(args.config))
    props.update(env_properties(dict(environ)))
    for o in args.override:
        if "=" not in o:
            raise ConfigError(f"--override expects NAME=VALUE, got {o!r}")
        k, v = o.split("=", 1)
        props[k.strip()] = v.strip()
    data_dir = args.data_dir or props.pop("log.dirs", None) or props.pop("log.dir", None)
    if data_dir and "," in data_dir:
        raise ConfigError("kafkapy uses a single log directory; log.dirs lists several")
    node_id = args.node_id
    if node_id is None:
        node_id = int(environ.get("KAFKAPY_NODE_ID") or props.get("node.id") or props.get("broker.id") or 1)
    for opt, name in ((args.store, "kafkapy.store"), (args.etcd, "kafkapy.etcd.endpoints"),
                      (args.cluster_prefix, "kafkapy.cluster.prefix")):
        if opt:
            props[name] = opt
    cluster_id = args.cluster_id or props.pop("cluster.id", None)
    if cluster_id is None and props.get("kafkapy.store", "none").strip().lower() == "etcd":
        # every broker of the cluster must agree without talking first: the id follows from the cluster's name
        cluster_id = f"kafkapy-{props.get('kafkapy.cluster.prefix') or 'default'}"
    storage = args.storage
    return BrokerConfig(
        host=args.host, port=args.port, advertised_host=args.advertised_host, advertised_port=args.advertised_port,
        data_dir=None if storage == "memory" else (data_dir or default_data_dir()), storage=storage,
        node_id=node_id, cluster_id=cluster_id, log_level=args.log_level, properties=props)


def store_from_config(config: BrokerConfig):
    """The metadata store ``kafkapy.store`` asks for: None (a single broker) or an EtcdStore (not yet connected).
    Raises ConfigError with a one-line reason (the etcd client not installed, a bad endpoint)."""
    if config.get("kafkapy.store") != "etcd":
        return None
    from kafkapy.cluster.etcd_store import EtcdStore, aetcd_missing
    from kafkapy.cluster.store import StoreError

    if aetcd_missing():
        raise ConfigError("--store etcd needs the etcd client: pip install 'kafkapy[cluster]' "
                          "(the aetcd package is not installed)")
    endpoints = [e.strip() for e in (config.get("kafkapy.etcd.endpoints") or "").split(",") if e.strip()]
    if len(endpoints) != 1:
        raise ConfigError(f"kafkapy.etcd.endpoints: one etcd endpoint expected, got {endpoints or 'none'}")
    name = (config.get("kafkapy.cluster.prefix") or "default").strip("/")
    if not name:
        raise ConfigError("kafkapy.cluster.prefix must not be empty")
    try:
        return EtcdStore(endpoints[0], f"/kafkapy/{name}/")
    except StoreError as e:
        raise ConfigError(str(e)) from None


async def serve(config: BrokerConfig, tracer=None, console: tuple[str, int] | None = None) -> int:
    from kafkapy.broker import Broker

    store = store_from_config(config)
    try:
        return await _serve(Broker(config, store=store), config, tracer, console)
    finally:
        if store is not None:
            try:
                await store.close()
            except Exception as e:  # noqa: BLE001 - closing a connection that is already gone
                logging.getLogger("kafkapy").debug("closing the metadata store: %s", e)


async def _serve(broker, config: BrokerConfig, tracer, console) -> int:
    broker.tracer = tracer
    if console is not None:
        from kafkapy.console import Console

        broker.console = Console(broker, *console)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        host, port = await broker.start()
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            logging.getLogger("kafkapy").error("cannot listen on %s:%d: the port is already in use",
                                               config.host, config.port)
        else:
            logging.getLogger("kafkapy").error("cannot start: %s", e)
        await broker.stop()
        return 2
    except Exception as e:
        from kafkapy.cluster.store import StoreError

        if broker.cluster is None or not isinstance(e, StoreError):
            raise
        logging.getLogger("kafkapy").error("cannot join the cluster: %s", e)
        await broker.stop()
        return 2
    # the real listening address (the advertised one, if different, is in the log line on stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"kafkapy ready at {shown}:{port}", flush=True)
    await stop.wait()
    logging.getLogger("kafkapy").info("shutting down")
    await broker.stop()
    return 0


TOOLS = ("topics", "produce", "consume", "groups")


def build_cluster_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kafkapy cluster",
        description="Several kafkapy brokers with replication in one process (kafkapy.Cluster: the cluster metadata "
                    "in memory, the brokers on consecutive ports). Prints one line when ready, with the bootstrap "
                    "servers; Ctrl-C or SIGTERM stops them all.")
    p.add_argument("--brokers", type=int, default=3, help="how many brokers (default 3), node ids 1..N")
    p.add_argument("--host", default="127.0.0.1", help="listen and advertised address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9092,
                   help="the first broker's port, the others on the next ones; 0 picks free ports (default 9092)")
    p.add_argument("--storage", choices=("memory", "disk"), default="memory",
                   help="memory (default) or disk (logs under --data-dir/broker-N)")
    p.add_argument("--data-dir", default=None, help="the brokers' directory with --storage disk")
    p.add_argument("-o", "--override", action="append", default=[], metavar="NAME=VALUE",
                   help="a broker setting for every broker, e.g. -o min.insync.replicas=2 (repeatable)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.add_argument("--console", action="store_true",
                   help="serve the web console with its Cluster page (brokers, leaders, ISR, high watermarks; stop, "
                        "kill and restart buttons) and print its URL on a second line")
    p.add_argument("--console-port", type=int, default=9080, help="console port, 0 picks a free one (default 9080)")
    p.add_argument("--console-host", default=None, help="console listen address (default: --host)")
    return p


def cluster_main(argv) -> int:
    """``kafkapy cluster``: start a kafkapy.Cluster, print its bootstrap servers, stop it on SIGINT/SIGTERM."""
    import threading

    args = build_cluster_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.brokers < 1:
        print("kafkapy cluster: --brokers must be at least 1", file=sys.stderr)
        return 2
    if args.storage == "disk" and not args.data_dir:
        print("kafkapy cluster: --storage disk needs --data-dir", file=sys.stderr)
        return 2
    props = {}
    for o in args.override:
        if "=" not in o:
            print(f"kafkapy cluster: --override expects NAME=VALUE, got {o!r}", file=sys.stderr)
            return 2
        k, v = o.split("=", 1)
        props[k.strip()] = v.strip()
    from kafkapy.cluster.embedded import Cluster

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = Cluster(args.brokers, storage=args.storage, data_dir=args.data_dir, config=props, host=args.host,
                      port=args.port, console=args.console_port if args.console else False,
                      console_host=args.console_host)
    try:
        cluster.start()
    except (OSError, RuntimeError, ConfigError, TimeoutError) as e:
        if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
            print(f"kafkapy cluster: cannot listen on {args.host}, ports {args.port}..{args.port + args.brokers - 1}:"
                  " a port is already in use", file=sys.stderr)
        else:
            print(f"kafkapy cluster: cannot start: {e}", file=sys.stderr)
        return 2
    print(f"kafkapy cluster ready at {cluster.bootstrap_servers}", flush=True)
    if cluster.console_url:
        print(f"kafkapy cluster console at {cluster.console_url}cluster", flush=True)
    try:
        while not stop.wait(0.5):
            pass
        logging.getLogger("kafkapy").info("shutting down the cluster")
    finally:
        cluster.stop()
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "cluster":
        return cluster_main(argv[1:])
    if argv and argv[0] in TOOLS:    # kafkapy topics|produce|consume|groups: tools for a running broker
        from kafkapy.tools import run

        return run(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        tracer = tracer_from_args(args)
    except (ConfigError, OSError, ValueError) as e:
        print(f"kafkapy: {e}", file=sys.stderr)
        return 2
    try:
        console = (args.console_host or args.host, args.console_port) if args.console else None
        return asyncio.run(serve(config, tracer, console))
    except (RuntimeError, OSError, ConfigError) as e:
        print(f"kafkapy: {e}", file=sys.stderr)
        return 2
    finally:
        if tracer is not None:
            tracer.close()


if __name__ == "__main__":
    sys.exit(main())
