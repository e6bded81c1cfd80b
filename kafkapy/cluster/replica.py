"""Followers: the replica fetchers (Kafka's ``ReplicaFetcherThread`` / ``AbstractFetcherThread``).

One fetcher per leader broker, one asyncio task each, one connection to the leader's listener. Each round sends a
Fetch (v12: topic names, the follower's broker id as ``replica_id``, per partition its log end offset as the fetch
offset, its latest leader epoch as ``last_fetched_epoch`` and the partition's leader epoch as
``current_leader_epoch``) and, per partition of the answer:

- a diverging epoch (KIP-320/KIP-595): the follower's log has batches of an epoch the leader ended earlier; truncate
  to min(the leader's end offset of that epoch, the follower's own end offset for it), then fetch again;
- records: appended as they are (``AppendOrigin.REPLICATION``: the leader's offsets, epochs and producer fields,
  producer state updated, so a follower made leader still recognises a retried idempotent batch);
- the leader's high watermark: the follower's is min(it, its own log end offset);
- NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, UNKNOWN_TOPIC_OR_PARTITION: the partition waits
  for the metadata to change (the fetcher manager moves it when it does), and tries again after
  ``replica.fetch.backoff.ms`` anyway: the new leader may simply not have applied its leadership yet when the follower,
  which saw the same metadata first, asks (as Kafka's fetcher delays such a partition rather than dropping it);
- OFFSET_OUT_OF_RANGE below the leader's log start offset: start over empty at it.

A connection error backs off ``replica.fetch.backoff.ms`` and reconnects. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
import time

from wire import protocol
from wire.messages import fetch_request as FQ
from wire.messages.error_codes import ErrorCode

log = logging.getLogger("kafkapy.replica")

FETCH_VERSION = 12
_SIZE = struct.Struct(">i")
_WAIT_FOR_METADATA = {ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH,
                      ErrorCode.UNKNOWN_LEADER_EPOCH, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}


class LeaderConnection:
    """A request/response connection to another broker (one request in flight). ``owner`` (the broker sending) and
    ``node`` (the broker it reaches): while a network partition (``owner.isolation``, kafkapy/cluster/netsplit.py)
    puts ``node`` on the other side, a request closes the connection and raises ConnectionRefusedError."""

    def __init__(self, host: str, port: int, client_id: str, timeout: float, owner=None, node: int = -1):
        self.host, self.port = host, port
        self.client_id = client_id
        self.timeout = timeout
        self.owner = owner
        self.node = node
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._corr = itertools.count(1)

    async def request(self, api_key: int, version: int, body):
        iso = self.owner.isolation if self.owner is not None else None
        if iso is not None and self.node in iso.unreachable:
            self.close()
            raise ConnectionRefusedError(f"broker {self.node} is unreachable (network partition)")
        if self.writer is None:
            self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                              self.timeout)
        corr = next(self._corr)
        self.writer.write(protocol.encode_request(api_key, version, corr, self.client_id, body))
        await self.writer.drain()
        size = _SIZE.unpack(await asyncio.wait_for(self.reader.readexactly(4), self.timeout))[0]
        frame = await asyncio.wait_for(self.reader.readexactly(size), self.timeout)
        got, resp = protocol.decode_response(api_key, version, memoryview(frame))
        if got != corr:
            raise ConnectionError(f"correlation id {got}, expected {corr}")
        return resp

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class ReplicaFetcher:
    """Fetches the partitions this broker follows from one leader broker."""

    def __init__(self, broker, leader_id: int, host: str, port: int):
        self.broker = broker
        self.leader_id = leader_id
        self.partitions: dict[tuple[str, int], object] = {}     # (topic, partition) -> kafkapy.partition.Partition
        self.parked: set[tuple[str, int]] = set()                # waiting for metadata after a leader error
        self._retry_at: dict[tuple[str, int], float] = {}        # parked keys fetched again after a backoff
        cfg = broker.config
        self.max_wait_ms = cfg.get_int("replica.fetch.wait.max.ms")
        self.backoff = cfg.get_int("replica.fetch.backoff.ms") / 1000
        self.max_bytes = cfg.get_int("replica.fetch.response.max.bytes")
        self.partition_max_bytes = cfg.get_int("replica.fetch.max.bytes")
        self.conn = LeaderConnection(host, port, f"broker-{broker.node_id}-fetcher-{leader_id}",
                                     timeout=self.max_wait_ms / 1000 + cfg.get_int("replica.socket.timeout.ms") / 1000,
                                     owner=broker, node=leader_id)
        self._changed = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.stopping = False

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"kafkapy-fetcher-{self.leader_id}")

    async def stop(self) -> None:
        # the flag ends the loop even when a cancellation is lost (Python 3.11's wait_for can swallow one that
        # arrives as its inner wait completes); the wait is bounded either way
        self.stopping = True
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=5)
            self.task = None
        self.conn.close()

    def add(self, partition) -> None:
        key = (partition.topic, partition.index)
        self.partitions[key] = partition
        self.parked.discard(key)
        self._retry_at.pop(key, None)
        self._changed.set()

    def remove(self, topic: str, index: int) -> None:
        self.partitions.pop((topic, index), None)
        self.parked.discard((topic, index))
        self._retry_at.pop((topic, index), None)

    def _build(self):
        by_topic: dict[str, list] = {}
        now = time.monotonic()
        for key, at in list(self._retry_at.items()):
            if now >= at:
                del self._retry_at[key]
                self.parked.discard(key)
        for (topic, idx), p in self.partitions.items():
            if (topic, idx) in self.parked:
                continue
            lg = p.log
            by_topic.setdefault(topic, []).append(FQ.FetchPartition(
                partition=idx, current_leader_epoch=p.leader_epoch, fetch_offset=lg.log_end_offset,
                last_fetched_epoch=lg.latest_epoch, log_start_offset=lg.log_start_offset,
                partition_max_bytes=self.partition_max_bytes))
        if not by_topic:
            return None
        return FQ.FetchRequest(replica_id=self.broker.node_id, max_wait_ms=self.max_wait_ms, min_bytes=1,
                               max_bytes=self.max_bytes, isolation_level=0, session_id=0, session_epoch=-1,
                               topics=[FQ.FetchTopic(topic=t, partitions=ps) for t, ps in by_topic.items()],
                               forgotten_topics_data=[], rack_id="")

    async def _run(self) -> None:
        while not self.stopping:
            req = self._build()
            if req is None:
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                resp = await self.conn.request(1, FETCH_VERSION, req)
            except asyncio.CancelledError:
                raise
            except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
                log.info("broker %d: fetch from leader %d failed (%s); retrying in %.1f s", self.broker.node_id,
                         self.leader_id, e.__class__.__name__, self.backoff)
                self.conn.close()
                await asyncio.sleep(self.backoff)
                continue
            if resp.error_code:
                log.warning("broker %d: fetch from leader %d answered %s", self.broker.node_id, self.leader_id,
                            ErrorCode(resp.error_code).name)
                await asyncio.sleep(self.backoff)
                continue
            if self.stopping:
                return
            for t in resp.responses:
                for pd in t.partitions:
                    self._handle(t.topic, pd)

    def _handle(self, topic: str, pd) -> None:
        key = (topic, pd.partition_index)
        p = self.partitions.get(key)
        if p is None:
            return
        code = pd.error_code
        lg = p.log
        if code == ErrorCode.NONE:
            div = pd.diverging_epoch
            if div is not None and (div.epoch >= 0 or div.end_offset >= 0):
                own_epoch, own_end = lg.end_offset_for_epoch(div.epoch)
                target = min(div.end_offset, own_end if own_epoch == div.epoch else div.end_offset)
                target = max(min(target, lg.log_end_offset), 0)
                log.info("%s-%d: truncating to %d (leader %d: epoch %d ends at %d)", topic, pd.partition_index,
                         target, self.leader_id, div.epoch, div.end_offset)
                lg.truncate_to(target)
                return
            if pd.records:
                try:
                    p.append_as_follower(bytearray(pd.records))
                except Exception as e:  # noqa: BLE001 - this partition stops; the others go on
                    log.error("%s-%d: follower append failed: %s; waiting for new metadata", topic,
                              pd.partition_index, e)
                    self.parked.add(key)
                    return
            p.update_follower_high_watermark(pd.high_watermark)
            if pd.log_start_offset > lg.log_start_offset:      # DeleteRecords or retention on the leader
                lg.delete_records_before(min(pd.log_start_offset, lg.high_watermark))
        elif code in _WAIT_FOR_METADATA:
            self.parked.add(key)
            self._retry_at[key] = time.monotonic() + self.backoff
        elif code == ErrorCode.OFFSET_OUT_OF_RANGE and pd.log_start_offset > lg.log_end_offset:
            log.info("%s-%d: leader's log starts at %d, past our end %d: starting over there", topic,
                     pd.partition_index, pd.log_start_offset, lg.log_end_offset)
            lg.truncate_fully(pd.log_start_offset)
        else:
            log.warning("%s-%d: fetch from leader %d answered %s", topic, pd.partition_index, self.leader_id,
                        ErrorCode(code).name if code in ErrorCode._value2member_map_ else code)
            self.parked.add(key)
