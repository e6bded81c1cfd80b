"""Broker and topic configuration with Kafka's names, defaults and sources.

Broker settings come, lowest to highest precedence, from Kafka's defaults (with kafkapy's few
deliberate differences, marked below), a ``server.properties``-style file, ``KAFKA_*`` environment
variables (``KAFKA_LOG_RETENTION_MS`` -> ``log.retention.ms``, as the Kafka container images map
them) and command-line options.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

from storage.checkpoint import write_atomic

log = logging.getLogger("kafkapy.config")

LONG_MAX = 9223372036854775807


class ConfigError(ValueError):
    """A config name that does not exist or a value of the wrong type/range (Kafka's INVALID_CONFIG)."""


# ---------------------------------------------------------------- value types

def _bool(v: str) -> str:
    s = str(v).strip().lower()
    if s not in ("true", "false"):
        raise ConfigError(f"expected true or false, got {v!r}")
    return s


def _int(lo: int, hi: int):
    def check(v: str) -> str:
        try:
            n = int(str(v).strip())
        except ValueError:
            raise ConfigError(f"expected an integer, got {v!r}") from None
        if not lo <= n <= hi:
            raise ConfigError(f"value {n} outside [{lo}, {hi}]")
        return str(n)
    return check


def _double(v: str) -> str:
    try:
        return str(float(v))
    except ValueError:
        raise ConfigError(f"expected a number, got {v!r}") from None


def _choice(*options: str):
    def check(v: str) -> str:
        s = str(v).strip()
        if s not in options:
            raise ConfigError(f"expected one of {', '.join(options)}, got {v!r}")
        return s
    return check


def _policy(v: str) -> str:
    parts = [p.strip() for p in str(v).split(",") if p.strip()]
    if not parts or any(p not in ("delete", "compact") for p in parts):
        raise ConfigError(f"cleanup.policy must be delete, compact or both, got {v!r}")
    return ",".join(parts)


def _store_kind(v: str) -> str:
    s = str(v).strip().lower()
    if s not in ("none", "etcd"):
        raise ConfigError(f"expected none or etcd, got {v!r}")
    return s


def _str(v: str) -> str:
    return str(v)


def _per_ip_overrides(v: str) -> str:
    """"host:count,host:count" (Kafka's max.connections.per.ip.overrides)."""
    for item in str(v).split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, n = item.rpartition(":")
        if not sep or not host.strip() or not n.strip().isdigit():
            raise ConfigError(f"{item!r} is not host:count")
    return str(v)


INT32 = _int(-(1 << 31), (1 << 31) - 1)
LONG = _int(-(1 << 63), LONG_MAX)
POS_INT = _int(0, (1 << 31) - 1)

# Kafka's ConfigEntry config types (DescribeConfigs v3+ config_type)
TYPE_BOOLEAN, TYPE_STRING, TYPE_INT, TYPE_SHORT, TYPE_LONG, TYPE_DOUBLE, TYPE_LIST, TYPE_CLASS, TYPE_PASSWORD = range(1, 10)


@dataclass(frozen=True)
class TopicConfigDef:
    name: str
    default: str | None
    check: object
    config_type: int
    broker_synonym: str | None     # the broker-wide setting that provides the default
    doc: str = ""


# Every topic config Kafka 3.9 knows, with its default and broker-level synonym.
TOPIC_CONFIGS: dict[str, TopicConfigDef] = {d.name: d for d in [
    TopicConfigDef("cleanup.policy", "delete", _policy, TYPE_LIST, "log.cleanup.policy"),
    TopicConfigDef("compression.type", "producer",
                   _choice("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"), TYPE_STRING,
                   "compression.type"),
    TopicConfigDef("compression.gzip.level", "-1", INT32, TYPE_INT, "compression.gzip.level"),
    TopicConfigDef("compression.lz4.level", "9", INT32, TYPE_INT, "compression.lz4.level"),
    TopicConfigDef("compression.zstd.level", "3", INT32, TYPE_INT, "compression.zstd.level"),
    TopicConfigDef("delete.retention.ms", "86400000", _int(0, LONG_MAX), TYPE_LONG, "log.cleaner.delete.retention.ms"),
    TopicConfigDef("file.delete.delay.ms", "60000", _int(0, LONG_MAX), TYPE_LONG, "log.segment.delete.delay.ms"),
    TopicConfigDef("flush.messages", str(LONG_MAX), _int(1, LONG_MAX), TYPE_LONG, "log.flush.interval.messages"),
    TopicConfigDef("flush.ms", str(LONG_MAX), _int(0, LONG_MAX), TYPE_LONG, "log.flush.interval.ms"),
    TopicConfigDef("follower.replication.throttled.replicas", "", _str, TYPE_LIST,
                   "follower.replication.throttled.replicas"),
    TopicConfigDef("index.interval.bytes", "4096", POS_INT, TYPE_INT, "log.index.interval.bytes"),
    TopicConfigDef("leader.replication.throttled.replicas", "", _str, TYPE_LIST,
                   "leader.replication.throttled.replicas"),
    TopicConfigDef("local.retention.bytes", "-2", _int(-2, LONG_MAX), TYPE_LONG, "log.local.retention.bytes"),
    TopicConfigDef("local.retention.ms", "-2", _int(-2, LONG_MAX), TYPE_LONG, "log.local.retention.ms"),
    TopicConfigDef("max.compaction.lag.ms", str(LONG_MAX), _int(1, LONG_MAX), TYPE_LONG,
                   "log.cleaner.max.compaction.lag.ms"),
    TopicConfigDef("max.message.bytes", "1048588", POS_INT, TYPE_INT, "message.max.bytes"),
    TopicConfigDef("message.downconversion.enable", "true", _bool, TYPE_BOOLEAN,
                   "log.message.downconversion.enable"),
    TopicConfigDef("message.format.version", "3.0-IV1", _str, TYPE_STRING, "log.message.format.version"),
    TopicConfigDef("message.timestamp.after.max.ms", str(LONG_MAX), _int(0, LONG_MAX), TYPE_LONG,
                   "log.message.timestamp.after.max.ms"),
    TopicConfigDef("message.timestamp.before.max.ms", str(LONG_MAX), _int(0, LONG_MAX), TYPE_LONG,
                   "log.message.timestamp.before.max.ms"),
    TopicConfigDef("message.timestamp.difference.max.ms", str(LONG_MAX), _int(0, LONG_MAX), TYPE_LONG,
                   "log.message.timestamp.difference.max.ms"),
    TopicConfigDef("message.timestamp.type", "CreateTime", _choice("CreateTime", "LogAppendTime"), TYPE_STRING,
                   "log.message.timestamp.type"),
    TopicConfigDef("min.cleanable.dirty.ratio", "0.5", _double, TYPE_DOUBLE, "log.cleaner.min.cleanable.ratio"),
    TopicConfigDef("min.compaction.lag.ms", "0", _int(0, LONG_MAX), TYPE_LONG, "log.cleaner.min.compaction.lag.ms"),
    TopicConfigDef("min.insync.replicas", "1", _int(1, (1 << 31) - 1), TYPE_INT, "min.insync.replicas"),
    TopicConfigDef("preallocate", "false", _bool, TYPE_BOOLEAN, "log.preallocate"),
    TopicConfigDef("remote.storage.enable", "false", _bool, TYPE_BOOLEAN, None),
    TopicConfigDef("retention.bytes", "-1", LONG, TYPE_LONG, "log.retention.bytes"),
    TopicConfigDef("retention.ms", "604800000", _int(-1, LONG_MAX), TYPE_LONG, "log.retention.ms"),
    TopicConfigDef("segment.bytes", "1073741824", _int(14, (1 << 31) - 1), TYPE_INT, "log.segment.bytes"),
    TopicConfigDef("segment.index.bytes", "10485760", _int(4, (1 << 31) - 1), TYPE_INT, "log.index.size.max.bytes"),
    TopicConfigDef("segment.jitter.ms", "0", _int(0, LONG_MAX), TYPE_LONG, "log.roll.jitter.ms"),
    TopicConfigDef("segment.ms", "604800000", _int(1, LONG_MAX), TYPE_LONG, "log.roll.ms"),
    TopicConfigDef("unclean.leader.election.enable", "false", _bool, TYPE_BOOLEAN, "unclean.leader.election.enable"),
]}


@dataclass(frozen=True)
class BrokerConfigDef:
    name: str
    default: str | None
    check: object
    config_type: int
    doc: str = ""


# The broker settings kafkapy reads; all are also shown by DescribeConfigs. The broker synonyms of topic configs
# (log.segment.bytes, message.max.bytes ...) are added from TOPIC_CONFIGS below, with the topic config's default,
# type and check, unless listed here because Kafka's broker setting differs (log.retention.ms: no default, the
# hours setting provides it).
BROKER_CONFIGS: dict[str, BrokerConfigDef] = {d.name: d for d in [
    BrokerConfigDef("node.id", "1", INT32, TYPE_INT),
    BrokerConfigDef("broker.id", "1", INT32, TYPE_INT),
    BrokerConfigDef("num.partitions", "1", _int(1, 1 << 20), TYPE_INT),
    BrokerConfigDef("default.replication.factor", "1", _int(1, 32767), TYPE_INT),
    BrokerConfigDef("auto.create.topics.enable", "true", _bool, TYPE_BOOLEAN),
    BrokerConfigDef("delete.topic.enable", "true", _bool, TYPE_BOOLEAN),
    BrokerConfigDef("socket.request.max.bytes", "104857600", _int(1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("log.roll.ms", None, _int(1, LONG_MAX), TYPE_LONG),
    BrokerConfigDef("log.roll.hours", "168", _int(1, 1 << 30), TYPE_INT),
    BrokerConfigDef("log.retention.ms", None, _int(-1, LONG_MAX), TYPE_LONG),
    BrokerConfigDef("log.retention.minutes", None, _int(-1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("log.retention.hours", "168", _int(-1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("log.retention.check.interval.ms", "300000", _int(1, LONG_MAX), TYPE_LONG),
    BrokerConfigDef("log.flush.interval.ms", None, _int(0, LONG_MAX), TYPE_LONG),
    BrokerConfigDef("offsets.topic.num.partitions", "50", _int(1, 1 << 16), TYPE_INT),
    BrokerConfigDef("offsets.topic.replication.factor", "1", _int(1, 32767), TYPE_SHORT,
                    "kafkapy: 1 (Kafka: 3); a single broker can only hold one replica"),
    BrokerConfigDef("offsets.retention.minutes", "10080", _int(1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("transaction.state.log.num.partitions", "50", _int(1, 1 << 16), TYPE_INT),
    BrokerConfigDef("group.initial.rebalance.delay.ms", "0", _int(0, (1 << 31) - 1), TYPE_INT,
                    "kafkapy: 0 (Kafka: 3000), as Kafka's own shipped server.properties sets it"),
    BrokerConfigDef("group.min.session.timeout.ms", "6000", INT32, TYPE_INT),
    BrokerConfigDef("group.max.session.timeout.ms", "1800000", INT32, TYPE_INT),
    BrokerConfigDef("connections.max.idle.ms", "600000", _int(-1, LONG_MAX), TYPE_LONG),
    BrokerConfigDef("max.connections", "2147483647", POS_INT, TYPE_INT),
    BrokerConfigDef("max.connections.per.ip", "2147483647", POS_INT, TYPE_INT),
    BrokerConfigDef("socket.listen.backlog.size", "50", _int(1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("max.connections.per.ip.overrides", "", _per_ip_overrides, TYPE_STRING),
    BrokerConfigDef("queued.max.requests", "500", _int(1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("fetch.max.bytes", "57671680", POS_INT, TYPE_INT),
    BrokerConfigDef("transaction.max.timeout.ms", "900000", _int(1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("transactional.id.expiration.ms", "604800000", _int(1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("transaction.abort.timed.out.transaction.cleanup.interval.ms", "10000",
                    _int(1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("transaction.remove.expired.transaction.cleanup.interval.ms", "3600000",
                    _int(1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("producer.id.expiration.ms", "86400000", _int(1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("producer.id.expiration.check.interval.ms", "600000", _int(1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("transaction.state.log.segment.bytes", "104857600", _int(1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("offsets.topic.segment.bytes", "104857600", _int(1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("offsets.retention.check.interval.ms", "600000", _int(1, LONG_MAX), TYPE_LONG),
    BrokerConfigDef("offset.metadata.max.bytes", "4096", POS_INT, TYPE_INT),
    BrokerConfigDef("group.max.size", "2147483647", _int(1, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("log.cleaner.enable", "true", _bool, TYPE_BOOLEAN),
    BrokerConfigDef("log.cleaner.backoff.ms", "15000", _int(0, LONG_MAX), TYPE_LONG),
    BrokerConfigDef("replica.fetch.max.bytes", "1048576", POS_INT, TYPE_INT),
    # replication (kafkapy/partition.py, kafkapy/cluster/)
    BrokerConfigDef("replica.fetch.wait.max.ms", "500", POS_INT, TYPE_INT),
    BrokerConfigDef("replica.high.watermark.checkpoint.interval.ms", "5000", POS_INT, TYPE_LONG),
    BrokerConfigDef("replica.fetch.backoff.ms", "1000", _int(0, (1 << 31) - 1), TYPE_INT),
    BrokerConfigDef("replica.fetch.response.max.bytes", "10485760", POS_INT, TYPE_INT),
    BrokerConfigDef("replica.socket.timeout.ms", "30000", POS_INT, TYPE_INT),
    BrokerConfigDef("replica.lag.time.max.ms", "30000", _int(0, LONG_MAX), TYPE_LONG),
    BrokerConfigDef("broker.session.timeout.ms", "9000", POS_INT, TYPE_INT),
    BrokerConfigDef("broker.heartbeat.interval.ms", "2000", POS_INT, TYPE_INT),
    BrokerConfigDef("controlled.shutdown.enable", "true", _bool, TYPE_BOOLEAN),
    BrokerConfigDef("transaction.state.log.replication.factor", "1", _int(1, 32767), TYPE_SHORT,
                    "kafkapy: 1 (Kafka: 3); a single broker can only hold one replica"),
    # security (kafkapy/listeners.py, sasl.py, tls.py, acl.py)
    BrokerConfigDef("listeners", None, _str, TYPE_LIST),
    BrokerConfigDef("advertised.listeners", None, _str, TYPE_LIST),
    BrokerConfigDef("listener.security.protocol.map",
                    "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL", _str, TYPE_LIST),
    BrokerConfigDef("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512", _str, TYPE_LIST,
                    "kafkapy: PLAIN,SCRAM-SHA-256,SCRAM-SHA-512 (Kafka: GSSAPI, which kafkapy does not have)"),
    BrokerConfigDef("sasl.jaas.config", None, _str, TYPE_PASSWORD),
    BrokerConfigDef("connections.max.reauth.ms", "0", _int(0, LONG_MAX), TYPE_LONG),
    BrokerConfigDef("ssl.client.auth", "none", _choice("required", "requested", "none"), TYPE_STRING),
    BrokerConfigDef("ssl.keystore.type", "PEM", _str, TYPE_STRING,
                    "kafkapy: PEM (Kafka: JKS); kafkapy reads PEM keystores only"),
    BrokerConfigDef("ssl.keystore.location", None, _str, TYPE_STRING),
    BrokerConfigDef("ssl.keystore.certificate.chain", None, _str, TYPE_PASSWORD),
    BrokerConfigDef("ssl.keystore.key", None, _str, TYPE_PASSWORD),
    BrokerConfigDef("ssl.keystore.password", None, _str, TYPE_PASSWORD),
    BrokerConfigDef("ssl.key.password", None, _str, TYPE_PASSWORD),
    BrokerConfigDef("ssl.truststore.type", "PEM", _str, TYPE_STRING),
    BrokerConfigDef("ssl.truststore.location", None, _str, TYPE_STRING),
    BrokerConfigDef("ssl.truststore.certificates", None, _str, TYPE_PASSWORD),
    BrokerConfigDef("ssl.certfile", None, _str, TYPE_STRING, "kafkapy: PEM certificate chain of the server"),
    BrokerConfigDef("ssl.keyfile", None, _str, TYPE_STRING, "kafkapy: PEM private key of the server"),
    BrokerConfigDef("ssl.cafile", None, _str, TYPE_STRING, "kafkapy: PEM CA certificates trusted for client certs"),
    BrokerConfigDef("authorizer.class.name", "", _str, TYPE_STRING),
    BrokerConfigDef("super.users", "", _str, TYPE_STRING),
    BrokerConfigDef("allow.everyone.if.no.acl.found", "false", _bool, TYPE_BOOLEAN),
    BrokerConfigDef("kafkapy.store", "none", _store_kind, TYPE_STRING,
                    "kafkapy: the cluster metadata store: none (a single broker) or etcd (a broker of a cluster "
                    "coordinated through etcd, kafkapy.etcd.endpoints)"),
    BrokerConfigDef("kafkapy.etcd.endpoints", "http://127.0.0.1:2379", _str, TYPE_STRING,
                    "kafkapy: the etcd endpoint of kafkapy.store=etcd (http://host:port; one for now)"),
    BrokerConfigDef("kafkapy.cluster.prefix", "default", _str, TYPE_STRING,
                    "kafkapy: the cluster's name in etcd (keys under /kafkapy/NAME/), so several clusters can "
                    "share one etcd"),
    BrokerConfigDef("kafkapy.scram.users", "", _str, TYPE_PASSWORD,
                    "kafkapy: SCRAM credentials created at start, as kafka-storage format --add-scram: "
                    "'SCRAM-SHA-512=[name=alice,password=secret];SCRAM-SHA-256=[...]'"),
]}
for _d in TOPIC_CONFIGS.values():   # the broker synonyms of topic configs not listed above
    if _d.broker_synonym and _d.broker_synonym not in BROKER_CONFIGS:
        BROKER_CONFIGS[_d.broker_synonym] = BrokerConfigDef(_d.broker_synonym, _d.default, _d.check, _d.config_type)


# ---------------------------------------------------------------- dynamic broker configs (KIP-226)

# Topic configs without a broker-level synonym (Kafka's LogConfig.CONFIGS_WITH_NO_SERVER_DEFAULTS).
NO_BROKER_SYNONYM = frozenset({"leader.replication.throttled.replicas", "follower.replication.throttled.replicas",
                               "remote.storage.enable"})

# ServerTopicConfigSynonyms.ALL_TOPIC_CONFIG_SYNONYMS where a topic config has more than one broker setting:
# (broker setting, factor to milliseconds), first one set wins. The others have just ``broker_synonym``.
TOPIC_SYNONYM_CHAINS: dict[str, list[tuple[str, int]]] = {
    "retention.ms": [("log.retention.ms", 1), ("log.retention.minutes", 60_000), ("log.retention.hours", 3_600_000)],
    "segment.ms": [("log.roll.ms", 1), ("log.roll.hours", 3_600_000)],
    "segment.jitter.ms": [("log.roll.jitter.ms", 1), ("log.roll.jitter.hours", 3_600_000)],
    "flush.ms": [("log.flush.interval.ms", 1), ("log.flush.scheduler.interval.ms", 1)],
}


def broker_config_synonyms(name: str) -> list[str]:
    """DynamicBrokerConfig.brokerConfigSynonyms: the broker settings that together define ``name``."""
    for chain in TOPIC_SYNONYM_CHAINS.values():
        names = [n for n, _ in chain]
        if name in names:
            return names
    return [name]


# DynamicLogConfig.NonReconfigrableLogConfigs: message.format.version must match on every broker.
NON_RECONFIGURABLE_LOG_CONFIGS = frozenset({"message.format.version"})

# DynamicBrokerConfig.AllDynamicConfigs, the part kafkapy has: DynamicLogConfig.ReconfigurableConfigs (the first
# broker synonym of every topic config, so log.retention.ms but not log.retention.hours), LogCleaner's,
# DynamicThreadPool's, SocketServer's and the producer-state ones. Listener and security configs (per-broker only
# in Kafka) are left out: kafkapy cannot re-open its listeners or reload TLS material at run time.
DYNAMIC_BROKER_CONFIGS = frozenset(
    {d.broker_synonym for d in TOPIC_CONFIGS.values()
     if d.broker_synonym and d.name not in NO_BROKER_SYNONYM and d.name not in NON_RECONFIGURABLE_LOG_CONFIGS}
    | {"log.cleaner.threads", "log.cleaner.dedupe.buffer.size", "log.cleaner.io.buffer.load.factor",
       "log.cleaner.io.buffer.size", "message.max.bytes", "log.cleaner.io.max.bytes.per.second",
       "log.cleaner.backoff.ms"}                                                         # LogCleaner
    | {"num.io.threads", "num.replica.fetchers", "num.recovery.threads.per.data.dir", "background.threads",
       "num.network.threads"}                                                            # DynamicThreadPool
    | {"max.connections", "max.connections.per.ip", "max.connections.per.ip.overrides",
       "max.connection.creation.rate"}                                                   # SocketServer
    | {"producer.id.expiration.ms", "transaction.partition.verification.enable"}         # producer state
    | {"metric.reporters"})

DYNAMIC_CONFIGS_FILE = "kafkapy-broker-configs.json"

# DescribeConfigs' ConfigSource names, as BrokerConfig.source() returns them
DYNAMIC_BROKER_CONFIG = "DYNAMIC_BROKER_CONFIG"
DYNAMIC_DEFAULT_BROKER_CONFIG = "DYNAMIC_DEFAULT_BROKER_CONFIG"
STATIC_BROKER_CONFIG = "STATIC_BROKER_CONFIG"
DEFAULT_CONFIG = "DEFAULT_CONFIG"


def parse_properties(text: str) -> dict[str, str]:
    """Java .properties subset: key=value or key: value, # and ! comments, trailing-backslash continuations."""
    out: dict[str, str] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\"):
            logical += line[:-1]
            continue
        logical += line
        for i, ch in enumerate(logical):
            if ch in "=:":
                out[logical[:i].strip()] = logical[i + 1:].strip()
                break
        else:
            out[logical.strip()] = ""
        logical = ""
    return out


def env_properties(environ: dict[str, str]) -> dict[str, str]:
    """KAFKA_LOG_RETENTION_MS=1 -> log.retention.ms=1 (the Kafka container convention; ___ -> -, __ -> _)."""
    out = {}
    for k, v in environ.items():
        if not k.startswith("KAFKA_") or k.startswith("KAFKAPY_"):
            continue
        name = k[6:].lower().replace("___", "-").replace("__", "\0").replace("_", ".").replace("\0", "_")
        if name in BROKER_CONFIGS or name in ("log.dirs", "cluster.id") or name.startswith("listener.name."):
            out[name] = v
    return out


@dataclass
class BrokerConfig:
    host: str = "localhost"
    port: int = 9092
    advertised_host: str | None = None
    advertised_port: int | None = None
    data_dir: str | None = None           # None with storage="memory"
    storage: str = "disk"
    node_id: int = 1
    cluster_id: str | None = None         # None: generated once and kept in meta.properties
    log_level: str = "INFO"
    properties: dict[str, str] = field(default_factory=dict)   # Kafka broker settings given explicitly (static)
    # KIP-226 dynamic broker configs by resource name: "" the cluster-wide default, str(node_id) this broker's
    dynamic: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self):
        for k, v in list(self.properties.items()):
            d = BROKER_CONFIGS.get(k)
            if d is not None:
                try:
                    self.properties[k] = d.check(v)
                except ConfigError as e:
                    raise ConfigError(f"{k}: {e}") from None

    # ------------------------------------------------------------ layers

    def _layers(self) -> list[tuple[dict[str, str], str]]:
        """Explicit settings, most specific first: this broker's dynamic, the cluster default, the static ones."""
        return [(self.dynamic.get(str(self.node_id), {}), DYNAMIC_BROKER_CONFIG),
                (self.dynamic.get("", {}), DYNAMIC_DEFAULT_BROKER_CONFIG),
                (self.properties, STATIC_BROKER_CONFIG)]

    def current(self) -> dict[str, str]:
        """The explicit settings in force (DynamicBrokerConfig.updateCurrentConfig): static, then the dynamic
        cluster default, then this broker's dynamic configs; a dynamic setting removes its synonyms from the layers
        under it (a dynamic log.retention.ms hides a static log.retention.hours). Do not modify the result."""
        if not self.dynamic:
            return self.properties
        out = dict(self.properties)
        for values in (self.dynamic.get("", {}), self.dynamic.get(str(self.node_id), {})):
            for k, v in values.items():
                for syn in broker_config_synonyms(k):
                    out.pop(syn, None)
                out[k] = v
        return out

    def source(self, name: str) -> str:
        """Where the value in force of ``name`` comes from (a DescribeConfigs ConfigSource name)."""
        if name not in self.current():
            return DEFAULT_CONFIG
        for values, source in self._layers():
            if name in values:
                return source
        return DEFAULT_CONFIG

    def get(self, name: str) -> str | None:
        cur = self.current()
        if name in cur:
            return cur[name]
        d = BROKER_CONFIGS.get(name)
        return None if d is None else d.default

    def get_int(self, name: str) -> int:
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return int(v)

    def get_bool(self, name: str) -> bool:
        return str(self.get(name)).lower() == "true"

    # Kafka derives these from several settings (ms beats minutes beats hours)
    def retention_ms(self) -> int:
        return int(self.topic_default("retention.ms")[0])

    def roll_ms(self) -> int:
        return int(self.topic_default("segment.ms")[0])

    def topic_default(self, name: str) -> tuple[str | None, str]:
        """(value, source) a topic without an override inherits for ``name``: the first of its broker synonyms
        set (dynamic per-broker, dynamic cluster default or static, converted to the topic's unit), else Kafka's
        default. source is a DescribeConfigs ConfigSource name (DYNAMIC_BROKER_CONFIG ... DEFAULT_CONFIG)."""
        d = TOPIC_CONFIGS[name]
        chain = TOPIC_SYNONYM_CHAINS.get(name)
        if chain is None:
            chain = [(d.broker_synonym, 1)] if d.broker_synonym and name not in NO_BROKER_SYNONYM else []
        cur = self.current()
        for syn, factor in chain:
            if syn in cur:
                value = cur[syn] if factor == 1 else str(int(cur[syn]) * factor)
                return value, self.source(syn)
        return d.default, DEFAULT_CONFIG

    def effective_topic_configs(self, overrides: dict[str, str]) -> dict[str, str]:
        """Every topic config of a topic with the explicit ``overrides``: an override, else the broker default."""
        return {name: overrides[name] if name in overrides else self.topic_default(name)[0]
                for name in TOPIC_CONFIGS}

    # ------------------------------------------------------------ dynamic configs

    def _dynamic_path(self) -> str | None:
        if self.storage == "memory" or not self.data_dir:
            return None
        return os.path.join(self.data_dir, DYNAMIC_CONFIGS_FILE)

    def set_dynamic(self, resource_name: str, configs: dict[str, str]) -> None:
        """Replace the dynamic configs of the BROKER resource ``resource_name`` ("" or the node id; already
        validated) and persist them (atomically) when storage is on disk."""
        if configs:
            self.dynamic[resource_name] = dict(configs)
        else:
            self.dynamic.pop(resource_name, None)
        path = self._dynamic_path()
        if path is not None:
            data = {"format": 1, "configs": {k: v for k, v in sorted(self.dynamic.items()) if v}}
            write_atomic(path, json.dumps(data, indent=1, sort_keys=True))

    def load_dynamic(self) -> None:
        """Read the dynamic configs kept in the data dir. Values that are no longer valid are dropped with an
        error logged (DynamicBrokerConfig.removeInvalidConfigs)."""
        path = self._dynamic_path()
        if path is None or not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("format") != 1:
            raise RuntimeError(f"{path}: format {data.get('format')!r} is not one this kafkapy reads")
        self.dynamic = {}
        for resource, values in data.get("configs", {}).items():
            kept = {}
            for k, v in values.items():
                d = BROKER_CONFIGS.get(k)
                try:
                    if d is not None and k not in DYNAMIC_BROKER_CONFIGS:
                        raise ConfigError("not a dynamic config")
                    kept[k] = d.check(v) if d is not None else str(v)
                except ConfigError as e:
                    log.error("dynamic %s config %s=%s in %s is invalid (%s); ignored",
                              "broker" if resource else "default cluster", k, v, path, e)
            if kept:
                self.dynamic[resource] = kept

    @property
    def advertised(self) -> tuple[str, int]:
        return (self.advertised_host or self.host or "localhost", self.advertised_port or self.port)


def validate_topic_configs(configs: dict[str, str | None]) -> dict[str, str]:
    """Check names and values of topic configs; returns normalised values. Raises ConfigError."""
    out = {}
    for k, v in configs.items():
        d = TOPIC_CONFIGS.get(k)
        if d is None:
            raise ConfigError(f"Unknown topic config name: {k}")
        if v is None:
            raise ConfigError(f"Null value not supported for topic configs: {k}")
        try:
            out[k] = d.check(v)
        except ConfigError as e:
            raise ConfigError(f"Invalid value {v} for configuration {k}: {e}") from None
    return out


def load_properties_file(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as f:
        return parse_properties(f.read())


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "kafkapy", "data")
