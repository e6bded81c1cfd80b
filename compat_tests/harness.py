"""Helpers for the compat tests: run a broker as a subprocess, run the Java client, make topic names.

``BrokerProcess`` starts ``python -m kafkapy --host 127.0.0.1 --port 0 --data-dir DIR --storage disk`` (or
``memory``) and waits, bounded, for its one ready line ``kafkapy ready at HOST:PORT`` on stdout. Logs (its
stderr) go to a file next to the data dir, so a failing test can show their tail.

To run the suite against another Kafka-compatible broker, set

    KAFKAPY_BROKER_CMD    a command line with {port}, {data_dir} (and optionally {host}) placeholders;
                          when it has {port}, the harness picks a free port itself
    KAFKAPY_BROKER_READY  a regex a stdout/stderr line matches once the broker is ready; a named group
                          ``port`` (if present) says which port it took. Default: kafkapy's ready line.

e.g. the Rust broker tansu (in-memory):

    KAFKAPY_BROKER_CMD='/path/to/tansu broker --listener-url tcp://{host}:{port}
        --advertised-listener-url tcp://{host}:{port} --storage-engine memory://tansu/'
    KAFKAPY_BROKER_READY='ready in'
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KAFKAPY_READY_RE = r"^kafkapy ready at (?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)\s*$"
# logged (stderr) once per listener when several are configured with `listeners`
LISTENER_RE = re.compile(r"listener (?P<name>\S+) \((?P<protocol>\S+)\) listening on (?P<host>\S+):(?P<port>\d+)")
START_TIMEOUT = float(os.environ.get("KAFKAPY_BROKER_START_TIMEOUT", "20"))


class BrokerError(AssertionError):
    """The broker did not start, or did not stop, as it should."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child
    # If pytest dies without tearing down, the broker gets SIGTERM instead of lingering (Linux only).
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class BrokerProcess:
    """One broker subprocess. ``start(data_dir)`` returns once it is ready; ``bootstrap`` is HOST:PORT."""

    def __init__(self, storage: str = "disk", host: str = "127.0.0.1", extra_args: list[str] | tuple = (),
                 cmd: str | None = None, ready_re: str | None = None, start_timeout: float = START_TIMEOUT):
        self.storage = storage
        self.host = host
        self.extra_args = list(extra_args)
        self.cmd_template = cmd if cmd is not None else os.environ.get("KAFKAPY_BROKER_CMD") or None
        self.ready_re = re.compile(ready_re or os.environ.get("KAFKAPY_BROKER_READY") or KAFKAPY_READY_RE)
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.data_dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.stdout_lines: list[str] = []
        self.listener_ports: dict[str, int] = {}     # listener name -> bound port (from the broker's log)
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._log_lock = threading.Lock()
        self._log_file = None

    # ------------------------------------------------------------------ public API

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("broker not started")
        return f"{self.host}:{self.port}"

    def listener_port(self, name: str, timeout: float = 5.0) -> int:
        """The bound port of listener ``name`` (``listeners=NAME://host:0,...``), waiting (bounded) for its log line."""
        deadline = time.monotonic() + timeout
        while name.upper() not in self.listener_ports:
            if time.monotonic() > deadline:
                raise BrokerError(f"no 'listener {name} ... listening on' line in the broker log\n{self.log_tail()}")
            time.sleep(0.02)
        return self.listener_ports[name.upper()]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, data_dir: Path, port: int, extra_args: list[str]) -> list[str]:
        if self.cmd_template:
            fmt = {"port": port, "data_dir": str(data_dir), "host": self.host, "storage": self.storage}
            return [tok.format(**fmt) for tok in shlex.split(self.cmd_template)] + extra_args
        return [sys.executable, "-m", "kafkapy", "--host", self.host, "--port", str(port),
                "--data-dir", str(data_dir), "--storage", self.storage, *extra_args]

    def start(self, data_dir: str | os.PathLike, extra_args: list[str] | tuple = (), port: int | None = None
              ) -> BrokerProcess:
        """Start the broker on ``data_dir`` and wait (bounded) for it to be ready.

        ``port``: the port to ask for; default 0 (the broker picks) for kafkapy, a free one for a custom
        command with ``{port}``. A restart passes the previous port so the bootstrap address stays the same.
        """
        if self.is_running():
            raise BrokerError(f"broker already running (pid {self.proc.pid})")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = self.extra_args + list(extra_args)
        self._last_extra = list(extra_args)
        if port is None:
            port = free_port(self.host) if self.cmd_template and "{port}" in self.cmd_template else 0
        cmd = self.command(self.data_dir, port, args)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.broker.log"
        self._log_file = open(self.log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._log(f"=== starting: {shlex.join(cmd)}")
        self._ready.clear()
        self._found_port: int | None = None
        self.stdout_lines = []
        self.listener_ports = {}
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        pp = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + pp if pp else "")
        self.proc = subprocess.Popen(
            cmd, cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None,
        )
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, "err"), daemon=True),
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                self._join_pumps()
                raise BrokerError(f"broker exited with code {self.proc.returncode} before it was ready\n"
                                  f"command: {shlex.join(cmd)}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self._hard_kill()
                raise BrokerError(f"broker not ready within {self.start_timeout:.0f}s\n"
                                  f"command: {shlex.join(cmd)}\n{self.log_tail()}")
        self.port = self._found_port or port
        if not self.port:
            self._hard_kill()
            raise BrokerError(f"ready line did not say which port was taken\n{self.log_tail()}")
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._log("=== SIGTERM")
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._log(f"=== still running {timeout:.0f}s after SIGTERM: SIGKILL")
                self._hard_kill()
        self._join_pumps()
        self._close_log()
        return self.proc.returncode

    def kill9(self) -> int | None:
        """SIGKILL, no chance to clean up (for crash-recovery tests)."""
        if self.proc is None:
            return None
        self._log("=== SIGKILL")
        self._hard_kill()
        self._join_pumps()
        self._close_log()
        return self.proc.returncode

    kill = kill9

    def restart(self, kill: bool = False, extra_args: list[str] | tuple | None = None) -> BrokerProcess:
        """Stop (SIGTERM, or SIGKILL with ``kill=True``) and start again on the same data dir and port."""
        if self.data_dir is None:
            raise BrokerError("broker was never started")
        port = self.port
        if kill:
            self.kill9()
        else:
            self.stop()
        args = self._last_extra if extra_args is None else list(extra_args)
        deadline = time.monotonic() + 10
        while True:  # the old socket may linger a moment; the port is ours to reuse
            try:
                return self.start(self.data_dir, args, port=port)
            except BrokerError:
                if time.monotonic() > deadline or "in use" not in self.log_tail().lower():
                    raise
                time.sleep(0.2)

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no broker log)"
        with self._log_lock:
            if self._log_file:
                self._log_file.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return f"--- broker log {self.log_path} (tail) ---\n{text[-chars:]}"

    def log_contains(self, needle: str, count: int = 1, timeout: float = 5.0) -> bool:
        """True once the broker's log holds ``needle`` at least ``count`` times. The log is copied from the
        broker's stderr by a pump thread, so a line the broker wrote just before a client saw its effect (a
        closed connection) may take a moment to arrive: wait for it, bounded."""
        deadline = time.monotonic() + timeout
        while True:
            if self.log_tail(1 << 30).count(needle) >= count:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def __enter__(self) -> BrokerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<BrokerProcess {self.bootstrap if self.port else '-'} pid={self.pid} running={self.is_running()}>"

    # ------------------------------------------------------------------ internals

    def _pump(self, stream, name: str) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self._log(f"[{name}] {line}" if name == "out" else line)
            if name == "out":
                self.stdout_lines.append(line)
            else:
                lm = LISTENER_RE.search(line)
                if lm:
                    self.listener_ports[lm["name"]] = int(lm["port"])
            if not self._ready.is_set():
                m = self.ready_re.search(line)
                if m:
                    port = m.groupdict().get("port")
                    self._found_port = int(port) if port else None
                    self._ready.set()
        stream.close()

    def _log(self, text: str) -> None:
        with self._log_lock:
            if self._log_file and not self._log_file.closed:
                self._log_file.write(text + "\n")
                self._log_file.flush()

    def _hard_kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        if self.proc:
            self.proc.wait(10)

    def _join_pumps(self) -> None:
        for t in self._threads:
            t.join(5)

    def _close_log(self) -> None:
        with self._log_lock:
            if self._log_file:
                self._log_file.close()
                self._log_file = None


