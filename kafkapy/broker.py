"""The broker: topics and their partitions, the metadata that must survive restarts, and the server loop that feeds
requests to the handlers.

Wiring, all in :class:`Broker`'s constructor and :meth:`Broker.start`, nowhere else: the handler registry
(kafkapy/handlers, every module imported or the broker does not start), the group coordinator (``broker.groups``),
the transaction coordinator (``broker.transactions``, which owns producer ids), the partition logs
(``broker.logs``) and, per partition, a :class:`kafkapy.partition.Partition` holding its leader state
(``broker.partition(topic, index)``: every append goes through it). Producer state belongs to each partition log.

State lives where Kafka keeps it: ``meta.properties`` (cluster id, node id), the partition directories, and a small
topic metadata file (names, ids, partition counts, per-partition leader epochs, config overrides) written
atomically.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field

from kafkapy import handlers as handler_registry
from kafkapy.config import BrokerConfig, ConfigError, validate_topic_configs
from kafkapy.groups.coordinator import GroupCoordinator
from kafkapy.internal_topics import INTERNAL_TOPICS
from kafkapy.listeners import listeners_from_config
from kafkapy.metrics import Metrics
from kafkapy.partition import Partition
from kafkapy.producers.coordinator import TransactionCoordinator
from kafkapy.server import Server
from storage.checkpoint import write_atomic
from storage.config import LogConfig
from storage.log import MemoryPartitionLog, PartitionLog
from storage.manager import LogManager
from wire import protocol
from wire.messages.error_codes import ErrorCode

log = logging.getLogger("kafkapy.broker")

METADATA_FILE = "kafkapy-topics.json"
META_PROPERTIES = "meta.properties"
MAX_TOPIC_NAME = 249
_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")


class TopicError(Exception):
    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def validate_topic_name(name: str | None) -> None:
    """Kafka's Topic.validate: raises TopicError(INVALID_TOPIC_EXCEPTION)."""
    if not name:
        raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION, "Topic name is illegal, it can't be empty")
    if name in (".", ".."):
        raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION, "Topic name cannot be \".\" or \"..\"")
    if len(name) > MAX_TOPIC_NAME:
        raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION,
                         f"Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME} characters, "
                         f"topic name: {name}")
    if not _LEGAL_TOPIC.match(name):
        raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION,
                         f"Topic name \"{name}\" is illegal, it contains a character other than ASCII "
                         "alphanumerics, '.', '_' and '-'")


