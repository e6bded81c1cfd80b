"""A small synchronous Kafka client over plain sockets, built on the project's own codec (``wire``).

Enough for the command-line tools: bootstrap, ApiVersions negotiation per broker (the highest version both
sides support), Metadata, routing to partition leaders and group coordinators (FindCoordinator), and a
timeout on every call. Not thread-safe; one request in flight per connection.
"""

from __future__ import annotations

import itertools
import socket
import struct
import time

from wire import protocol as P
from wire.errors import DecodeError
from wire.messages.error_codes import RETRIABLE, ErrorCode

DEFAULT_BOOTSTRAP = "localhost:9092"
CLIENT_SOFTWARE = ("kafkapy-tools", "1.0")

# Kafka's default descriptions (Errors.java) for the errors the tools meet without a broker message.
DESCRIPTIONS = {
    "UNKNOWN_TOPIC_OR_PARTITION": "This server does not host this topic-partition.",
    "TOPIC_ALREADY_EXISTS": "Topic already exists.",
    "INVALID_PARTITIONS": "Number of partitions is below 1.",
    "INVALID_REPLICATION_FACTOR": "Replication factor is below 1 or larger than the number of available brokers.",
    "INVALID_CONFIG": "Configuration is invalid.",
    "INVALID_TOPIC_EXCEPTION": "The request attempted to perform an operation on an invalid topic.",
    "GROUP_ID_NOT_FOUND": "The group id does not exist.",
    "NON_EMPTY_GROUP": "The group is not empty.",
    "INVALID_GROUP_ID": "The configured groupId is invalid.",
    "COORDINATOR_NOT_AVAILABLE": "The coordinator is not available.",
    "NOT_COORDINATOR": "This is not the correct coordinator.",
    "COORDINATOR_LOAD_IN_PROGRESS": "The coordinator is loading and hence can't process requests.",
    "OFFSET_OUT_OF_RANGE": "The requested offset is not within the range of offsets maintained by the server.",
    "NOT_LEADER_OR_FOLLOWER": "For requests intended only for the leader, this error indicates that the broker "
                              "is not the current leader.",
    "LEADER_NOT_AVAILABLE": "There is no leader for this topic-partition as we are in the middle of a "
                            "leadership election.",
    "MESSAGE_TOO_LARGE": "The request included a message larger than the max message size the server will accept.",
    "RECORD_LIST_TOO_LARGE": "The request included message batch larger than the configured segment size on "
                             "the server.",
    "TOPIC_DELETION_DISABLED": "Topic deletion is disabled.",
    "UNKNOWN_TOPIC_ID": "This server does not host this topic ID.",
    "UNSUPPORTED_VERSION": "The version of API is not supported.",
    "REBALANCE_IN_PROGRESS": "The group is rebalancing, so a rejoin is needed.",
    "ILLEGAL_GENERATION": "Specified group generation id is not valid.",
    "UNKNOWN_MEMBER_ID": "The coordinator is not aware of this member.",
    "INVALID_REQUIRED_ACKS": "Produce request specified an invalid value for required acks.",
    "UNSUPPORTED_COMPRESSION_TYPE": "The requesting client does not support the compression type of given "
                                    "partition.",
    "REQUEST_TIMED_OUT": "The request timed out.",
    "INVALID_RECORD": "This record has failed the validation on broker and hence will be rejected.",
    "POLICY_VIOLATION": "Request parameters do not satisfy the configured policy.",
}


class ToolError(Exception):
    """An error to report to the shell user: one line, exit code 1."""


class KafkaError(ToolError):
    """A Kafka error code from the broker, with its name and a message."""

    def __init__(self, code: int, message: str | None = None, context: str | None = None):
        self.code = int(code)
        try:
            self.name = ErrorCode(self.code).name
        except ValueError:
            self.name = f"UNKNOWN_ERROR_CODE_{self.code}"
        self.message = message or DESCRIPTIONS.get(self.name) or ""
        self.context = context
        super().__init__(str(self))

    @property
    def retriable(self) -> bool:
        return self.code in RETRIABLE

    def __str__(self):
        text = f"{self.name}: {self.message}" if self.message else self.name
        return f"{self.context}: {text}" if self.context else text


class BrokerUnreachable(ToolError):
    """No connection to the broker (refused, unresolvable, timed out, closed)."""


def check(code: int, message: str | None = None, context: str | None = None) -> None:
    if code:
        raise KafkaError(code, message, context)


def parse_address(addr: str) -> tuple[str, int]:
    addr = addr.strip()
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, sep, port = addr.rpartition(":")
        if not sep:
            host, port = addr, "9092"
    try:
        return host or "localhost", int(port)
    except ValueError:
        raise ToolError(f"bad broker address {addr!r} (expected HOST:PORT)") from None


