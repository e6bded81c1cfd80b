"""Per-log configuration: the topic-level configs that matter to storage, with Kafka's defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DAY_MS = 24 * 60 * 60 * 1000

# Kafka topic config name -> LogConfig field
KAFKA_NAMES = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "max.message.bytes": "max_message_bytes",
    "message.timestamp.type": "message_timestamp_type",
    "message.timestamp.before.max.ms": "message_timestamp_before_max_ms",
    "message.timestamp.after.max.ms": "message_timestamp_after_max_ms",
    "message.timestamp.difference.max.ms": "message_timestamp_difference_max_ms",
    "segment.index.bytes": None,
    "index.interval.bytes": "index_interval_bytes",
    "flush.messages": "flush_interval_messages",
    "flush.ms": "flush_interval_ms",
    "cleanup.policy": "cleanup_policy",
    "delete.retention.ms": "delete_retention_ms",
    "min.cleanable.dirty.ratio": "min_cleanable_dirty_ratio",
    "min.compaction.lag.ms": "min_compaction_lag_ms",
    "max.compaction.lag.ms": "max_compaction_lag_ms",
}

LONG_MAX = (1 << 63) - 1


@dataclass
class LogConfig:
    """Mutable: the broker may assign fields (or call :meth:`update`) when topic configs change; logs read the
    config on every append / retention pass, so changes take effect at once."""

    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * DAY_MS
    retention_ms: int = 7 * DAY_MS          # -1: keep forever
    retention_bytes: int = -1               # -1: no size limit
    max_message_bytes: int = 1048588
    message_timestamp_type: str = "CreateTime"   # or "LogAppendTime"
    # CreateTime topics refuse records whose timestamp is further than this before / after the broker's clock
    message_timestamp_before_max_ms: int = LONG_MAX
    message_timestamp_after_max_ms: int = LONG_MAX
    message_timestamp_difference_max_ms: int = LONG_MAX   # the older setting, used for a bound left at its default
    index_interval_bytes: int = 4096
    flush_interval_messages: int | None = None   # None: never fsync from the write path (Kafka's default)
    flush_interval_ms: int | None = None
    cleanup_policy: str = "delete"          # "delete", "compact" or "compact,delete"
    # log compaction (storage/cleaner.py), Kafka's topic configs and defaults
    delete_retention_ms: int = DAY_MS       # how long tombstones and transaction markers outlive their first clean
    min_cleanable_dirty_ratio: float = 0.5  # clean when dirty bytes / (clean + dirty bytes) exceeds this
    min_compaction_lag_ms: int = 0          # records younger than this are not compacted
    max_compaction_lag_ms: int = LONG_MAX   # dirty records older than this are compacted whatever the ratio

    @property
    def compact(self) -> bool:
        return "compact" in self.cleanup_policy

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"

    @property
    def timestamp_before_max_ms(self) -> int:
        """Kafka's LogConfig.getMessageTimestampBeforeMaxMs: before.max.ms unless it is still Long.MAX_VALUE, then
        the deprecated difference.max.ms."""
        v = self.message_timestamp_before_max_ms
        return v if v != LONG_MAX else self.message_timestamp_difference_max_ms

    @property
    def timestamp_after_max_ms(self) -> int:
        """Kafka's LogConfig.getMessageTimestampAfterMaxMs (same fallback)."""
        v = self.message_timestamp_after_max_ms
        return v if v != LONG_MAX else self.message_timestamp_difference_max_ms

    def update(self, **changes) -> None:
        for name, value in changes.items():
            if name not in self.__dataclass_fields__:
                raise TypeError(f"unknown log config {name!r}")
            setattr(self, name, value)

    def copy(self, **changes) -> LogConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_kafka(cls, props: dict[str, str], base: LogConfig | None = None) -> LogConfig:
        """Build from Kafka topic config names (``segment.bytes`` ...); unknown names are ignored."""
        cfg = dataclasses.replace(base) if base is not None else cls()
        for key, value in props.items():
            field = KAFKA_NAMES.get(key)
            if field is None:
                continue
            if field in ("message_timestamp_type", "cleanup_policy"):
                setattr(cfg, field, str(value))
            elif field == "min_cleanable_dirty_ratio":
                setattr(cfg, field, float(value))
            else:
                n = int(value)
                if field in ("flush_interval_messages", "flush_interval_ms") and n >= (1 << 62):
                    n = None  # Kafka's Long.MAX_VALUE default means never
                setattr(cfg, field, n)
        return cfg
