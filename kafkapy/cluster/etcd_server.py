"""A throwaway single-member etcd for tests and local clusters: ``with EtcdServer() as etcd: etcd.endpoint``.

It runs the ``etcd`` binary (Debian's ``etcd-server``; or the path in ``$KAFKAPY_ETCD``) as a child process with a
temporary data dir, client and peer URLs on 127.0.0.1 at free ports, waits until ``/health`` answers (bounded by
``ready_timeout``) and on exit stops it (SIGTERM, then SIGKILL) and removes the data dir. Usable as a sync or an
async context manager, or with :meth:`start` / :meth:`stop`.

Timing is tuned for loopback: a 50 ms heartbeat and a 500 ms election timeout, which also lowers etcd's minimum
lease TTL (1.5 election timeouts) to under a second, so whole-second TTLs of 1 s are honoured. No fsync tuning:
etcd 3.4 has no ``--unsafe-no-fsync``; put ``dir`` on a tmpfs if writes are too slow.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

__all__ = ["EtcdServer", "etcd_binary", "free_port"]

INSTALL_HINT = "install Debian's etcd-server (apt-get install etcd-server) or set KAFKAPY_ETCD to an etcd binary"


def etcd_binary() -> str | None:
    """The etcd binary to run: ``$KAFKAPY_ETCD``, else ``etcd`` on PATH, else Debian's ``/usr/bin/etcd``."""
    env = os.environ.get("KAFKAPY_ETCD")
    if env:
        return env if os.access(env, os.X_OK) else None
    return shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdServer:
    def __init__(self, *, name: str = "kafkapy", dir: str | None = None, ready_timeout: float = 15.0,
                 heartbeat_ms: int = 50, election_ms: int = 500, extra_args: tuple[str, ...] = ()):
        self.name = name
        self.ready_timeout = ready_timeout
        self._parent_dir = dir
        self._args = ("--heartbeat-interval", str(heartbeat_ms), "--election-timeout", str(election_ms),
                      *extra_args)
        self.data_dir: str | None = None
        self.client_port = 0
        self.peer_port = 0
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def endpoint(self) -> str:
        """The client URL, ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> EtcdServer:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError(f"no etcd binary found: {INSTALL_HINT}")
        self.data_dir = tempfile.mkdtemp(prefix="kafkapy-etcd-", dir=self._parent_dir)
        for _attempt in range(3):                       # a free port can be taken between probe and bind: retry
            self.client_port, self.peer_port = free_port(), free_port()
            client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
            member_dir = os.path.join(self.data_dir, f"member-{self.client_port}")
            self._log = open(os.path.join(self.data_dir, "etcd.log"), "ab")
            self.process = subprocess.Popen(
                [binary, "--name", self.name, "--data-dir", member_dir,
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"{self.name}={peer}", "--initial-cluster-state", "new",
                 "--log-level", "warn", *self._args],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return self
            self._kill()
        log = self.log_tail()
        self.stop()
        raise RuntimeError(f"etcd did not become ready within {self.ready_timeout}s:\n{log}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1) as r:
                    if b'"true"' in r.read():
                        return True
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        return False

    def log_tail(self, lines: int = 20) -> str:
        if not self.data_dir:
            return ""
        try:
            with open(os.path.join(self.data_dir, "etcd.log"), "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Stop etcd and remove its data dir (idempotent)."""
        self._kill()
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def __aenter__(self) -> EtcdServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self.stop)