class Connection:
    """One socket to one broker; ``request()`` sends a request and reads its response, bounded in time."""

    def __init__(self, host: str, port: int, client_id: str, connect_timeout: float, timeout: float):
        self.host, self.port = host, port
        self.client_id = client_id
        self.timeout = timeout
        self._correlation = itertools.count(1)
        try:
            self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        except socket.timeout:
            raise BrokerUnreachable(f"cannot connect to {host}:{port}: timed out after {connect_timeout:g} s") \
                from None
        except OSError as e:
            raise BrokerUnreachable(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.versions: dict[int, tuple[int, int]] = {}

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _recv_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.sock.settimeout(left)
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise BrokerUnreachable(f"connection to {self.host}:{self.port} closed by the broker")
            buf += chunk
        return bytes(buf)

    def request(self, api_key: int, version: int, body, timeout: float | None = None, expect_response: bool = True):
        api = P.API[api_key]
        corr = next(self._correlation)
        frame = P.encode_request(api_key, version, corr, self.client_id, body)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            self.sock.sendall(frame)
            if not expect_response:
                return None
            size = P.frame_size(self._recv_exact(4, deadline))
            data = self._recv_exact(size, deadline)
        except socket.timeout:
            self.close()
            raise ToolError(f"{api.name} request to {self.host}:{self.port} timed out") from None
        except BrokerUnreachable:
            self.close()
            raise
        except OSError as e:
            self.close()
            raise BrokerUnreachable(f"connection to {self.host}:{self.port} failed: {e.strerror or e}") from None
        try:
            got, resp = P.decode_response(api_key, version, data)
        except DecodeError as e:
            raise ToolError(f"cannot decode the {api.name} v{version} response: {e}") from None
        if got != corr:
            raise ToolError(f"{api.name} response has correlation id {got}, expected {corr}")
        return resp

    def negotiate(self) -> None:
        """ApiVersions: try our highest version; a broker that does not know it answers UNSUPPORTED_VERSION
        with its own range (at v0), and we retry at the highest version both know."""
        key = P.API_VERSIONS_KEY
        mod = P.API[key].request
        version = P.API[key].max_version
        for _ in range(3):
            resp = self.request(key, version, mod.MESSAGE(*CLIENT_SOFTWARE))
            if resp.error_code == ErrorCode.UNSUPPORTED_VERSION:
                theirs = next((a for a in resp.api_keys if a.api_key == key), None)
                new = min(version - 1, theirs.max_version if theirs else 0)
                if new < 0 or new == version:
                    break
                version = new
                continue
            check(resp.error_code, None, "ApiVersions")
            self.versions = {a.api_key: (a.min_version, a.max_version) for a in resp.api_keys}
            return
        raise ToolError(f"{self.host}:{self.port} does not answer ApiVersions at any version we know")

    def version(self, api_name: str) -> int:
        """The highest version of ``api_name`` both this codec and the broker support."""
        api = P.API_BY_NAME[api_name]
        theirs = self.versions.get(api.key)
        if theirs is None:
            raise ToolError(f"the broker at {self.host}:{self.port} does not support {api_name}")
        lo, hi = max(theirs[0], api.min_version), min(theirs[1], api.max_version)
        if lo > hi:
            raise ToolError(f"no {api_name} version in common with the broker at {self.host}:{self.port} "
                            f"(broker {theirs[0]}-{theirs[1]}, ours {api.min_version}-{api.max_version})")
        return hi


class Client:
    """Connections by node id, cluster metadata, and routing. Use as a context manager."""

    def __init__(self, bootstrap: str = DEFAULT_BOOTSTRAP, client_id: str = "kafkapy-tools",
                 timeout: float = 30.0, connect_timeout: float = 10.0):
        self.bootstrap = [parse_address(a) for a in bootstrap.split(",") if a.strip()]
        if not self.bootstrap:
            raise ToolError("no bootstrap server given")
        self.client_id = client_id
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.brokers: dict[int, tuple[str, int]] = {}
        self.conns: dict[int | str, Connection] = {}
        self.cluster_id: str | None = None
        self.controller_id: int | None = None
        self.topics: dict[str, object] = {}        # name -> MetadataResponseTopic
        self.topic_names: dict[object, str] = {}   # topic id -> name
        self._any: Connection | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for c in self.conns.values():
            c.close()
        self.conns.clear()

    # ---------------------------------------------------------------- connections

    def _open(self, host: str, port: int) -> Connection:
        conn = Connection(host, port, self.client_id, self.connect_timeout, self.timeout)
        try:
            conn.negotiate()
        except BaseException:
            conn.close()
            raise
        return conn

    def any_connection(self) -> Connection:
        """A connection to some broker: a known one, else the first bootstrap address that answers."""
        if self._any is not None and self._any.sock.fileno() != -1:
            return self._any
        for c in self.conns.values():
            if c.sock.fileno() != -1:
                self._any = c
                return c
        errors = []
        for host, port in self.bootstrap:
            try:
                conn = self._open(host, port)
            except BrokerUnreachable as e:
                errors.append(str(e))
                continue
            self.conns[f"bootstrap:{host}:{port}"] = conn
            self._any = conn
            return conn
        raise BrokerUnreachable("; ".join(errors) if len(errors) == 1
                                else "no bootstrap server reachable: " + "; ".join(errors))

    def node(self, node_id: int) -> Connection:
        conn = self.conns.get(node_id)
        if conn is not None and conn.sock.fileno() != -1:
            return conn
        if node_id not in self.brokers:
            self.metadata()
        if node_id not in self.brokers:
            raise ToolError(f"broker {node_id} is not in the cluster metadata")
        host, port = self.brokers[node_id]
        # the bootstrap connection may already be this broker: reuse it
        for key, c in list(self.conns.items()):
            if isinstance(key, str) and (c.host, c.port) == (host, port) and c.sock.fileno() != -1:
                self.conns[node_id] = c
                return c
        conn = self.conns[node_id] = self._open(host, port)
        return conn

    def call(self, api_name: str, build, node: int | None = None, timeout: float | None = None,
             expect_response: bool = True):
        """Send ``build(version)`` (a request message for the negotiated version) to ``node`` (None: any)."""
        conn = self.any_connection() if node is None else self.node(node)
        version = conn.version(api_name)
        api = P.API_BY_NAME[api_name]
        return conn.request(api.key, version, build(version), timeout=timeout, expect_response=expect_response), \
            version

    def version(self, api_name: str, node: int | None = None) -> int:
        conn = self.any_connection() if node is None else self.node(node)
        return conn.version(api_name)

    # ---------------------------------------------------------------- metadata

    def metadata(self, topics: list[str] | None = None, allow_auto_create: bool = False):
        """Metadata for ``topics`` (None: all). Updates the broker table and the topic cache."""
        M = P.module("metadata_request")

        def build(v):
            if topics is None:
                ts = [] if v == 0 else None
            else:
                ts = [M.MetadataRequestTopic(name=t) for t in topics]
            return M.MetadataRequest(topics=ts, allow_auto_topic_creation=allow_auto_create)

        resp, _ = self.call("Metadata", build)
        self.brokers = {b.node_id: (b.host, b.port) for b in resp.brokers}
        self.cluster_id = resp.cluster_id
        self.controller_id = resp.controller_id
        for t in resp.topics:
            if t.error_code == 0 and t.name is not None:
                self.topics[t.name] = t
                self.topic_names[t.topic_id] = t.name
            elif t.name in self.topics:
                del self.topics[t.name]
        return resp

    def topic(self, name: str, context: str | None = None):
        """MetadataResponseTopic of an existing topic (raises UNKNOWN_TOPIC_OR_PARTITION)."""
        resp = self.metadata([name])
        for t in resp.topics:
            if t.name == name:
                check(t.error_code, f"Topic '{name}' does not exist." if t.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                      else None, context)
                return t
        raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic '{name}' does not exist.", context)

    def leader(self, topic: str, partition: int) -> int:
        t = self.topics.get(topic) or self.topic(topic)
        for p in t.partitions:
            if p.partition_index == partition:
                if p.leader_id < 0:
                    raise KafkaError(ErrorCode.LEADER_NOT_AVAILABLE, None, f"{topic}-{partition}")
                return p.leader_id
        raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                         f"Partition {partition} of topic '{topic}' does not exist.")

    def coordinator(self, group: str, key_type: int = 0) -> int:
        """Node id of the coordinator of ``group`` (key_type 0) or transactional id (1), retrying while it loads."""
        F = P.module("find_coordinator_request")
        deadline = time.monotonic() + self.timeout
        while True:
            resp, v = self.call("FindCoordinator",
                                lambda v: F.FindCoordinatorRequest(key=group, key_type=key_type,
                                                                   coordinator_keys=[group]))
            if v >= 4:
                c = resp.coordinators[0]
                code, msg, node, host, port = c.error_code, c.error_message, c.node_id, c.host, c.port
            else:
                code, msg, node, host, port = resp.error_code, resp.error_message, resp.node_id, resp.host, resp.port
            if code in (ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS) \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            check(code, msg, f"FindCoordinator {group}")
            self.brokers.setdefault(node, (host, port))
            return node

    # ---------------------------------------------------------------- offsets

    def list_offsets(self, partitions: dict[str, list[int]], timestamp: int | dict, isolation_level: int = 0
                     ) -> dict[tuple[str, int], int]:
        """Offsets for (topic, partition) at ``timestamp`` (-2 earliest, -1 latest, or ms; a dict maps (topic,
        partition) to its own timestamp), asked of each partition's leader. -1 where no offset matches."""
        L = P.module("list_offsets_request")
        by_leader: dict[int, dict[str, list[int]]] = {}
        for topic, parts in partitions.items():
            for p in parts:
                by_leader.setdefault(self.leader(topic, p), {}).setdefault(topic, []).append(p)
        out: dict[tuple[str, int], int] = {}
        for node, tps in by_leader.items():
            def build(v, tps=tps):
                return L.ListOffsetsRequest(replica_id=-1, isolation_level=isolation_level, topics=[
                    L.ListOffsetsTopic(name=t, partitions=[
                        L.ListOffsetsPartition(partition_index=p, timestamp=(
                            timestamp[(t, p)] if isinstance(timestamp, dict) else timestamp))
                        for p in ps]) for t, ps in tps.items()])

            resp, v = self.call("ListOffsets", build, node)
            for t in resp.topics:
                for p in t.partitions:
                    check(p.error_code, None, f"ListOffsets {t.name}-{p.partition_index}")
                    if v == 0:
                        out[(t.name, p.partition_index)] = p.old_style_offsets[0] if p.old_style_offsets else -1
                    else:
                        out[(t.name, p.partition_index)] = p.offset
        return out


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Utils.murmur2), as the Java client's default partitioner uses it for keys."""
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    n4 = length // 4
    for i in range(n4):
        (k,) = struct.unpack_from("<I", data, i * 4)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    base = n4 * 4
    if rest == 3:
        h ^= data[base + 2] << 16
    if rest >= 2:
        h ^= data[base + 1] << 8
    if rest >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """The Java client's (and librdkafka's murmur2_random) partition for a non-null key."""
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


