"""Producer id allocation, unique across restarts.

Kafka's controller hands out blocks of 1000 producer ids and remembers the next block in its metadata log.
kafkapy does the same with a small file in the data dir (``kafkapy-producer-ids.json``, written atomically
before any id of a new block is handed out), so a restarted broker never reuses an id, even after a kill -9.
Ids found in ``__transaction_state`` on load are also respected (``observe``).

In a cluster every broker hands out producer ids, so blocks come from the metadata store instead (ZooKeeper's
``/latest_producer_id_block``, compare-and-set): :meth:`ProducerIdManager.ensure` takes a new block there before
the current one runs out, so :meth:`generate` never waits.
"""

from __future__ import annotations

import json
import os

from storage.checkpoint import write_atomic

BLOCK_SIZE = 1000
BLOCK_KEY = "latest_producer_id_block"      # in a cluster's metadata store
FILE_NAME = "kafkapy-producer-ids.json"


class ProducerIdManager:
    def __init__(self, data_dir: str | None, store=None):
        self.store = store                      # a cluster's metadata store (kafkapy/cluster/store.py), or None
        self.path = os.path.join(data_dir, FILE_NAME) if data_dir and store is None else None
        self.next_id = 0
        self.block_end = 0          # ids below this may be handed out without touching the file
        if self.path and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                stored = int(json.load(f)["next_block_start"])
            self.next_id = self.block_end = stored

    def observe(self, producer_id: int) -> None:
        """An id seen in the logs: never hand it out again."""
        if producer_id >= self.next_id:
            self.next_id = producer_id + 1
            if self.next_id > self.block_end:
                self.block_end = self.next_id   # the next generate() persists a new block past it

    async def ensure(self) -> None:
        """A cluster: make sure the current block has an id left, taking the next block from the store."""
        if self.store is None or self.next_id < self.block_end:
            return
        from kafkapy.cluster.store import Compare, Put
        while True:
            kv = await self.store.get(BLOCK_KEY)
            start = json.loads(kv.value)["block_end"] if kv is not None else 0
            start = max(start, self.next_id)
            res = await self.store.txn([Compare(BLOCK_KEY, "mod", "=", kv.mod_revision if kv else 0)],
                                       [Put(BLOCK_KEY, json.dumps({"version": 1, "block_start": start,
                                                                   "block_end": start + BLOCK_SIZE}).encode())])
            if res.succeeded:
                self.next_id, self.block_end = start, start + BLOCK_SIZE
                return

    def generate(self) -> int:
        if self.store is not None and self.next_id >= self.block_end:
            raise RuntimeError("no producer id block: ensure() first")
        if self.next_id >= self.block_end:
            self.block_end = self.next_id + BLOCK_SIZE
            if self.path:
                write_atomic(self.path, json.dumps({"version": 1, "next_block_start": self.block_end}))
        pid = self.next_id
        self.next_id += 1
        return pid
