"""``kafkapy.Cluster``: several brokers in one process, for tests and for learning how replication works.

The brokers (:class:`kafkapy.broker.Broker`, each with its own listener on 127.0.0.1 and its own logs) and their
metadata store (:class:`~kafkapy.cluster.store.MemoryStore`) run on one event loop in a thread of their own; the
methods below may be called from any thread. Levers, in the manner of franz-go's kfake:

- ``kill(node)``: a crash. The broker stops answering at once and says nothing to the cluster; its lease expires
  after ``broker.session.timeout.ms`` and the controller elects other leaders. Its logs stay (as a disk would).
- ``restart(node)``: a killed (or running) broker comes back on the same port with the logs it had; it registers
  again (a new broker epoch), truncates where its log diverged from the leaders' and catches up.
- ``pause(node)`` / ``resume(node)``: a hang (a long GC pause, a stopped VM): no lease renewal, no fetching, requests
  wait unanswered. Back, it finds its lease gone, leads nothing, catches up with the metadata and follows.
- ``stop_broker(node)``: a controlled shutdown (leaderships move away first).
- ``move_leader(topic, partition, node)``: make an in-sync replica the leader (a preferred-leader election).
- ``isolate(side_a, side_b)`` / ``heal()``: a network partition, e.g. ``isolate({1}, {2, 3})``. The metadata store
  and the clients are on the larger side (a tie: ``side_b``). Traffic flows within a side and not between them:
  broker-to-broker connections between the sides are refused and closed (replica fetches, transaction markers,
  both ways), and the brokers of the other side (the smaller one) also lose the store (every store call raises
  StoreError, as a lost connection to etcd would) and their clients (a request from a non-broker client id closes
  its connection, also one being handled when the partition began: its answer is lost). So the smaller side cannot
  renew its leases: each of its brokers gives up its leaderships after ``broker.session.timeout.ms`` minus one
  heartbeat, before its lease expires and the controller (on the larger side) elects other leaders and shrinks the
  ISRs; it acknowledges nothing afterwards. ``heal()`` ends the partition: an isolated broker reaches the store
  again, finds its lease gone, catches up with the metadata, registers anew (a new broker epoch) and follows,
  truncating where its log diverged, and rejoins the ISRs. ``side_b`` defaults to every other broker; the sides
  must not overlap and together hold every broker. Restarting a broker of the smaller side fails until ``heal()``
  (it cannot register). ``kafkapy/cluster/netsplit.py`` has the mechanics.

``console=True`` (or a port) serves the web console with its Cluster page from this object on the cluster's loop, so
it keeps answering whichever broker is killed; its stop/kill/restart buttons call :meth:`astop_broker`,
:meth:`akill` and :meth:`arestart`, the levers' coroutines.

Settings default to Kafka's, except what makes a test cluster quick: ``broker.session.timeout.ms`` 3000,
``broker.heartbeat.interval.ms`` 500, ``replica.fetch.backoff.ms`` 100, ``replica.lag.time.max.ms`` 10000, and the
internal topics' replication factors at most the broker count (as Testcontainers' Kafka cluster sets them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import sys
import tempfile
import threading
import traceback
from typing import Mapping

from kafkapy.broker import Broker
from kafkapy.cluster.metadata import CONTROLLER_EPOCH, PartitionState, encode, state_key
from kafkapy.cluster.netsplit import Isolation, PartitionableStore
from kafkapy.cluster.store import Compare, MemoryStore, Put
from kafkapy.config import BrokerConfig

TEST_DEFAULTS = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "replica.fetch.backoff.ms": "100",
    "replica.lag.time.max.ms": "10000",
}


class Node:
    """One broker of the cluster: its settings, its running core (None while down), the logs it keeps."""

    def __init__(self, node_id: int, config: BrokerConfig):
        self.node_id = node_id
        self.config = config
        self.core: Broker | None = None
        self.port = 0
        self.logs = None          # memory storage: the LogManager kept across kill/restart (its "disk")
        self.store: PartitionableStore | None = None    # its connection to the cluster's store (isolate cuts it)
        self.isolation: Isolation | None = None          # its side of a network partition (None: not isolated)

    @property
    def running(self) -> bool:
        return self.core is not None


class Cluster:
    def __init__(self, brokers: int = 3, *, storage: str = "memory", data_dir: str | None = None,
                 config: Mapping[str, object] | None = None, host: str = "127.0.0.1", start_timeout: float = 30.0,
                 port: int = 0, console: bool | int = False, console_host: str | None = None):
        """``port``: the first broker's port, the others on the next ones (0: each a free port). ``console``: serve
        the web console (:class:`kafkapy.console.ClusterConsole`, with the Cluster page and its stop/kill/restart
        buttons) from the cluster itself, so it outlives any one broker: True (a free port) or a port number, on
        ``console_host`` (default ``host``); its address is :attr:`console_url`."""
        if brokers < 1:
            raise ValueError("a cluster needs at least one broker")
        self.size = brokers
        self.storage = storage
        self.host = host
        self.start_timeout = start_timeout
        self._tmp = None
        if storage == "disk" and data_dir is None:
            self._tmp = data_dir = tempfile.mkdtemp(prefix="kafkapy-cluster-")
        self.data_dir = data_dir
        props = dict(TEST_DEFAULTS)
        rf = str(min(3, brokers))
        props.setdefault("offsets.topic.replication.factor", rf)
        props.setdefault("transaction.state.log.replication.factor", rf)
        props.update({k: str(v) for k, v in (config or {}).items()})
        self.properties = props
        self.nodes: dict[int, Node] = {}
        for i in range(1, brokers + 1):
            cfg = BrokerConfig(host=host, port=0, storage=storage, node_id=i, cluster_id="kafkapy-cluster",
                               data_dir=os.path.join(data_dir, f"broker-{i}") if data_dir else None,
                               properties=dict(props))
            self.nodes[i] = Node(i, cfg)
            self.nodes[i].port = port + i - 1 if port else 0
        self.store: MemoryStore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.console_port: int | None = None if console is False or console is None else (
            0 if console is True else int(console))
        self.console_host = console_host or host
        self.console = None       # kafkapy.console.ClusterConsole while running

    # ------------------------------------------------------------------ lifecycle

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{n.port}" for n in self.nodes.values())

    @property
    def console_url(self) -> str | None:
        """``http://host:port/`` of the web console (``console=``), None without one."""
        return None if self.console is None else self.console.url

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def __aenter__(self) -> Cluster:
        """``async with kafkapy.Cluster(3) as c``: started from an event loop (the brokers still run on the
        cluster's own loop and thread; the blocking levers may be called with ``asyncio.to_thread``)."""
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> Cluster:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            ready.set()
            loop.run_forever()
            loop.close()
        self._thread = threading.Thread(target=main, name="kafkapy-cluster", daemon=True)
        self._thread.start()
        ready.wait(5)
        try:
            self._run(self._astart(), self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    async def _astart(self) -> None:
        self.store = MemoryStore()
        for n in self.nodes.values():
            n.store = PartitionableStore(self.store)
            await self._start_node(n)
        if self.console_port is not None:
            from kafkapy.console import ClusterConsole

            console = ClusterConsole(self, self.console_host, self.console_port)
            await console.start()
            self.console = console

    async def _start_node(self, n: Node) -> None:
        n.config.port = n.port
        core = Broker(n.config, store=n.store)
        core.logs = n.logs
        core.isolation = n.isolation
        try:
            await core.start()
        except BaseException:
            await core.stop(crash=True)          # its tasks and listener go; the logs stay (its "disk")
            raise
        n.core = core
        n.port = core.server.port
        n.logs = core.logs

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            try:
                self._run(self._astop(), 30)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
        self._loop = self._thread = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    async def _astop(self) -> None:
        if self.console is not None:
            console, self.console = self.console, None
            await console.stop()
        for n in self.nodes.values():
            if n.core is not None:
                await n.core.stop(crash=True)     # no controlled shutdown: the whole cluster goes
                if n.core.logs is not None:
                    n.core.logs.close()
                n.core = None
        if self.store is not None:
            await self.store.close()

    def _run(self, coro, timeout: float):
        if self._loop is None:
            raise RuntimeError("the cluster is not running")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            # where the cluster's loop is (a stuck loop shows here; a slow operation shows as the loop idling)
            frame = sys._current_frames().get(self._thread.ident) if self._thread is not None else None
            where = "".join(traceback.format_stack(frame, limit=12)) if frame is not None else "?"
            waiting = []
            for task in list(asyncio.all_tasks(self._loop)):
                chain, coro = [], task.get_coro()
                while coro is not None and len(chain) < 20:      # the awaited coroutines, outermost first
                    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                    if frame is not None:
                        chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
                    coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
                if chain and chain[0].endswith(" run"):
                    waiting.append(" -> ".join(chain))
            raise TimeoutError(f"cluster operation took more than {timeout} s; the cluster thread is at:\n"
                               f"{where}\nwaiting:\n" + "\n".join(waiting)) from None

    def call(self, fn, timeout: float = 30.0):
        """Run ``fn(cluster)`` on the cluster's loop (a coroutine function is awaited); returns its result."""
        async def run():
            r = fn(self)
            return await r if asyncio.iscoroutine(r) else r
        return self._run(run(), timeout)

    # ------------------------------------------------------------------ topics and who leads

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = -1,
                     config: Mapping[str, object] | None = None) -> str:
        async def create(_):
            core = self._any_core()
            await core.create_topic_in_cluster(name, partitions, replication_factor,
                                               {k: str(v) for k, v in (config or {}).items()})
            return name
        return self.call(create)

    def _any_core(self) -> Broker:
        for n in self.nodes.values():
            if n.core is not None and n.core.paused is None and not (n.isolation and n.isolation.cut_off):
                return n.core     # (an isolated broker's view of the metadata is stale)
        raise RuntimeError("no broker of the cluster is running")

    def _state(self, topic: str, partition: int) -> PartitionState | None:
        """The partition's state in the store itself (a broker's view may lag, e.g. just after :meth:`heal`)."""
        async def get(c):
            kv = await c.store.get(state_key(topic, partition))
            return None if kv is None else PartitionState.from_kv(kv)
        return self.call(get)

    def leader_for(self, topic: str, partition: int = 0) -> int:
        """The partition's leader as the metadata store says (-1: offline)."""
        s = self._state(topic, partition)
        return -1 if s is None else s.leader

    def isr_for(self, topic: str, partition: int = 0) -> list[int]:
        s = self._state(topic, partition)
        return [] if s is None else sorted(s.isr)

    def coordinator_for(self, group_id: str) -> int:
        """The broker coordinating ``group_id`` (the leader of its ``__consumer_offsets`` partition), -1 if none."""
        from kafkapy.internal_topics import OFFSETS_TOPIC, partition_for

        def get(c):
            image = c._any_core().cluster.image
            t = image.topics.get(OFFSETS_TOPIC)
            return -1 if t is None else image.leader_of(OFFSETS_TOPIC, partition_for(group_id, len(t.assignment)))
        return self.call(get)

    def control_key(self, node: int, key: int | str | None, fn, *, keep: bool = False):
        """A request control hook (kafkapy/control.py) on one broker: api ``key`` (None: every request)."""
        return self.call(lambda c: c.core(node).add_control(fn, key=key, keep=keep))

    def controller(self) -> int:
        return self.call(lambda c: c._any_core().controller_id())

    def wait_for(self, predicate, timeout: float = 15.0, interval: float = 0.05) -> None:
        """Until ``predicate(cluster)`` is true on the cluster's loop (bounded; TimeoutError otherwise)."""
        async def wait(c):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not predicate(c):
                if loop.time() > deadline:
                    raise TimeoutError("cluster condition not reached in time")
                await asyncio.sleep(interval)
        self.call(wait, timeout + 5)

    def core(self, node: int) -> Broker:
        """The running core broker of ``node`` (for use on the cluster's loop, e.g. within :meth:`call`)."""
        core = self.nodes[node].core
        if core is None:
            raise RuntimeError(f"broker {node} is not running")
        return core

    # ------------------------------------------------------------------ levers

    def kill(self, node: int) -> None:
        self.call(lambda c: c.akill(node))

    def restart(self, node: int) -> None:
        self.call(lambda c: c.arestart(node), self.start_timeout)

    def stop_broker(self, node: int) -> None:
        """A controlled shutdown of one broker (SIGTERM)."""
        self.call(lambda c: c.astop_broker(node))

    # the same levers as coroutines, for the cluster's own loop (the web console's buttons)

    def _node(self, node: int) -> Node:
        n = self.nodes.get(node)
        if n is None:
            raise ValueError(f"no broker {node} in this cluster (brokers {min(self.nodes)}..{max(self.nodes)})")
        return n

    async def akill(self, node: int) -> None:
        n = self._node(node)
        if n.core is not None:
            core, n.core = n.core, None
            await core.stop(crash=True)

    async def arestart(self, node: int) -> None:
        n = self._node(node)
        if n.core is not None:
            core, n.core = n.core, None
            await core.stop(crash=True)
        if self.storage == "disk" and n.logs is not None:
            n.logs = None            # reopened from its directory, with recovery (no clean shutdown)
        await self._start_node(n)

    async def astop_broker(self, node: int) -> None:
        n = self._node(node)
        if n.core is not None:
            core, n.core = n.core, None
            await core.stop()
            if self.storage == "memory":
                n.logs = core.logs
                core.logs = None
            else:
                n.logs = None

    def pause(self, node: int) -> None:
        async def pause(c):
            core = c.core(node)
            core.paused = asyncio.Event()
            await core.cluster.suspend()
        self.call(pause)

    def resume(self, node: int) -> None:
        async def resume(c):
            core = c.core(node)
            await core.cluster.resume()
            gate, core.paused = core.paused, None
            if gate is not None:
                gate.set()
        self.call(resume, self.start_timeout)

    def move_leader(self, topic: str, partition: int, node: int) -> None:
        """Make ``node`` (an in-sync replica) the leader, with the next leader epoch."""
        async def move(c):
            core = c._any_core()
            image = core.cluster.image
            kv = await c.store.get(state_key(topic, partition))
            if kv is None:
                raise ValueError(f"no partition {topic}-{partition}")
            s = PartitionState.from_kv(kv)
            if node not in s.isr:
                raise ValueError(f"broker {node} is not in the ISR {s.isr} of {topic}-{partition}")
            new = PartitionState(node, s.leader_epoch + 1, s.isr, image.controller_epoch)
            res = await c.store.txn([Compare(state_key(topic, partition), "mod", "=", kv.mod_revision),
                                     Compare(CONTROLLER_EPOCH, "value", "=", encode(image.controller_epoch))],
                                    [Put(state_key(topic, partition), new.to_json())])
            if not res.succeeded:
                raise RuntimeError("the partition state changed meanwhile; try again")
            await core.cluster.wait_for_revision(res.revision)
        self.call(move)

    def isolate(self, side_a, side_b=None) -> None:
        """A network partition between the brokers of ``side_a`` and those of ``side_b`` (default: all the others);
        the store and the clients are on the larger side (a tie: ``side_b``). See the module docstring."""
        a = {int(x) for x in side_a}
        b = set(self.nodes) - a if side_b is None else {int(x) for x in side_b}
        if not a or not b or a & b or a | b != set(self.nodes):
            raise ValueError(f"the sides {sorted(a)} and {sorted(b)} must be non-empty, disjoint and hold every "
                             f"broker of {sorted(self.nodes)}")
        cut = a if len(a) <= len(b) else b

        def apply(c):         # on the cluster's loop: every broker sees the partition begin at once
            for n in c.nodes.values():
                n.isolation = Isolation(n.node_id in cut, frozenset(b if n.node_id in a else a))
                n.store.cut_off = n.node_id in cut
                if n.core is not None:
                    n.core.isolation = n.isolation
        self.call(apply)

    def heal(self) -> None:
        """End a network partition (:meth:`isolate`): every broker reaches the store, the others and the clients."""
        def apply(c):
            for n in c.nodes.values():
                n.isolation = None
                if n.store is not None:
                    n.store.cut_off = False
                if n.core is not None:
                    n.core.isolation = None
        self.call(apply)
