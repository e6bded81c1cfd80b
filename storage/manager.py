"""LogManager: every partition log of one data dir (or of memory), plus Kafka's data-dir level files.

``<data dir>/.kafka_cleanshutdown``               written last by :meth:`LogManager.close`; removed once the logs
                                                  are open, so its absence at start means "recover"
``<data dir>/recovery-point-offset-checkpoint``   per partition: offsets below are fsynced (written on checkpoint,
                                                  flush and close)
``<data dir>/log-start-offset-checkpoint``        per partition log start offset, rewritten (atomically, fsynced)
                                                  each time one moves (DeleteRecords, retention)
``<data dir>/cleaner-offset-checkpoint``          per compacted partition: the first dirty offset (where the next
                                                  compaction pass starts), written after each pass
``<data dir>/<topic>-<partition>/``               one :class:`~storage.log.PartitionLog` each
``<data dir>/<topic>-<partition>.<id>-delete/``   a log being deleted; finished on the next start
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Callable, Iterator

from .cleaner import LogCleaner
from .checkpoint import fsync_dir, read_offset_checkpoint, write_offset_checkpoint
from .config import LogConfig
from .log import MemoryPartitionLog, PartitionLog, parse_partition_dir

CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_FILE = "log-start-offset-checkpoint"
HIGH_WATERMARK_FILE = "replication-offset-checkpoint"   # Kafka's name: each partition's high watermark
CLEANER_OFFSET_FILE = "cleaner-offset-checkpoint"


class LogManager:
    """Opens all logs found in ``data_dir`` (``None``: memory backend, nothing on disk).

    ``config_for(topic)`` gives the LogConfig of a topic at open/create time (default: ``default_config``).
    """

    def __init__(self, data_dir: str | None, default_config: LogConfig | None = None, *,
                 config_for: Callable[[str], LogConfig | None] | None = None,
                 clock: Callable[[], int] | None = None, fsync: bool = True):
        self.data_dir = data_dir
        self.default_config = default_config or LogConfig()
        self._config_for = config_for
        self.clock = clock
        self.fsync = fsync
        self.logs: dict[tuple[str, int], PartitionLog] = {}
        self.had_clean_shutdown = False
        self.closed = False
        self.cleaner = LogCleaner(self)
        if data_dir is not None:
            self._load()

    @classmethod
    def memory(cls, default_config: LogConfig | None = None, **kw) -> LogManager:
        return cls(None, default_config, **kw)

    @property
    def in_memory(self) -> bool:
        return self.data_dir is None

    def config_for(self, topic: str) -> LogConfig:
        cfg = self._config_for(topic) if self._config_for is not None else None
        return cfg if cfg is not None else self.default_config.copy()

    # ------------------------------------------------------------------------------------------------ startup

    def _load(self) -> None:
        d = self.data_dir
        os.makedirs(d, exist_ok=True)
        marker = os.path.join(d, CLEAN_SHUTDOWN_FILE)
        self.had_clean_shutdown = os.path.exists(marker)
        recovery = read_offset_checkpoint(os.path.join(d, RECOVERY_POINT_FILE))
        starts = read_offset_checkpoint(os.path.join(d, LOG_START_OFFSET_FILE))
        dirty = read_offset_checkpoint(os.path.join(d, CLEANER_OFFSET_FILE))
        high_watermarks = read_offset_checkpoint(os.path.join(d, HIGH_WATERMARK_FILE))
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if not os.path.isdir(path):
                continue
            if name.endswith("-delete"):
                shutil.rmtree(path, ignore_errors=True)  # a DeleteTopics that did not finish
                continue
            tp = parse_partition_dir(name)
            if tp is None:
                continue
            log = PartitionLog.open(path, self.config_for(tp[0]), recovery_point=recovery.get(tp),
                                    log_start_offset=starts.get(tp), clean_shutdown=self.had_clean_shutdown,
                                    clock=self.clock, fsync=self.fsync)
            log.first_dirty_offset = dirty.get(tp)
            if tp in high_watermarks:      # where the partition's leader had it (the leader's rule may move it on)
                log.update_high_watermark(high_watermarks[tp])
            self._adopt(tp, log)
        # from here on a crash is an unclean shutdown
        if self.had_clean_shutdown:
            os.unlink(marker)
            if self.fsync:
                fsync_dir(d)
        self._write_log_start_offsets()

    def _adopt(self, tp: tuple[str, int], log: PartitionLog) -> None:
        log.on_log_start_offset_change = self._log_start_moved
        self.logs[tp] = log

    # ------------------------------------------------------------------------------------------------ logs

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        return self.logs.get((topic, partition))

    def __contains__(self, tp: tuple[str, int]) -> bool:
        return tp in self.logs

    def __iter__(self) -> Iterator[tuple[tuple[str, int], PartitionLog]]:
        return iter(list(self.logs.items()))

    def topics(self) -> set[str]:
        return {t for t, _ in self.logs}

    def create(self, topic: str, partition: int, config: LogConfig | None = None) -> PartitionLog:
        """Create the log (or return the existing one)."""
        tp = (topic, partition)
        log = self.logs.get(tp)
        if log is not None:
            return log
        cfg = config if config is not None else self.config_for(topic)
        if self.data_dir is None:
            log = MemoryPartitionLog(cfg, topic=topic, partition=partition, clock=self.clock)
        else:
            log = PartitionLog.open(os.path.join(self.data_dir, f"{topic}-{partition}"), cfg, clean_shutdown=False,
                                    clock=self.clock, fsync=self.fsync)
            if self.fsync:
                fsync_dir(self.data_dir)
        self._adopt(tp, log)
        return log

    get_or_create = create

    def delete(self, topic: str, partition: int) -> bool:
        """Delete a partition's log and its files (DeleteTopics). False when there was none."""
        cur = self.cleaner.current
        if cur is not None and cur[0] == (topic, partition):
            self.cleaner.abort()
        log = self.logs.pop((topic, partition), None)
        if log is None:
            return False
        log.on_log_start_offset_change = None
        if self.data_dir is None:
            log.delete()
            return True
        for seg in log.segments:
            seg.close()
        log.closed = True
        # rename first (atomic), remove after: a crash in between is finished on the next start
        doomed = os.path.join(self.data_dir, f"{topic}-{partition}.{uuid.uuid4().hex}-delete")
        os.replace(log.dir, doomed)
        if self.fsync:
            fsync_dir(self.data_dir)
        shutil.rmtree(doomed, ignore_errors=True)
        self._write_log_start_offsets()
        return True

    def delete_topic(self, topic: str) -> int:
        return sum(self.delete(t, p) for t, p in list(self.logs) if t == topic)

    def update_config(self, topic: str, config: LogConfig) -> None:
        """Topic config change: every partition of ``topic`` now uses ``config`` (one shared object)."""
        for (t, _p), log in self.logs.items():
            if t == topic:
                log.config = config

    # ------------------------------------------------------------------------------------------------ periodic work

    def run_retention(self, now_ms: int | None = None) -> int:
        """One retention pass over every log (Kafka's log.retention.check.interval.ms task)."""
        return sum(log.delete_old_segments(now_ms=now_ms) for log in self.logs.values())

    def run_compaction(self, *, max_ms: float | None = None, now_ms: int | None = None,
                       upper_bound_for: Callable[[PartitionLog], int] | None = None) -> bool:
        """Advance log compaction (storage/cleaner.py) of the compacted logs for up to ``max_ms`` milliseconds
        (None: until no log is due). ``upper_bound_for(log)`` is the first offset not to clean (the last stable
        offset). True when a pass is still under way (call again soon)."""
        if self.closed:
            return False
        return self.cleaner.run(max_ms=max_ms, now_ms=now_ms, upper_bound_for=upper_bound_for)

    def checkpoint_cleaner_offsets(self) -> None:
        if self.data_dir is None:
            return
        write_offset_checkpoint(os.path.join(self.data_dir, CLEANER_OFFSET_FILE),
                                {tp: log.first_dirty_offset for tp, log in self.logs.items()
                                 if log.first_dirty_offset is not None}, fsync=self.fsync)

    def maybe_flush(self, now_ms: int | None = None) -> None:
        """Flush logs whose flush.ms elapsed (Kafka's log.flush.scheduler.interval.ms task)."""
        if any([log.maybe_flush(now_ms) for log in self.logs.values()]):
            self.checkpoint_recovery_points()

    def flush(self) -> None:
        for log in self.logs.values():
            log.flush()
        self.checkpoint_recovery_points()

    def checkpoint_recovery_points(self) -> None:
        if self.data_dir is None:
            return
        write_offset_checkpoint(os.path.join(self.data_dir, RECOVERY_POINT_FILE),
                                {tp: log.recovery_point for tp, log in self.logs.items()}, fsync=self.fsync)

    def checkpoint_high_watermarks(self) -> None:
        """Kafka's replication-offset-checkpoint (replica.high.watermark.checkpoint.interval.ms and on close): a
        restarted follower starts from the high watermark it had, not from its log end offset."""
        if self.data_dir is None:
            return
        write_offset_checkpoint(os.path.join(self.data_dir, HIGH_WATERMARK_FILE),
                                {tp: log.high_watermark for tp, log in self.logs.items()}, fsync=self.fsync)

    def _write_log_start_offsets(self) -> None:
        if self.data_dir is None:
            return
        write_offset_checkpoint(os.path.join(self.data_dir, LOG_START_OFFSET_FILE),
                                {tp: log.log_start_offset for tp, log in self.logs.items()}, fsync=self.fsync)

    def _log_start_moved(self, _log: PartitionLog) -> None:
        self._write_log_start_offsets()

    def close(self) -> None:
        """Close every log (flush + final index entries), write the checkpoints, then the clean-shutdown marker."""
        if self.closed:
            return
        self.cleaner.abort()
        for log in self.logs.values():
            log.close()
        self.closed = True
        if self.data_dir is None:
            return
        self.checkpoint_recovery_points()
        self._write_log_start_offsets()
        self.checkpoint_high_watermarks()
        marker = os.path.join(self.data_dir, CLEAN_SHUTDOWN_FILE)
        with open(marker, "w"):
            pass
        if self.fsync:
            fsync_dir(self.data_dir)


Storage = LogManager
