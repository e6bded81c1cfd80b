"""A broker's membership in a cluster: registration, the metadata watch, roles of its partitions, the controller.

Lifecycle (:meth:`ClusterMember.start`, after the broker listens):

1. Register ``brokers/ids/<id>`` under a lease of ``broker.session.timeout.ms`` (waiting, bounded, for the lease of
   a previous incarnation to expire); the broker epoch is the registration's create revision. Keep the lease alive
   every ``broker.heartbeat.interval.ms``. A broker that has not renewed its lease for a session timeout minus one
   heartbeat stops leading anything (its partitions refuse appends) before the controller can elect others; when it
   can reach the store again it ends its old lease if that survived, catches up with the metadata, registers anew
   (a new broker epoch) and follows.
2. Read the whole cluster prefix and follow one watch from the next revision, in revision order, into a
   :class:`~kafkapy.cluster.metadata.ClusterImage`. After each revision the broker's topics and partitions are made
   to match: logs for the replicas it holds, ``Partition.make_leader`` / ``make_follower`` from the partition
   states, the replica fetchers (kafkapy/cluster/replica.py) following the leaders. A broken watch (StoreError) is
   resumed from the last applied revision after a backoff doubling up to one heartbeat; the first revision after it
   reconciles everything.
3. Campaign for the controller key; the winner runs :class:`~kafkapy.cluster.controller.Controller`.

Writes a broker makes itself: the topic admin of Kafka's AdminZkClient (creation: the topic and its initial partition
states in one transaction that requires the topic to be absent; deletion: the topic key and its partition states in
one transaction; new partitions and config changes: a compare-and-set on the topic key's revision, with the new
partitions' initial states), each answered once this broker's image has it; and its own ISR changes as a leader (compare-and-set on the partition state's
revision). Controlled shutdown (:meth:`stop` with ``controlled=True``): ask with ``shutdown/<id>``, wait (bounded)
until the controller has moved its leaderships away, then revoke the lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from kafkapy.cluster.controller import Controller
from kafkapy.cluster.metadata import (BROKERS, CONTROLLER, CONTROLLER_EPOCH, NO_LEADER, TOPICS, BrokerInfo,
                                      ClusterImage, PartitionState, TopicInfo, assign_replicas, broker_key, encode,
                                      shutdown_key, state_key, topic_key)
from kafkapy.cluster.replica import ReplicaFetcher
from kafkapy.cluster.store import CompactedError, Compare, Delete, LeaseNotFound, MetadataStore, Put, StoreError
from kafkapy.internal_topics import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC

log = logging.getLogger("kafkapy.cluster")


class ClusterMember:
    def __init__(self, broker, store: MetadataStore):
        self.broker = broker
        self.store = store
        self.node_id = broker.node_id
        cfg = broker.config
        self.session_timeout = cfg.get_int("broker.session.timeout.ms") / 1000
        self.heartbeat = cfg.get_int("broker.heartbeat.interval.ms") / 1000
        self.lag_ms = cfg.get_int("replica.lag.time.max.ms")
        self.image = ClusterImage()
        self.lease_id = 0
        self.broker_epoch = 0
        self.controller: Controller | None = None
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self.fenced = False                    # lost its lease: leads nothing until registered again
        self._last_renewal = 0.0
        self._rejoin_failures = 0
        self._tasks: list[asyncio.Task] = []
        self._generation = 0             # bumped by halt(): the task loops of an older generation stop
        self._applied = asyncio.Condition()
        self._reconciling = asyncio.Lock()
        self.stopped = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._register()
        res = await self.store.range("")
        self.image.load(res.kvs, res.revision)
        await self._reconcile({"brokers", "controller", "topics", "states"})
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch(res.revision + 1), name=f"kafkapy-{self.node_id}-watch"),
                       loop.create_task(self._keep_alive(), name=f"kafkapy-{self.node_id}-lease"),
                       loop.create_task(self._isr_expiry(), name=f"kafkapy-{self.node_id}-isr")]
        await self._campaign()

    async def stop(self, controlled: bool = True) -> None:
        """Leave the cluster; ``controlled``: move leaderships away first (bounded by the session timeout)."""
        if self.stopped:
            return
        if controlled and self.lease_id and not self.fenced and \
                self.broker.config.get_bool("controlled.shutdown.enable"):
            try:
                await self._controlled_shutdown()
            except (StoreError, asyncio.TimeoutError) as e:
                log.warning("broker %d: controlled shutdown incomplete: %s", self.node_id, e)
        self.stopped = True
        if self.controller is not None:
            self.controller.active = False
        await self.halt()
        if controlled and self.lease_id:
            try:
                await self.store.revoke(self.lease_id)
            except StoreError:
                pass

    async def halt(self) -> None:
        """Stop every task and fetcher without a word to the store (a crash: the lease expires on its own)."""
        self.stopped = True
        self._generation += 1            # loops of the old generation end even if a cancellation is lost
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._tasks.clear()
        for f in list(self.fetchers.values()):
            await f.stop()
        self.fetchers.clear()

    async def suspend(self) -> None:
        """A hang (kafkapy.Cluster.pause): no lease renewal, no metadata, no fetching, until :meth:`resume`."""
        await self.halt()
        self.stopped = False

    async def resume(self) -> None:
        """Back from a hang: a lease that expired meanwhile means every leadership is lost (fenced at once); then
        register again if needed and catch up with the metadata from the last revision seen."""
        lost = False
        try:
            await self.store.keep_alive(self.lease_id)
            self._last_renewal = time.monotonic()
        except StoreError:
            lost = True
            await self._fence("lease expired while paused")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch(self.image.revision + 1), name=f"kafkapy-{self.node_id}-watch"),
                       loop.create_task(self._isr_expiry(), name=f"kafkapy-{self.node_id}-isr")]
        # lead nothing on a stale view: catch up with the store first, then register (which unfences)
        await self.wait_for_revision((await self.store.range(CONTROLLER)).revision)
        if lost:
            await self._register()
        self._tasks.append(loop.create_task(self._keep_alive(), name=f"kafkapy-{self.node_id}-lease"))
        await self._reconcile({"states", "controller"})

    async def _controlled_shutdown(self) -> None:
        await self.store.put(shutdown_key(self.node_id), b"{}", lease=self.lease_id)
        deadline = time.monotonic() + self.session_timeout

        def done() -> bool:
            for s in self.image.states.values():
                if s.leader == self.node_id and [r for r in s.isr if r != self.node_id
                                                 and r in self.image.brokers]:
                    return False
            return True
        async with self._applied:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise asyncio.TimeoutError("leaderships not moved within the session timeout")
                try:
                    await asyncio.wait_for(self._applied.wait(), left)
                except asyncio.TimeoutError:
                    pass

    # ------------------------------------------------------------------ registration and lease

    async def _register(self) -> None:
        host, port = self.broker.config.advertised
        info = BrokerInfo(self.node_id, host, port, self.broker.config.get("broker.rack"))
        deadline = time.monotonic() + self.session_timeout + 2
        lease = await self.store.grant(self.session_timeout)
        while True:
            await self.store.keep_alive(lease.id)     # the wait below may outlast a lease nobody renews
            res = await self.store.txn([Compare(broker_key(self.node_id), "create", "=", 0)],
                                       [Put(broker_key(self.node_id), info.to_json(), lease=lease.id)])
            if res.succeeded:
                break
            if time.monotonic() > deadline:
                await self.store.revoke(lease.id)
                raise StoreError(f"broker id {self.node_id} is registered by another broker")
            await asyncio.sleep(0.1)      # a previous incarnation's lease has not expired yet
        self.lease_id = lease.id
        self.broker_epoch = res.revision
        self.fenced = False
        self._last_renewal = time.monotonic()
        log.info("broker %d registered (broker epoch %d)", self.node_id, self.broker_epoch)

    async def _keep_alive(self) -> None:
        gen = self._generation
        while gen == self._generation:
            await asyncio.sleep(self.heartbeat)
            if gen != self._generation:
                return
            try:
                await asyncio.wait_for(self.store.keep_alive(self.lease_id), self.heartbeat)
                self._last_renewal = time.monotonic()
                if not self.fenced:
                    continue
                why = "fenced while its lease survived"     # reachable again just before the lease expired
            except (LeaseNotFound, StoreError, asyncio.TimeoutError) as e:
                if not self.fenced and not isinstance(e, LeaseNotFound) and \
                        time.monotonic() - self._last_renewal <= self.session_timeout - self.heartbeat:
                    continue
                why = f"lease not renewed: {e.__class__.__name__}"
            await self._fence(why)
            try:
                await self._rejoin()
                self._rejoin_failures = 0
            except (StoreError, asyncio.TimeoutError) as e2:
                self._rejoin_failures += 1
                (log.warning if self._rejoin_failures == 1 else log.debug)(
                    "broker %d: cannot register again yet: %s", self.node_id, e2)

    async def _rejoin(self) -> None:
        """A fenced broker back in touch with the store: end the old lease (if it survived), catch up with the
        metadata (lead nothing on a stale view), register anew (a new broker epoch) and follow."""
        if self.lease_id:
            try:
                await self.store.revoke(self.lease_id)
            except LeaseNotFound:
                pass
        await self.wait_for_revision((await self.store.range(CONTROLLER)).revision)
        await self._register()
        await self._campaign()
        await self._reconcile({"states"})

    async def _fence(self, why: str) -> None:
        """Give up every leadership at once (the controller elects others once the lease is gone)."""
        if not self.fenced:
            log.warning("broker %d: %s; giving up its leaderships", self.node_id, why)
        self.fenced = True
        if self.controller is not None:
            self.controller.active = False
            self.controller = None
        for p in self.broker.partitions.values():
            if p.is_leader:
                p.make_follower(None, p.leader_epoch, p.isr, p.replicas, p.partition_epoch)
                if p.topic == OFFSETS_TOPIC:
                    self.broker.groups.partition_leadership(p.index, False)
                elif p.topic == TRANSACTION_STATE_TOPIC:
                    self.broker.transactions.partition_leadership(p.index, False)

    # ------------------------------------------------------------------ controller

    async def _campaign(self) -> None:
        if self.fenced or self.stopped or self.controller is not None:
            return
        res = await self.store.txn([Compare(CONTROLLER, "create", "=", 0)],
                                   [Put(CONTROLLER, encode({"broker_id": self.node_id}), lease=self.lease_id)])
        if not res.succeeded:
            return
        while True:
            kv = await self.store.get(CONTROLLER_EPOCH)
            epoch = (int(kv.value) if kv else 0) + 1
            bumped = await self.store.txn([Compare(CONTROLLER_EPOCH, "mod", "=", kv.mod_revision if kv else 0)],
                                          [Put(CONTROLLER_EPOCH, encode(epoch))])
            if bumped.succeeded:
                break
        self.controller = Controller(self, epoch)
        log.info("broker %d is the controller (epoch %d)", self.node_id, epoch)
        await self.controller.reconcile()

    def unclean_election_enabled(self, topic: str) -> bool:
        t = self.broker.topics.get(topic)
        if t is None:
            return self.broker.config.get_bool("unclean.leader.election.enable")
        return str(self.broker.effective_topic_configs(t)["unclean.leader.election.enable"]).lower() == "true"

    # ------------------------------------------------------------------ the watch

    async def _watch(self, start: int) -> None:
        """Follow the store from ``start``. A broken watch (StoreError: the store unreachable, the stream ended)
        is resumed from the last applied revision, after a backoff that doubles up to one heartbeat; the first
        revision after it reconciles everything (what failed in a reconcile is done again)."""
        gen = self._generation
        backoff = 0.05
        broken = False
        while gen == self._generation:
            try:
                async with self.store.watch("", self.image.revision + 1 if broken else start) as w:
                    async for resp in w:
                        if gen != self._generation:
                            return
                        changed = self.image.apply(resp.revision, resp.events)
                        if broken:
                            changed |= {"brokers", "controller", "topics", "states"}
                            broken = False
                            backoff = 0.05
                        if changed:
                            await self._reconcile(changed)
                        async with self._applied:
                            self._applied.notify_all()
                return                            # the store was closed
            except CompactedError:
                raise
            except StoreError as e:
                if not broken:
                    log.warning("broker %d: metadata watch broken at revision %d: %s; resuming", self.node_id,
                                self.image.revision, e)
                broken = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.heartbeat)

    async def _reconcile(self, changed: set[str]) -> None:
        async with self._reconciling:
            if "topics" in changed:
                self.broker.sync_topics(self.image)
            if changed & {"topics", "states", "brokers"}:
                self._apply_states()
            if self.fenced or self.stopped:
                return
            if "controller" in changed and self.image.controller_id is None:
                await self._campaign()
            if self.controller is not None and self.controller.active:
                await self.controller.reconcile()

    def _apply_states(self) -> None:
        image = self.image
        wanted: dict[int, list] = {}
        for (topic, p), s in image.states.items():
            part = self.broker.partition(topic, p)
            if part is None:
                continue
            replicas = image.replicas_of(topic, p)
            if s.leader == self.node_id and not self.fenced:
                if not part.is_leader or part.leader_epoch != s.leader_epoch:
                    part.make_leader(s.leader_epoch, set(s.isr), replicas, s.partition_epoch)
                    part.alter_isr = self._alter_isr_for(part)
                    log.info("broker %d leads %s-%d (epoch %d, isr %s)", self.node_id, topic, p, s.leader_epoch,
                             s.isr)
                elif set(s.isr) != part.isr or s.partition_epoch != part.partition_epoch:
                    part.apply_isr(set(s.isr), s.partition_epoch)
            else:
                leader = None if s.leader == NO_LEADER or self.fenced else s.leader
                part.make_follower(leader, s.leader_epoch, set(s.isr), replicas, s.partition_epoch)
                if leader is not None and leader != self.node_id:
                    wanted.setdefault(leader, []).append(part)
            if topic == OFFSETS_TOPIC:      # the group coordinator moves with the partition's leadership
                self.broker.groups.partition_leadership(p, part.is_leader)
            elif topic == TRANSACTION_STATE_TOPIC:      # and so does the transaction coordinator
                self.broker.transactions.partition_leadership(p, part.is_leader)
        self._update_fetchers(wanted)

    def _update_fetchers(self, wanted: dict[int, list]) -> None:
        for leader_id, f in list(self.fetchers.items()):
            keep = {(p.topic, p.index) for p in wanted.get(leader_id, [])}
            for key in list(f.partitions):
                if key not in keep:
                    f.remove(*key)
            info = self.image.brokers.get(leader_id)
            if info is None or (f.conn.host, f.conn.port) != (info.host, info.port):
                asyncio.ensure_future(f.stop())
                del self.fetchers[leader_id]
        for leader_id, parts in wanted.items():
            info = self.image.brokers.get(leader_id)
            if info is None:
                continue
            f = self.fetchers.get(leader_id)
            if f is None:
                f = self.fetchers[leader_id] = ReplicaFetcher(self.broker, leader_id, info.host, info.port)
                f.start()
            for p in parts:
                if f.partitions.get((p.topic, p.index)) is not p or (p.topic, p.index) in f.parked:
                    f.add(p)

    def _alter_isr_for(self, part):
        async def alter_isr(new_isr: set[int]) -> bool:
            """The leader's ISR change: a compare-and-set on the partition state it last saw."""
            if self.fenced or not part.is_leader:
                return False
            s = PartitionState(self.node_id, part.leader_epoch, sorted(new_isr), self.image.controller_epoch)
            try:
                res = await self.store.txn([Compare(state_key(part.topic, part.index), "mod", "=",
                                                    part.partition_epoch)],
                                           [Put(state_key(part.topic, part.index), s.to_json())])
            except StoreError as e:
                log.warning("%s-%d: ISR change failed: %s", part.topic, part.index, e)
                return False
            if res.succeeded:
                part.partition_epoch = res.revision
                log.info("%s-%d: ISR %s -> %s", part.topic, part.index, sorted(part.isr), sorted(new_isr))
            return res.succeeded
        return alter_isr

    async def _isr_expiry(self) -> None:
        """Kafka's isr-expiration task: every replica.lag.time.max.ms / 2."""
        period = max(self.lag_ms / 2000, 0.05)
        gen = self._generation
        while gen == self._generation:
            await asyncio.sleep(period)
            for part in list(self.broker.partitions.values()):
                if part.is_leader:
                    part.maybe_shrink_isr(self.lag_ms)

    # ------------------------------------------------------------------ admin writes

    async def create_topic(self, name: str, partitions: int, replication_factor: int, configs: dict[str, str],
                           internal: bool = False) -> TopicInfo:
        """The topic and its partitions' initial states in one transaction (the topic must not exist). Returns once
        this broker's image has it."""
        live = sorted(self.image.brokers)
        start = sum(len(t.assignment) for t in self.image.topics.values())
        assignment = assign_replicas(live, partitions, replication_factor, start)
        info = TopicInfo(name, uuid.uuid4(), assignment, dict(configs), internal)
        ops = [Put(topic_key(name), info.to_json())]
        for p, replicas in enumerate(assignment):
            ops.append(Put(state_key(name, p), PartitionState(replicas[0], 0, list(replicas),
                                                              self.image.controller_epoch).to_json()))
        res = await self.store.txn([Compare(topic_key(name), "create", "=", 0)], ops)
        if not res.succeeded:
            raise TopicExistsError(name)
        await self.wait_for_revision(res.revision)
        return info

    async def _read_topic(self, name: str, topic_id: uuid.UUID | None = None) -> tuple[TopicInfo, int]:
        """The topic as the store has it now, and its key's revision (UnknownTopicError if absent or another id)."""
        kv = await self.store.get(topic_key(name))
        if kv is None:
            raise UnknownTopicError(name)
        info = TopicInfo.from_json(name, kv.value)
        if topic_id is not None and info.topic_id != topic_id:
            raise UnknownTopicError(name)
        return info, kv.mod_revision

    async def delete_topic(self, name: str, topic_id: uuid.UUID | None = None) -> TopicInfo:
        """The topic key and every partition state of it in one transaction (as AdminZkClient.deleteTopic followed by
        the controller's deletion, at once); each broker's watch then drops the topic and its logs. Returns once
        this broker's image no longer has it."""
        while True:
            info, rev = await self._read_topic(name, topic_id)
            res = await self.store.txn([Compare(topic_key(name), "mod", "=", rev)],
                                       [Delete(topic_key(name)), Delete(f"{TOPICS}{name}/partitions/", prefix=True)])
            if res.succeeded:
                break                   # else changed meanwhile (new partitions, configs): read it again
        log.info("broker %d: deleted topic %s (id %s) from the cluster metadata", self.node_id, name, info.topic_id)
        await self.wait_for_revision(res.revision)
        return info

    async def add_partitions(self, name: str, total: int, assignments: list[list[int]] | None = None) -> TopicInfo:
        """New partitions up to ``total``: their replicas (``assignments``, or Kafka's rack-unaware assignment
        continued from the existing partitions, as AdminZkClient.createPartitions) and their initial states
        (leader: the first live replica; ISR: the live replicas), with a compare-and-set on the topic key.
        Raises TopicError (INVALID_PARTITIONS, INVALID_REPLICA_ASSIGNMENT, INVALID_REPLICATION_FACTOR)."""
        from kafkapy.broker import TopicError
        from wire.messages.error_codes import ErrorCode

        while True:
            info, rev = await self._read_topic(name)
            current = len(info.assignment)
            if total <= current:
                raise TopicError(ErrorCode.INVALID_PARTITIONS,
                                 f"Topic currently has {current} partitions, which is higher than the requested "
                                 f"{total}." if total < current else f"Topic already has {current} partitions.")
            live = sorted(self.image.brokers)
            rf = len(info.assignment[0])
            if assignments is not None:
                new = [list(a) for a in assignments]
                check_assignment(new, total - current, rf, set(live))
            else:
                if rf > len(live):
                    raise TopicError(ErrorCode.INVALID_REPLICATION_FACTOR,
                                     f"Replication factor: {rf} larger than available brokers: {len(live)}.")
                first = info.assignment[0][0]
                start = next((i for i, b in enumerate(live) if b >= first), 0)
                new = assign_replicas(live, total - current, rf, start, first_partition=current)
            info.assignment = info.assignment + new
            ops = [Put(topic_key(name), info.to_json())]
            compares = [Compare(topic_key(name), "mod", "=", rev)]
            for p, replicas in enumerate(new, start=current):
                isr = [r for r in replicas if r in self.image.brokers]
                state = PartitionState(isr[0] if isr else NO_LEADER, 0, isr or replicas[:1],
                                       self.image.controller_epoch)
                compares.append(Compare(state_key(name, p), "create", "=", 0))
                ops.append(Put(state_key(name, p), state.to_json()))
            res = await self.store.txn(compares, ops)
            if res.succeeded:
                break
        log.info("broker %d: topic %s now has %d partitions (new replicas %s)", self.node_id, name, total, new)
        await self.wait_for_revision(res.revision)
        return info

    async def alter_topic_configs(self, name: str, update) -> dict[str, str]:
        """The topic's config overrides become ``update(current overrides)`` (a compare-and-set on the topic key,
        again on a conflict); every broker applies them from its watch. Returns the new overrides."""
        while True:
            info, rev = await self._read_topic(name)
            info.configs = dict(update(dict(info.configs)))
            res = await self.store.txn([Compare(topic_key(name), "mod", "=", rev)],
                                       [Put(topic_key(name), info.to_json())])
            if res.succeeded:
                break
        await self.wait_for_revision(res.revision)
        return info.configs

    async def wait_for_revision(self, revision: int, timeout: float = 10.0) -> None:
        """Until this broker's image has applied ``revision`` (bounded)."""
        deadline = time.monotonic() + timeout
        async with self._applied:
            while self.image.revision < revision:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise asyncio.TimeoutError(f"metadata revision {revision} not applied within {timeout} s")
                try:
                    await asyncio.wait_for(self._applied.wait(), left)
                except asyncio.TimeoutError:
                    pass

    def live_brokers(self) -> list[BrokerInfo]:
        return [self.image.brokers[b] for b in sorted(self.image.brokers)]


