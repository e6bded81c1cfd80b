"""Partition logs: segments, indexes, recovery, retention, compaction. Knows record batches, not requests."""

from .checkpoint import LeaderEpochCache
from .config import LogConfig
from .errors import (
    CorruptRecordError,
    InvalidRecordError,
    InvalidTimestampError,
    KafkaStorageError,
    OffsetOutOfRangeError,
    RecordBatchTooLargeError,
    RecordTooLargeError,
    StorageError,
)
from .log import AppendInfo, MemoryPartitionLog, PartitionLog, TimestampAndOffset
from .manager import LogManager, Storage
from .producer_state import AppendOrigin, ProducerStateManager

__all__ = [
    "AppendInfo", "AppendOrigin", "CorruptRecordError", "InvalidRecordError", "InvalidTimestampError",
    "KafkaStorageError", "LeaderEpochCache", "LogConfig", "LogManager", "MemoryPartitionLog", "OffsetOutOfRangeError",
    "PartitionLog", "ProducerStateManager", "RecordBatchTooLargeError",
    "RecordTooLargeError", "Storage", "StorageError", "TimestampAndOffset",
]
