"""What the cluster keeps in the metadata store, and each broker's view of it (Kafka's ``zk/ZkData.scala``).

Keys (values are JSON, UTF-8):

=========================================  =============================================================  ==========
key                                        value                                                          lease
=========================================  =============================================================  ==========
``brokers/ids/<id>``                       {"host", "port", "rack"}; the broker epoch is its create rev.  the broker
``controller``                             {"broker_id"}                                                  controller
``controller_epoch``                       the controller epoch (an int); every controller write compares no
``topics/<name>``                          {"id", "partitions": {"0": [replicas]}, "configs", "internal"} no
``topics/<name>/partitions/<p>/state``     {"leader", "leader_epoch", "isr", "controller_epoch"}          no
``shutdown/<id>``                          a controlled-shutdown request of broker <id>                   the broker
=========================================  =============================================================  ==========

A partition's epoch is the ``mod_revision`` of its state key: the leader changes the ISR with a compare-and-set on
it, so a leader elected away (its epoch moved by the controller) can no longer change anything. Every broker
follows one watch of the whole cluster prefix in revision order and answers Metadata from :class:`ClusterImage`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from kafkapy.cluster.store import Event, KeyValue

BROKERS = "brokers/ids/"
CONTROLLER = "controller"
CONTROLLER_EPOCH = "controller_epoch"
TOPICS = "topics/"
SHUTDOWN = "shutdown/"
NO_LEADER = -1


def broker_key(node_id: int) -> str:
    return f"{BROKERS}{node_id}"


def topic_key(name: str) -> str:
    return f"{TOPICS}{name}"


def state_key(topic: str, partition: int) -> str:
    return f"{TOPICS}{topic}/partitions/{partition}/state"


def shutdown_key(node_id: int) -> str:
    return f"{SHUTDOWN}{node_id}"


def encode(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def decode(data: bytes):
    return json.loads(bytes(data).decode())


@dataclass
class BrokerInfo:
    node_id: int
    host: str
    port: int
    rack: str | None = None
    epoch: int = 0           # the create revision of its registration

    def to_json(self) -> bytes:
        return encode({"host": self.host, "port": self.port, "rack": self.rack})


@dataclass
class TopicInfo:
    name: str
    topic_id: uuid.UUID
    assignment: list[list[int]]                  # replicas of each partition, in preference order
    configs: dict[str, str] = field(default_factory=dict)
    internal: bool = False

    def to_json(self) -> bytes:
        return encode({"id": str(self.topic_id), "internal": self.internal, "configs": self.configs,
                       "partitions": {str(p): r for p, r in enumerate(self.assignment)}})

    @classmethod
    def from_json(cls, name: str, data: bytes) -> TopicInfo:
        d = decode(data)
        parts = d["partitions"]
        return cls(name, uuid.UUID(d["id"]), [list(parts[str(p)]) for p in range(len(parts))],
                   dict(d.get("configs", {})), bool(d.get("internal", False)))


@dataclass
class PartitionState:
    leader: int
    leader_epoch: int
    isr: list[int]
    controller_epoch: int
    partition_epoch: int = 0     # mod_revision of the state key

    def to_json(self) -> bytes:
        return encode({"leader": self.leader, "leader_epoch": self.leader_epoch, "isr": sorted(self.isr),
                       "controller_epoch": self.controller_epoch})

    @classmethod
    def from_kv(cls, kv: KeyValue) -> PartitionState:
        d = decode(kv.value)
        return cls(int(d["leader"]), int(d["leader_epoch"]), [int(r) for r in d["isr"]], int(d["controller_epoch"]),
                   kv.mod_revision)


def parse_state_key(key: str) -> tuple[str, int] | None:
    """``topics/<t>/partitions/<p>/state`` -> (t, p)."""
    if not key.startswith(TOPICS) or not key.endswith("/state"):
        return None
    rest = key[len(TOPICS):-len("/state")]
    topic, sep, part = rest.rpartition("/partitions/")
    if not sep or not part.isdigit():
        return None
    return topic, int(part)


class ClusterImage:
    """One broker's view of the cluster metadata, built by applying the store's events in revision order."""

    def __init__(self):
        self.revision = 0
        self.brokers: dict[int, BrokerInfo] = {}
        self.controller_id: int | None = None
        self.controller_epoch = 0
        self.topics: dict[str, TopicInfo] = {}
        self.states: dict[tuple[str, int], PartitionState] = {}
        self.shutting_down: set[int] = set()

    def load(self, kvs: list[KeyValue], revision: int) -> None:
        for kv in kvs:
            self._put(kv)
        self.revision = revision

    def apply(self, revision: int, events: list[Event]) -> set[str]:
        """Apply one revision's events; returns the kinds of things that changed ("brokers", "controller",
        "topics", "states", "shutdown")."""
        changed = set()
        for ev in events:
            changed.add(self._put(ev.kv) if ev.type == "put" else self._delete(ev.kv.key))
        self.revision = revision
        changed.discard(None)
        return changed

    def _put(self, kv: KeyValue) -> str | None:
        key = kv.key
        if key.startswith(BROKERS):
            d = decode(kv.value)
            node = int(key[len(BROKERS):])
            self.brokers[node] = BrokerInfo(node, d["host"], int(d["port"]), d.get("rack"), kv.create_revision)
            return "brokers"
        if key == CONTROLLER:
            self.controller_id = int(decode(kv.value)["broker_id"])
            return "controller"
        if key == CONTROLLER_EPOCH:
            self.controller_epoch = int(decode(kv.value))
            return "controller"
        if key.startswith(SHUTDOWN):
            self.shutting_down.add(int(key[len(SHUTDOWN):]))
            return "shutdown"
        tp = parse_state_key(key)
        if tp is not None:
            self.states[tp] = PartitionState.from_kv(kv)
            return "states"
        if key.startswith(TOPICS) and "/" not in key[len(TOPICS):]:
            name = key[len(TOPICS):]
            self.topics[name] = TopicInfo.from_json(name, kv.value)
            return "topics"
        return None

    def _delete(self, key: str) -> str | None:
        if key.startswith(BROKERS):
            self.brokers.pop(int(key[len(BROKERS):]), None)
            return "brokers"
        if key == CONTROLLER:
            self.controller_id = None
            return "controller"
        if key.startswith(SHUTDOWN):
            self.shutting_down.discard(int(key[len(SHUTDOWN):]))
            return "shutdown"
        tp = parse_state_key(key)
        if tp is not None:
            self.states.pop(tp, None)
            return "states"
        if key.startswith(TOPICS) and "/" not in key[len(TOPICS):]:
            self.topics.pop(key[len(TOPICS):], None)
            return "topics"
        return None

    # ------------------------------------------------------------------ questions

    def live(self, node_id: int) -> bool:
        return node_id in self.brokers

    def leader_of(self, topic: str, partition: int) -> int:
        s = self.states.get((topic, partition))
        return NO_LEADER if s is None else s.leader

    def replicas_of(self, topic: str, partition: int) -> list[int]:
        t = self.topics.get(topic)
        return [] if t is None or partition >= len(t.assignment) else t.assignment[partition]


def assign_replicas(brokers: list[int], partitions: int, replication_factor: int, start_index: int,
                    first_partition: int = 0) -> list[list[int]]:
    """Kafka's rack-unaware assignment (AdminUtils.assignReplicasToBrokersRackUnaware) with a given start index and
    shift (Kafka draws both at random; kafkapy uses the partition count of the cluster so placements spread)."""
    brokers = sorted(brokers)
    n = len(brokers)
    out = []
    current = start_index % n
    shift = start_index % n
    for p in range(first_partition, first_partition + partitions):
        if p > 0 and p % n == 0:
            shift += 1
        first = (p + current) % n
        replicas = [brokers[first]]
        for j in range(replication_factor - 1):
            replicas.append(brokers[(first + 1 + (shift + j) % (n - 1)) % n])
        out.append(replicas)
    return out
