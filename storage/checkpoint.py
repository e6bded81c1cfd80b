"""Kafka's small text checkpoint files, written atomically (temp file, fsync, rename, fsync dir).

``recovery-point-offset-checkpoint`` / ``log-start-offset-checkpoint`` (in the data dir)::

    0
    <count>
    <topic> <partition> <offset>

``leader-epoch-checkpoint`` (in each partition dir)::

    0
    <count>
    <epoch> <start offset>
"""

from __future__ import annotations

import os
from bisect import bisect_left, bisect_right

VERSION = 0


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str, data: str | bytes, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` (text or bytes) so that a crash leaves the old or the new file, never a mix."""
    tmp = path + ".tmp"
    with (open(tmp, "wb") if isinstance(data, (bytes, bytearray)) else open(tmp, "w", encoding="utf-8")) as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_dir(os.path.dirname(path) or ".")


def _read_lines(path: str) -> list[list[str]] | None:
    """Entry lines of a checkpoint file, or None when missing or malformed (treated as absent, like a lost file)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        if int(lines[0]) != VERSION:
            return None
        count = int(lines[1])
        entries = [line.split() for line in lines[2:2 + count]]
    except (IndexError, ValueError):
        return None
    if len(entries) != count:
        return None
    return entries


def read_offset_checkpoint(path: str) -> dict[tuple[str, int], int]:
    entries = _read_lines(path)
    out: dict[tuple[str, int], int] = {}
    for e in entries or ():
        try:
            topic, partition, offset = e
            out[(topic, int(partition))] = int(offset)
        except ValueError:
            return {}
    return out


def write_offset_checkpoint(path: str, offsets: dict[tuple[str, int], int], *, fsync: bool = True) -> None:
    lines = [str(VERSION), str(len(offsets))]
    lines += [f"{t} {p} {o}" for (t, p), o in sorted(offsets.items())]
    write_atomic(path, "\n".join(lines) + "\n", fsync=fsync)


UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1
LEADER_EPOCH_FILE = "leader-epoch-checkpoint"


class LeaderEpochCache:
    """Kafka's LeaderEpochFileCache: (epoch, start offset) pairs, epochs and offsets both increasing.

    ``path`` None keeps it in memory only.
    """

    def __init__(self, path: str | None, *, fsync: bool = True):
        self.path = path
        self.fsync = fsync
        self.epochs: list[int] = []
        self.start_offsets: list[int] = []
        if path is not None:
            for e in _read_lines(path) or ():
                try:
                    epoch, start = int(e[0]), int(e[1])
                except (ValueError, IndexError):
                    self.epochs, self.start_offsets = [], []
                    break
                self._add(epoch, start)

    def entries(self) -> list[tuple[int, int]]:
        return list(zip(self.epochs, self.start_offsets))

    @property
    def latest_epoch(self) -> int:
        return self.epochs[-1] if self.epochs else UNDEFINED_EPOCH

    def _add(self, epoch: int, start_offset: int) -> bool:
        if epoch < 0:
            return False
        if self.epochs and epoch <= self.epochs[-1]:
            return False
        # a new epoch starting at or before existing entries replaces them (Kafka: truncate conflicting entries)
        while self.start_offsets and self.start_offsets[-1] >= start_offset:
            self.epochs.pop()
            self.start_offsets.pop()
        self.epochs.append(epoch)
        self.start_offsets.append(start_offset)
        return True

    def assign(self, epoch: int, start_offset: int) -> None:
        """Record that ``epoch`` starts at ``start_offset`` (no-op unless epoch is new). Persists before returning."""
        if self._add(epoch, start_offset):
            self._write()

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: (largest epoch <= requested, end offset of that epoch), Kafka's rules."""
        if requested_epoch == UNDEFINED_EPOCH or not self.epochs:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if requested_epoch == self.epochs[-1]:
            return requested_epoch, log_end_offset
        hi = bisect_right(self.epochs, requested_epoch)
        if hi == len(self.epochs):
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if hi == 0:
            return requested_epoch, self.start_offsets[0]
        return self.epochs[hi - 1], self.start_offsets[hi]

    def truncate_from_end(self, end_offset: int) -> None:
        """Drop entries starting at or after ``end_offset`` (the log was truncated to it)."""
        n = bisect_left(self.start_offsets, end_offset)
        if n < len(self.epochs):
            del self.epochs[n:], self.start_offsets[n:]
            self._write()

    def truncate_from_start(self, start_offset: int) -> None:
        """The log start moved to ``start_offset``: keep the epoch covering it, starting there."""
        n = bisect_right(self.start_offsets, start_offset)
        if n == 0 or (n == 1 and self.start_offsets[0] == start_offset):
            return
        del self.epochs[:n - 1], self.start_offsets[:n - 1]
        self.start_offsets[0] = start_offset
        self._write()

    def clear(self) -> None:
        if self.epochs:
            self.epochs, self.start_offsets = [], []
            self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        lines = [str(VERSION), str(len(self.epochs))] + [f"{e} {o}" for e, o in zip(self.epochs, self.start_offsets)]
        write_atomic(self.path, "\n".join(lines) + "\n", fsync=self.fsync)
