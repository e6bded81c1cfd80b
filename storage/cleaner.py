"""Log compaction (cleanup.policy=compact): the place for it, not implemented yet.

Plan, Kafka's way: for a log with policy "compact", build an offset map key -> last offset over the dirty part
(from the cleaner checkpoint to the active segment), then rewrite groups of inactive segments into ``.cleaned``
files keeping only the latest record per key (tombstones kept until delete.retention.ms), rename to ``.swap``,
swap into ``PartitionLog.segments`` and delete the old files. ``PartitionLog._load`` already removes leftover
``.cleaned``/``.swap``/``.deleted`` files, so an interrupted clean leaves the old segments in place. Needs record
decoding (and decompression) from ``wire.records``.
"""

from __future__ import annotations


def compact_log(log) -> int:
    """Compact ``log`` in place; returns bytes reclaimed. Not implemented: a no-op returning 0."""
    return 0