# ---------------------------------------------------------------- group offsets (OffsetFetch / OffsetCommit)

def fetch_committed(client: Client, group: str, partitions: dict[str, list[int]] | None = None,
                    coordinator: int | None = None) -> dict[tuple[str, int], int]:
    """Committed offsets of ``group`` ((topic, partition) -> offset), for ``partitions`` or (None) all of them.
    Partitions without a committed offset are left out."""
    OF = P.module("offset_fetch_request")
    node = client.coordinator(group) if coordinator is None else coordinator
    deadline = time.monotonic() + client.timeout

    def build(v):
        if v >= 8:
            topics = None if partitions is None else [
                OF.OffsetFetchRequestTopics(name=t, partition_indexes=ps) for t, ps in partitions.items()]
            return OF.OffsetFetchRequest(groups=[OF.OffsetFetchRequestGroup(group_id=group, topics=topics)],
                                        require_stable=True)
        if partitions is None and v < 2:
            raise ToolError("the broker's OffsetFetch cannot list all of a group's offsets (needs v2+)")
        topics = None if partitions is None else [
            OF.OffsetFetchRequestTopic(name=t, partition_indexes=ps) for t, ps in partitions.items()]
        return OF.OffsetFetchRequest(group_id=group, topics=topics, require_stable=True)

    while True:
        resp, v = client.call("OffsetFetch", build, node)
        if v >= 8:
            g = resp.groups[0]
            code, topics = g.error_code, g.topics
        else:
            code, topics = (resp.error_code if v >= 2 else 0), resp.topics
        if code in (ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, ErrorCode.UNSTABLE_OFFSET_COMMIT) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
            continue
        check(code, None, f"OffsetFetch {group}")
        out = {}
        for t in topics:
            for p in t.partitions:
                check(p.error_code, None, f"OffsetFetch {group} {t.name}-{p.partition_index}")
                if p.committed_offset >= 0:
                    out[(t.name, p.partition_index)] = p.committed_offset
        return out


def commit_offsets(client: Client, group: str, offsets: dict[tuple[str, int], int], generation: int = -1,
                   member_id: str = "", coordinator: int | None = None) -> None:
    """OffsetCommit ``offsets`` for ``group`` (generation -1 and no member: a commit outside any group
    membership, as Kafka accepts for an empty group)."""
    if not offsets:
        return
    C = P.module("offset_commit_request")
    node = client.coordinator(group) if coordinator is None else coordinator
    by_topic: dict[str, list] = {}
    for (t, p), off in sorted(offsets.items()):
        by_topic.setdefault(t, []).append((p, off))

    def build(v):
        return C.OffsetCommitRequest(group_id=group, generation_id_or_member_epoch=generation, member_id=member_id,
                                     topics=[C.OffsetCommitRequestTopic(name=t, partitions=[
                                         C.OffsetCommitRequestPartition(partition_index=p, committed_offset=off,
                                                                        committed_metadata="")
                                         for p, off in ps]) for t, ps in by_topic.items()])

    resp, _ = client.call("OffsetCommit", build, node)
    for t in resp.topics:
        for p in t.partitions:
            check(p.error_code, None, f"OffsetCommit {group} {t.name}-{p.partition_index}")