def new_cluster_id() -> str:
    """Kafka's Uuid.randomUuid().toString(): 22 characters of URL-safe base64."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class Topic:
    name: str
    topic_id: uuid.UUID
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)   # explicit overrides (DYNAMIC_TOPIC_CONFIG)
    internal: bool = False
    leader_epochs: list[int] = field(default_factory=list)  # per partition (missing entries: 0)
    assignment: list[list[int]] | None = None   # replicas of each partition (a cluster); None: this broker alone

    def leader_epoch(self, partition: int) -> int:
        return self.leader_epochs[partition] if partition < len(self.leader_epochs) else 0

    def to_json(self) -> dict:
        return {"name": self.name, "id": str(self.topic_id), "partitions": self.partitions,
                "configs": self.configs, "internal": self.internal, "leader_epochs": self.leader_epochs}

    @classmethod
    def from_json(cls, d: dict) -> "Topic":
        n = int(d["partitions"])
        # files written before leader epochs were per partition have one "leader_epoch" for the topic
        epochs = [int(e) for e in d["leader_epochs"]] if "leader_epochs" in d else [int(d.get("leader_epoch", 0))] * n
        return cls(d["name"], uuid.UUID(d["id"]), n, dict(d.get("configs", {})), bool(d.get("internal", False)),
                   epochs)


class Broker:
    """A single-node Kafka broker. ``await start()``, then ``await stop()``; or ``run()`` until signalled."""

    def __init__(self, config: BrokerConfig, store=None):
        self.config = config
        self.node_id = config.node_id
        self.topics: dict[str, Topic] = {}
        self.topics_by_id: dict[uuid.UUID, Topic] = {}
        self.handlers = handler_registry.load_all()
        self.tracer = None
        self.controls = None       # kafkapy.control.Controls while a request control hook is installed
        self.metrics = Metrics()
        self.console = None        # kafkapy.console.Console: started after the listener, stopped first
        self.server: Server | None = None
        self.listeners = listeners_from_config(config)   # kafkapy.listeners.Listener, bound ports once started
        self.scram = None          # kafkapy.sasl.ScramStore, opened with storage
        self.authorizer = None     # kafkapy.acl.Authorizer when authorizer.class.name is set
        self.cluster_id = config.cluster_id or ""
        self.logs: LogManager | None = None
        self._append_waiters: set[asyncio.Future] = set()
        self._tasks: list[asyncio.Task] = []
        self.started_at = time.time()
        self.partitions: dict[tuple[str, int], Partition] = {}    # leader state of each partition, made on first use
        # several brokers: membership through a metadata store (kafkapy/cluster); None for a single broker, which is
        # then its own controller and the leader of every partition
        self.cluster = None
        self.paused: asyncio.Event | None = None     # set by kafkapy.Cluster.pause: requests wait until it is set
        self.isolation = None    # kafkapy.cluster.netsplit.Isolation while kafkapy.Cluster.isolate cuts it off
        if store is not None:
            from kafkapy.cluster.member import ClusterMember
            self.cluster = ClusterMember(self, store)
        # the coordinators, built here and nowhere else; they load their state from the internal topics in start()
        self.groups = GroupCoordinator(self)
        self.transactions = TransactionCoordinator(self, self.groups)

    # ---------------------------------------------------------------- lifecycle

    @property
    def memory(self) -> bool:
        return self.config.storage == "memory"

    async def start(self) -> tuple[str, int]:
        """Open storage, then listen. Returns the bound (host, port)."""
        self._prepare_listeners()
        self._open_storage()
        self._open_security()
        self.groups.start()           # loads __consumer_offsets
        self.transactions.load()      # producer ids, __transaction_state
        self.transactions.start()     # finishes transactions a crash interrupted, runs the timers
        self.server = Server(self, self.config.host, self.config.port, self.listeners)
        host, port = await self.server.start()
        if not self.config.advertised_port and self.listeners[0].name == "PLAINTEXT" \
                and not self.config.properties.get("listeners"):
            self.config.advertised_port = port
        for lst in self.listeners:
            log.info("listener %s (%s) listening on %s:%d, advertised as %s:%d", lst.name, lst.protocol,
                     lst.bound_host, lst.bound_port, *lst.advertised)
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="kafkapy-housekeeping"))
        self._tasks.append(asyncio.create_task(self._log_cleaner(), name="kafkapy-log-cleaner"))
        if self.cluster is not None:
            await self.cluster.start()
        if self.console is not None:
            await self.console.start()
        log.info("kafkapy broker %d (cluster %s) listening on %s:%d, advertised as %s:%d, storage %s",
                 self.node_id, self.cluster_id, host, port, *self.listeners[0].advertised,
                 "in memory" if self.memory else self.config.data_dir)
        return host, port

    async def stop(self, *, crash: bool = False) -> None:
        """A clean stop (controlled shutdown in a cluster, logs closed); ``crash``: as a kill -9 would leave things
        (no word to the cluster, logs not closed: a test lever of kafkapy.Cluster)."""
        if self.cluster is not None:
            if crash:
                await self.cluster.halt()
            else:
                await self.cluster.stop(controlled=True)
        if self.console is not None:
            await self.console.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._tasks.clear()
        if self.server is not None:
            await self.server.stop()
        self.groups.close()
        self.transactions.close()
        if self.logs is not None and not crash:
            self.logs.close()
            self.logs = None
        log.info("kafkapy broker stopped cleanly")

    def _prepare_listeners(self) -> None:
        """TLS contexts and SASL mechanisms of the listeners (ConfigError when incomplete)."""
        from kafkapy.listeners import listener_setting
        from kafkapy.sasl import SCRAM_MECHANISMS

        for lst in self.listeners:
            if lst.tls and lst.ssl_context is None:
                from kafkapy.tls import server_context

                lst.ssl_context = server_context(self.config, lst)
            if lst.sasl:
                mechs = [m.strip().upper() for m in
                         (listener_setting(self.config, lst, "sasl.enabled.mechanisms") or "").split(",") if m.strip()]
                bad = [m for m in mechs if m != "PLAIN" and m not in SCRAM_MECHANISMS]
                if bad:
                    raise ConfigError(f"listener {lst.name}: SASL mechanism(s) {', '.join(bad)} not supported "
                                      "(kafkapy has PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
                if not mechs:
                    raise ConfigError(f"listener {lst.name}: sasl.enabled.mechanisms is empty")
                lst.mechanisms = mechs

    def _open_security(self) -> None:
        """SCRAM credentials (data dir), users from kafkapy.scram.users."""
        from kafkapy.sasl import ScramStore, credential_from_password, parse_scram_users

        self.scram = ScramStore(None if self.memory else self.config.data_dir)
        try:
            initial = parse_scram_users(self.config.get("kafkapy.scram.users"))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for mech, name, password, iterations in initial:
            self.scram.put(name, mech, credential_from_password(mech, password, iterations))
        if initial:
            self.scram.save()
        if self.config.get("authorizer.class.name"):
            from kafkapy.acl import Authorizer

            self.authorizer = Authorizer(self.config, None if self.memory else self.config.data_dir)

    def advertised_for(self, connection) -> tuple[str, int]:
        """The advertised address of the listener ``connection`` came in on (Kafka answers per listener)."""
        lst = getattr(connection, "listener", None)
        if lst is None or (lst is self.listeners[0] and not self.config.properties.get("listeners")):
            return self.config.advertised
        return lst.advertised

    def _open_storage(self) -> None:
        if self.memory:
            if not self.cluster_id:
                self.cluster_id = new_cluster_id()
            if self.logs is None:
                self.logs = LogManager(None, config_for=self._config_for_topic)
            else:                   # a restart of an in-process cluster node: the memory "disk" it had
                self.logs._config_for = self._config_for_topic
            return
        d = self.config.data_dir
        os.makedirs(d, exist_ok=True)
        if not os.access(d, os.W_OK):
            raise OSError(f"data directory {d} is not writable")
        self._load_meta_properties(d)
        self.config.load_dynamic()
        path = os.path.join(d, METADATA_FILE)
        if os.path.exists(path) and self.cluster is None:     # in a cluster, topics come from the metadata store
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if data.get("format") != 1:
                raise RuntimeError(f"{path}: metadata format {data.get('format')!r} is not one this kafkapy reads")
            for td in data["topics"]:
                t = Topic.from_json(td)
                self.topics[t.name] = t
                self.topics_by_id[t.topic_id] = t
        self.logs = LogManager(d, config_for=self._config_for_topic)
        for t in self.topics.values():
            self._ensure_logs(t)
        for name in sorted(self.logs.topics() - set(self.topics)):
            log.warning("partition directories of %s have no topic in %s; leaving them alone", name, METADATA_FILE)

    def _config_for_topic(self, name: str) -> LogConfig | None:
        t = self.topics.get(name)
        return None if t is None else self.log_config(t)

    def _ensure_logs(self, t: Topic) -> None:
        """Open or create the log of every partition of ``t``, each with its Partition (leader state)."""
        cfg = self.log_config(t)
        for p in range(t.partitions):
            if t.assignment is not None and self.node_id not in t.assignment[p]:
                continue               # a cluster: this broker holds no replica of that partition
            lg = self.logs.get(t.name, p)
            if lg is None:
                lg = self.logs.create(t.name, p, cfg.copy())
            part = self.partitions.get((t.name, p))
            if part is None or part.log is not lg:
                part = self.partitions[(t.name, p)] = Partition(
                    t.name, p, lg, t.leader_epoch(p), self.node_id, self.notify_appended,
                    replicas=t.assignment[p] if t.assignment is not None else None,
                    leader=t.assignment is None)     # in a cluster, the partition state says who leads
            part.min_insync_replicas = int(self.effective_topic_configs(t)["min.insync.replicas"])

    def _load_meta_properties(self, d: str) -> None:
        path = os.path.join(d, META_PROPERTIES)
        props = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if "=" in line and not line.startswith("#"):
                        k, v = line.strip().split("=", 1)
                        props[k] = v
            if props.get("version") not in ("0", "1"):
                raise RuntimeError(f"{path}: unsupported meta.properties version {props.get('version')!r}")
            stored = props.get("cluster.id")
            if self.cluster_id and stored and stored != self.cluster_id:
                raise RuntimeError(f"{path}: the data dir belongs to cluster {stored}, not {self.cluster_id}")
            self.cluster_id = stored or self.cluster_id
        if not self.cluster_id:
            self.cluster_id = new_cluster_id()
        if props.get("cluster.id") != self.cluster_id or props.get("node.id") != str(self.node_id):
            write_atomic(path, f"#\n#{time.ctime()}\nnode.id={self.node_id}\nversion=1\n"
                               f"cluster.id={self.cluster_id}\n")

    def _save_topics(self) -> None:
        if self.memory or self.cluster is not None:
            return
        data = {"format": 1, "topics": [t.to_json() for t in sorted(self.topics.values(), key=lambda t: t.name)]}
        write_atomic(os.path.join(self.config.data_dir, METADATA_FILE), json.dumps(data, indent=1, sort_keys=True))

    async def _housekeeping(self) -> None:
        """The periodic log tasks: the time-based flush policy (log.flush.interval.ms) every second at most, the
        high-watermark checkpoint every replica.high.watermark.checkpoint.interval.ms, and retention every
        log.retention.check.interval.ms. (Compaction has its own task, the coordinators their own timers.)"""
        interval = self.config.get_int("log.retention.check.interval.ms") / 1000
        hw_interval = self.config.get_int("replica.high.watermark.checkpoint.interval.ms") / 1000
        last_retention = last_hw = time.monotonic()
        while True:
            await asyncio.sleep(min(interval, hw_interval, 1.0))
            now = time.monotonic()
            try:
                self.logs.maybe_flush()
                if now - last_hw >= hw_interval:
                    last_hw = now
                    self.logs.checkpoint_high_watermarks()
            except Exception:  # noqa: BLE001 - logged, the broker keeps serving
                log.exception("periodic flush failed")
            if now - last_retention >= interval:
                last_retention = now
                self.enforce_retention()

    async def _log_cleaner(self) -> None:
        """Compaction of cleanup.policy=compact logs (storage/cleaner.py), in steps of at most 50 ms so requests keep
        flowing; when nothing is due, waits log.cleaner.backoff.ms (Kafka's default 15000)."""
        if not self.config.get_bool("log.cleaner.enable"):
            return
        while True:
            try:
                more = self.logs.run_compaction(max_ms=50, upper_bound_for=lambda plog: plog.last_stable_offset())
            except Exception:  # noqa: BLE001 - logged, the broker keeps serving
                log.exception("log cleaner pass failed")
                more = False
            await asyncio.sleep(0.001 if more else self.config.get_int("log.cleaner.backoff.ms") / 1000)

    def enforce_retention(self) -> int:
        """Delete segments past retention (time, size, log start offset); returns segments deleted. Compaction runs
        in :meth:`_log_cleaner`."""
        try:
            return self.logs.run_retention()
        except Exception:  # noqa: BLE001
            log.exception("retention pass failed")
            return 0

    # ---------------------------------------------------------------- topics

    def log_config(self, topic: Topic) -> LogConfig:
        return LogConfig.from_kafka(self.effective_topic_configs(topic))

    def effective_topic_configs(self, topic: Topic) -> dict[str, str]:
        return self.config.effective_topic_configs(topic.configs)

    def check_new_topic(self, name: str, partitions: int, replication_factor: int,
                        configs: dict[str, str]) -> tuple[int, int, dict[str, str]]:
        """Validate a creation the way Kafka's controller does. Returns normalised (partitions, rf, configs)."""
        validate_topic_name(name)
        if name in self.topics:
            raise TopicError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")
        collide = name.replace(".", "_")
        for other in self.topics:
            if other.replace(".", "_") == collide:
                raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION,
                                 f"Topic '{name}' collides with existing topic: {other}")
        if partitions == -1:
            partitions = self.config.get_int("num.partitions")
        if partitions <= 0:
            raise TopicError(ErrorCode.INVALID_PARTITIONS, "Number of partitions was set to an invalid non-positive "
                                                            "value.")
        if replication_factor == -1:
            replication_factor = self.config.get_int("default.replication.factor")
        if replication_factor <= 0:
            raise TopicError(ErrorCode.INVALID_REPLICATION_FACTOR, "Replication factor must be larger than 0, or -1 to "
                                                                    "use the default value.")
        registered = len(self.cluster.image.brokers) if self.cluster is not None else 1
        if replication_factor > registered:
            raise TopicError(ErrorCode.INVALID_REPLICATION_FACTOR,
                             f"Unable to replicate the partition {replication_factor} time(s): The target "
                             "replication factor of " + str(replication_factor) +
                             f" cannot be reached because only {registered} broker(s) are registered.")
        try:
            configs = validate_topic_configs(configs)
        except ConfigError as e:
            raise TopicError(ErrorCode.INVALID_CONFIG, str(e)) from None
        return partitions, replication_factor, configs

    def create_topic(self, name: str, partitions: int = -1, replication_factor: int = -1,
                     configs: dict[str, str] | None = None, *, internal: bool = False) -> Topic:
        partitions, _, configs = self.check_new_topic(name, partitions, replication_factor, configs or {})
        t = Topic(name, uuid.uuid4(), partitions, configs, internal=internal or name in INTERNAL_TOPICS,
                  leader_epochs=[0] * partitions)
        self.topics[name] = t
        self._ensure_logs(t)
        self.topics_by_id[t.topic_id] = t
        self._save_topics()
        log.info("created topic %s with %d partition(s), id %s%s", name, partitions, t.topic_id,
                 f", configs {configs}" if configs else "")
        return t

    async def create_topic_in_cluster(self, name: str, partitions: int = -1, replication_factor: int = -1,
                                      configs: dict[str, str] | None = None, *, internal: bool = False) -> Topic:
        """Create a topic wherever the metadata lives: this broker alone, or the cluster's metadata store (returns
        once this broker's view has it). The path of CreateTopics and auto-creation."""
        if self.cluster is None:
            return self.create_topic(name, partitions, replication_factor, configs, internal=internal)
        partitions, rf, configs = self.check_new_topic(name, partitions, replication_factor, configs or {})
        from kafkapy.cluster.member import TopicExistsError
        try:
            await self.cluster.create_topic(name, partitions, rf, configs, internal=internal or name in INTERNAL_TOPICS)
        except TopicExistsError:
            raise TopicError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.") from None
        return self.topics[name]

    async def delete_topic_in_cluster(self, name: str) -> None:
        """Delete a topic wherever the metadata lives: this broker alone, or the cluster's metadata store (every
        broker's watch drops it and its logs; returns once this broker's view has no more of it). The path of
        DeleteTopics. TopicError UNKNOWN_TOPIC_OR_PARTITION when it is gone already."""
        t = self.topics.get(name)
        if self.cluster is None:
            if t is None:
                raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "This server does not host this topic-partition.")
            self.delete_topic(name)
            return
        from kafkapy.cluster.member import UnknownTopicError
        try:
            await self.cluster.delete_topic(name, t.topic_id if t is not None else None)
        except UnknownTopicError:
            raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             "This server does not host this topic-partition.") from None

    async def add_partitions_in_cluster(self, name: str, total: int,
                                        assignments: list[list[int]] | None = None) -> None:
        """Raise the partition count of ``name`` to ``total`` wherever the metadata lives (a cluster: the new
        partitions' replicas, ``assignments`` or Kafka's rack-unaware assignment, and their states in the store;
        returns once this broker's view has them). The path of CreatePartitions."""
        if self.cluster is None:
            self.add_partitions(name, total)
            return
        from kafkapy.cluster.member import UnknownTopicError
        try:
            await self.cluster.add_partitions(name, total, assignments)
        except UnknownTopicError:
            raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist.") from None

    async def alter_topic_configs(self, name: str, update) -> dict[str, str]:
        """The config overrides of ``name`` become ``update(current overrides)`` (validated by ``update``, which may
        raise), wherever the metadata lives: this broker alone, or the topic key in the store with a compare-and-set
        (every broker applies them from its watch; returns once this broker has). The path of AlterConfigs and
        IncrementalAlterConfigs on a topic. Returns the new overrides."""
        if self.cluster is None:
            t = self.topics.get(name)
            if t is None:
                raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist.")
            configs = dict(update(dict(t.configs)))
            self.set_topic_configs(name, configs)
            return configs
        from kafkapy.cluster.member import UnknownTopicError
        try:
            return await self.cluster.alter_topic_configs(name, update)
        except UnknownTopicError:
            raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist.") from None

    # ---------------------------------------------------------------- who is where (Metadata, FindCoordinator)

    def live_brokers(self, connection=None) -> list[tuple[int, str, int, str | None]]:
        """(node id, host, port, rack) of every live broker; a single broker: itself at the connection's listener."""
        if self.cluster is None:
            host, port = self.advertised_for(connection)
            return [(self.node_id, host, port, None)]
        return [(b.node_id, b.host, b.port, b.rack) for b in self.cluster.live_brokers()]

    def controller_id(self) -> int:
        if self.cluster is None:
            return self.node_id
        c = self.cluster.image.controller_id
        return -1 if c is None else c

    def partition_metadata(self, topic: Topic, p: int) -> tuple[int, int, list[int], list[int], list[int]]:
        """(leader, leader epoch, replicas, ISR, offline replicas) of a partition as the cluster metadata says."""
        if self.cluster is None:
            return self.node_id, topic.leader_epoch(p), [self.node_id], [self.node_id], []
        image = self.cluster.image
        replicas = topic.assignment[p] if topic.assignment is not None else []
        s = image.states.get((topic.name, p))
        if s is None:
            return -1, -1, replicas, [], [r for r in replicas if r not in image.brokers]
        return s.leader, s.leader_epoch, replicas, list(s.isr), [r for r in replicas if r not in image.brokers]

    def delete_topic(self, name: str) -> None:
        t = self.topics.pop(name)
        self.topics_by_id.pop(t.topic_id, None)
        self.logs.delete_topic(name)
        for key in [k for k in self.partitions if k[0] == name]:
            del self.partitions[key]
        self._save_topics()
        self.groups.on_topic_deleted(name)
        self.notify_appended()   # wake fetchers so they see UNKNOWN_TOPIC
        log.info("deleted topic %s (id %s)", name, t.topic_id)

    def sync_topics(self, image) -> None:
        """A cluster: make this broker's topics those of the cluster image (kafkapy/cluster/metadata.py), with logs
        and partitions for the replicas it holds; a topic gone from the image is deleted here too."""
        for name in [n for n, t in self.topics.items()
                     if n not in image.topics or image.topics[n].topic_id != t.topic_id]:
            self.delete_topic(name)
        for name, info in image.topics.items():
            t = self.topics.get(name)
            if t is None:
                t = Topic(name, info.topic_id, len(info.assignment), dict(info.configs), internal=info.internal)
                self.topics[name] = t
                self.topics_by_id[t.topic_id] = t
                log.info("topic %s (id %s): %d partition(s), replicas %s", name, t.topic_id, t.partitions,
                         info.assignment)
            t.partitions = len(info.assignment)
            t.assignment = [list(r) for r in info.assignment]
            t.leader_epochs = [image.states[(name, p)].leader_epoch if (name, p) in image.states else 0
                               for p in range(t.partitions)]
            if t.configs != info.configs:
                t.configs = dict(info.configs)
                self._apply_configs(t)
            self._ensure_logs(t)

    def add_partitions(self, name: str, total: int) -> None:
        t = self.topics[name]
        t.partitions = total
        t.leader_epochs = [t.leader_epoch(p) for p in range(total)]
        self._ensure_logs(t)
        self._save_topics()
        log.info("topic %s now has %d partitions", name, total)

    def set_topic_configs(self, name: str, configs: dict[str, str]) -> None:
        """Replace the explicit overrides of ``name`` (already validated) and apply them to its logs."""
        t = self.topics[name]
        t.configs = dict(configs)
        self._apply_configs(t)
        self._save_topics()

    def broker_configs_changed(self) -> None:
        """Dynamic broker configs changed: topics without an override now inherit the new defaults, at once
        (Kafka's DynamicLogConfig.reconfigure updates every open log)."""
        for t in self.topics.values():
            self._apply_configs(t)

    def _apply_configs(self, t: Topic) -> None:
        """The effective configs of ``t`` to its open logs and to its partitions (min.insync.replicas)."""
        self.logs.update_config(t.name, self.log_config(t))
        min_isr = int(self.effective_topic_configs(t)["min.insync.replicas"])
        for p in range(t.partitions):
            part = self.partitions.get((t.name, p))
            if part is not None:
                part.min_insync_replicas = min_isr

    def partition_log(self, topic: str, partition: int) -> PartitionLog | MemoryPartitionLog | None:
        """The log of a partition, for reading; writes go through :meth:`partition`."""
        p = self.partitions.get((topic, partition))
        return None if p is None else p.log

    def partition(self, topic: str, partition: int) -> Partition | None:
        """The partition with its leader state (kafkapy/partition.py): every append goes through it."""
        return self.partitions.get((topic, partition))

    def remove_expired_producers(self, expiration_ms: int) -> int:
        """producer.id.expiration.ms over every open partition log (Kafka's removeExpiredProducers)."""
        now = int(time.time() * 1000)
        return sum(lg.remove_expired_producers(now, expiration_ms) for lg in list(self.logs.logs.values()))

    # ---------------------------------------------------------------- long poll

    def notify_appended(self) -> None:
        waiters = self._append_waiters
        if waiters:
            self._append_waiters = set()
            for f in waiters:
                if not f.done():
                    f.set_result(None)

    async def wait_for_append(self, timeout: float) -> None:
        """Wait until something is appended anywhere (or a topic changes), or ``timeout`` seconds pass."""
        if timeout <= 0:
            return
        fut = asyncio.get_running_loop().create_future()
        self._append_waiters.add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._append_waiters.discard(fut)

    # ---------------------------------------------------------------- request control hooks (kafkapy.control)

    def add_control(self, fn, key: int | str | None = None, keep: bool = False):
        """Install a request control hook (on this broker's event loop): every request, or api ``key`` only
        (a number or a name, "Produce"). Returns its ``kafkapy.control.Control``."""
        from kafkapy.control import Control, Controls

        control = fn if isinstance(fn, Control) else Control(fn, key, keep)
        return (self.controls or Controls(self)).add(control)

    def remove_control(self, control) -> None:
        control.remove()

    def clear_controls(self) -> None:
        if self.controls is not None:
            self.controls.clear()

    # ---------------------------------------------------------------- helpers for handlers

    def api_versions_response(self, error_code: int = 0):
        mod = protocol.API[protocol.API_VERSIONS_KEY].response
        keys = [mod.ApiVersion(api_key=h.api_key, min_version=h.min_version, max_version=h.max_version)
                for h in sorted(self.handlers.values(), key=lambda h: h.api_key)]
        return mod.MESSAGE(error_code=int(error_code), api_keys=keys, throttle_time_ms=0)

    def metrics_observe(self, api_key: int, version: int, seconds: float) -> None:
        self.metrics.observe(api_key, version, seconds)