class TopicExistsError(Exception):
    pass


class UnknownTopicError(Exception):
    pass


def check_assignment(assignment: list[list[int]], count: int, rf: int, live: set[int]) -> None:
    """AdminZkClient.validateReplicaAssignment for new partitions: one per new partition, the topic's replication
    factor, no broker twice, only registered brokers (TopicError INVALID_REPLICA_ASSIGNMENT)."""
    from kafkapy.broker import TopicError
    from wire.messages.error_codes import ErrorCode

    def bad(msg: str):
        return TopicError(ErrorCode.INVALID_REPLICA_ASSIGNMENT, msg)
    if len(assignment) != count:
        raise bad(f"Increasing the number of partitions by {count} but {len(assignment)} assignments provided.")
    for replicas in assignment:
        if not replicas:
            raise bad("Cannot have replication factor of 0 for partition id.")
        if len(set(replicas)) != len(replicas):
            raise bad(f"Duplicate brokers not allowed in replica assignment: {', '.join(map(str, replicas))}.")
        if len(replicas) != rf:
            raise bad(f"Inconsistent replication factor between partitions, partition 0 has {rf} while the new "
                      f"partitions have replication factors [{len(replicas)}], respectively.")
        unknown = sorted(set(replicas) - live)
        if unknown:
            raise bad(f"Unknown broker(s) in replica assignment: {', '.join(map(str, unknown))}.")


__all__ = ["BROKERS", "ClusterMember", "TopicExistsError", "UnknownTopicError", "check_assignment"]
