"""Partition logs: segments, indexes, recovery, retention, compaction. Knows record batches, not requests."""