# ---------------------------------------------------------------------- topics


def unique_topic(hint: str = "t") -> str:
    """A fresh legal topic name (``[A-Za-z0-9._-]``, well under 249 chars)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", hint).strip("-.")[:80] or "t"
    return f"{clean}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------- Java client


def java_available() -> str | None:
    """None when java and javac are on PATH, else the reason they are not."""
    missing = [tool for tool in ("java", "javac") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not on PATH" if missing else None


def _java_client_module():
    spec = importlib.util.spec_from_file_location("kafkapy_java_client", ROOT / "scripts" / "java_client.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class JavaClientError(AssertionError):
    def __init__(self, msg: str, returncode: int, lines: list[dict], stderr: str):
        super().__init__(msg)
        self.returncode = returncode
        self.lines = lines
        self.stderr = stderr

    @property
    def error_type(self) -> str | None:
        for line in self.lines:
            if "error" in line:
                return line.get("type")
        return None


class JavaClient:
    """Runs ``KClient`` (compat_tests/java/KClient.java): ``run(bootstrap, cmd, *args) -> list[dict]``."""

    def __init__(self, classpath: str):
        self.classpath = classpath
        self.java = shutil.which("java") or "java"

    def run(self, *args, timeout: float = 60, check: bool = True) -> list[dict]:
        args = [str(a) for a in args]
        cmd = [self.java, "-Xshare:auto", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", self.classpath,
               "KClient", *args]
        env = dict(os.environ)
        env.setdefault("KCLIENT_DEADLINE_MS", str(int(timeout * 1000) + 5000))
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode("utf-8", "replace")
            err = (exc.stderr or b"").decode("utf-8", "replace")
            raise JavaClientError(f"KClient {shlex.join(args)} did not finish within {timeout}s\n"
                                  f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}", -9, [], err) from None
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        lines = []
        for raw in out.splitlines():
            raw = raw.strip()
            if not raw:
                continue
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"unparsed": raw})
        if check and proc.returncode != 0:
            raise JavaClientError(f"KClient {shlex.join(args)} exited {proc.returncode}\n"
                                  f"stdout:\n{out[-3000:]}\nstderr:\n{_trim_stderr(err)}", proc.returncode, lines, err)
        return lines

    __call__ = run

    def bind(self, bootstrap: str):
        """A runner with the bootstrap address filled in: ``kc("produce", topic, 10)``."""

        def run(*args, timeout: float = 60, check: bool = True) -> list[dict]:
            return self.run(bootstrap, *args, timeout=timeout, check=check)

        run.bootstrap = bootstrap
        run.client = self
        return run


def _trim_stderr(err: str, chars: int = 4000) -> str:
    lines = [ln for ln in err.splitlines() if not ln.startswith("SLF4J")]
    return "\n".join(lines)[-chars:]


def java_client() -> JavaClient:
    """Fetch the jars and compile KClient if needed (errors propagate); return a runner."""
    return JavaClient(_java_client_module().ensure_compiled())
