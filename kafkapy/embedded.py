"""Embedding API: a broker inside your program or test, exported as ``kafkapy.Broker``.

::

    import kafkapy

    with kafkapy.Broker() as b:                 # its own thread and event loop, free port, in memory
        b.create_topic("orders", partitions=3)
        producer = confluent_kafka.Producer({"bootstrap.servers": b.bootstrap_servers})

    async with kafkapy.Broker() as b:           # in the caller's event loop
        ...

    with kafkapy.Broker(mode="subprocess", storage="disk", data_dir="/tmp/k") as b:   # python -m kafkapy
        ...

The asyncio core this wraps is :class:`kafkapy.broker.Broker`; here it is :class:`EmbeddedBroker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from kafkapy.config import BrokerConfig
from kafkapy.trace import Tracer, tracer_from

log = logging.getLogger("kafkapy.embedded")

MODES = ("inprocess", "subprocess")
_READY_RE = re.compile(r"^kafkapy ready at (?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)\s*$")
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class BrokerStartError(RuntimeError):
    """The embedded broker did not become ready (the message says why; for a subprocess, its log tail)."""


class EmbeddedBroker:
    """A kafkapy broker to embed in a program or a test (``kafkapy.Broker``).

    ``with`` / ``start()``: in-process (``mode="inprocess"``, the default) runs the broker on its own thread
    with its own event loop; ``mode="subprocess"`` runs ``python -m kafkapy`` and waits for its ready line.
    ``async with`` / ``await astart()``: in-process runs in the caller's event loop.

    host/port: where to listen (default 127.0.0.1 and a free port). storage: ``"memory"`` (default) or
    ``"disk"`` (``data_dir``, or a temporary directory removed on stop). config: broker settings by their
    Kafka names (``{"num.partitions": "3"}``). trace: off (default), True (stderr), a path, a file object, a
    callable receiving each event dict, a dict of :class:`kafkapy.trace.Tracer` arguments, or a Tracer.
    console: serve the web console and Prometheus ``/metrics`` (:mod:`kafkapy.console`) on ``host``: True (a free
    port) or a port number; ``console_url`` is its address.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, storage: str = "memory",
                 data_dir: str | os.PathLike | None = None, config: Mapping[str, object] | None = None,
                 mode: str = "inprocess", trace=None, advertised_host: str | None = None,
                 advertised_port: int | None = None, node_id: int = 1, cluster_id: str | None = None,
                 start_timeout: float = 30.0, stop_timeout: float = 10.0, console: bool | int = False):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if storage not in ("memory", "disk"):
            raise ValueError(f"storage must be 'memory' or 'disk', got {storage!r}")
        if storage == "memory" and data_dir is not None:
            raise ValueError("data_dir is for storage='disk'")
        self.host = host
        self.port = port
        self.storage = storage
        self.data_dir = None if data_dir is None else str(data_dir)
        self.config = {str(k): _config_value(v) for k, v in (config or {}).items()}
        BrokerConfig(properties=dict(self.config))     # fail here, not in a thread, on a bad value
        self.mode = mode
        self.advertised_host = advertised_host
        self.advertised_port = advertised_port
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._trace_spec = trace
        self.console_port: int | None = None if console is False or console is None else (
            0 if console is True else int(console))
        self.tracer: Tracer | None = None
        self.bound: tuple[str, int] | None = None
        self.core = None                     # kafkapy.broker.Broker (in-process)
        self.process: subprocess.Popen | None = None
        self.log_path: str | None = None     # subprocess: its stderr
        self.startup_seconds: float | None = None
        self._tmpdir: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self._in_caller_loop = False
        self._state = "new"

    # ---------------------------------------------------------------- what clients need

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for a client's ``bootstrap.servers`` / ``bootstrap_servers``."""
        if self.bound is None:
            raise RuntimeError("the broker is not running")
        host, port = self.bound
        if self.advertised_host or self.advertised_port:
            host = self.advertised_host or host
            port = self.advertised_port or port
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def console_url(self) -> str | None:
        """``http://host:port/`` of the web console (``console=``), None without one."""
        if self.console_port is None or self.bound is None:
            return None
        host = self.bound[0]
        return f"http://[{host}]:{self.console_port}/" if ":" in host else f"http://{host}:{self.console_port}/"

    @property
    def running(self) -> bool:
        return self._state == "running"

    def __repr__(self):
        where = self.bootstrap_servers if self.bound else "not running"
        return f"<kafkapy.Broker {self.mode} {self.storage} {where}>"

    # ---------------------------------------------------------------- sync lifecycle

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "EmbeddedBroker":
        if self._state != "new":
            raise RuntimeError(f"this broker was already started ({self._state}); make a new one")
        self._state = "starting"
        t0 = time.perf_counter()
        try:
            self._prepare()
            if self.mode == "subprocess":
                self._start_process()
            else:
                self._start_thread()
        except BaseException:
            self._state = "running"     # let stop() clean up whatever got started
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - t0
        self._state = "running"
        return self

    def stop(self) -> None:
        """Stop the broker: close every client connection, stop the thread/process (bounded), clean up."""
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        if self._in_caller_loop:
            raise RuntimeError("this broker runs in an event loop: use 'await broker.astop()' / 'async with'")
        self._state = "stopping"
        try:
            if self.mode == "subprocess":
                self._stop_process()
            else:
                self._stop_thread()
        finally:
            self._cleanup()

    # ---------------------------------------------------------------- async lifecycle

    async def __aenter__(self) -> "EmbeddedBroker":
        return await self.astart()

    async def __aexit__(self, *exc) -> None:
        await self.astop()

    async def astart(self) -> "EmbeddedBroker":
        """In-process: start in the running event loop. Subprocess: start it without blocking the loop."""
        if self.mode == "subprocess":
            await asyncio.to_thread(self.start)
            return self
        if self._state != "new":
            raise RuntimeError(f"this broker was already started ({self._state}); make a new one")
        self._state = "starting"
        self._in_caller_loop = True
        t0 = time.perf_counter()
        try:
            self._prepare()
            self._loop = asyncio.get_running_loop()
            self.core = self._make_core()
            self.bound = await asyncio.wait_for(self.core.start(), self.start_timeout)
            self._console_bound()
        except BaseException:
            self._state = "running"
            await self.astop()
            raise
        self.startup_seconds = time.perf_counter() - t0
        self._state = "running"
        return self

    async def astop(self) -> None:
        if self.mode == "subprocess" or not self._in_caller_loop:
            await asyncio.to_thread(self.stop)
            return
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        self._state = "stopping"
        try:
            if self.core is not None:
                await asyncio.wait_for(self.core.stop(), self.stop_timeout)
        finally:
            self._cleanup()

    # ---------------------------------------------------------------- conveniences

    def create_topic(self, name: str, partitions: int = 1, config: Mapping[str, object] | None = None,
                     replication_factor: int = 1) -> str:
        """Create a topic (Kafka's checks apply: a bad name or config raises). Returns its name."""
        configs = {str(k): _config_value(v) for k, v in (config or {}).items()}
        if not self.running:
            raise RuntimeError("the broker is not running")
        if self.mode == "subprocess":
            _create_topic_over_wire(self.bound, name, partitions, replication_factor, configs, self.stop_timeout)
            return name
        return self.call(lambda core: core.create_topic(name, partitions, replication_factor, configs).name)

    async def acreate_topic(self, name: str, partitions: int = 1, config: Mapping[str, object] | None = None,
                            replication_factor: int = 1) -> str:
        if self._in_caller_loop:
            return self.create_topic(name, partitions, config, replication_factor)
        return await asyncio.to_thread(self.create_topic, name, partitions, config, replication_factor)

    def call(self, fn):
        """Run ``fn(core_broker)`` on the broker's event loop and return its result (in-process only)."""
        if self.mode == "subprocess":
            raise RuntimeError("call() needs an in-process broker")
        if self.core is None or self._loop is None:
            raise RuntimeError("the broker is not running")
        if self._in_caller_loop or threading.current_thread() is self._thread:
            return fn(self.core)

        async def run():
            return fn(self.core)
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(self.stop_timeout)

    # ---------------------------------------------------------------- request control hooks

    def control(self, fn, *, keep: bool = False):
        """Install a hook asked about every request before its handler runs (franz-go kfake's ``Control``).

        ``fn(request)`` gets a :class:`kafkapy.control.ControlRequest` (``api_key``, ``api_name``,
        ``api_version``, ``client_id``, ``body``, ...) and returns None to let the request through, a response
        object, an error code, ``kafkapy.control.CLOSE``, ``Delay(seconds, then=...)`` or ``DROP_RESPONSE``.
        A hook that acts is removed afterwards unless ``keep=True``; one that returns None stays. It runs on
        the broker's event loop: it must not block (use ``Delay``). Returns the
        :class:`kafkapy.control.Control` (``.remove()``, ``.wait(timeout)``, ``.seen``, ``.fired``,
        ``.errors``). In-process only: a subprocess broker raises RuntimeError."""
        return self._add_control(fn, None, keep)

    def control_key(self, key: int | str, fn, *, keep: bool = False):
        """``control`` for one api only: ``key`` is its number (0) or name ("Produce"). Hooks for a key are
        asked before the hooks for every request."""
        from kafkapy.control import api_key_of

        if key is None:
            raise ValueError("control_key needs an api key; control(fn) hooks every request")
        return self._add_control(fn, api_key_of(key), keep)

    def remove_control(self, control) -> None:
        """Uninstall a hook (the same as ``control.remove()``); a no-op when it is gone already."""
        control.remove()

    def clear_controls(self) -> None:
        """Uninstall every hook."""
        self._controls_available()
        self.call(lambda core: core.clear_controls())

    @property
    def controls(self) -> list:
        """The installed hooks (a snapshot)."""
        self._controls_available()
        return self.call(lambda core: [] if core.controls is None else core.controls.installed)

    def _controls_available(self) -> None:
        if self.mode == "subprocess":
            raise RuntimeError("request control hooks need an in-process broker: a mode='subprocess' broker runs "
                               "in another process, where a Python hook cannot run; use mode='inprocess'")
        if not self.running:
            raise RuntimeError("the broker is not running")

    def _add_control(self, fn, key: int | None, keep: bool):
        from kafkapy.control import Control

        self._controls_available()
        control = Control(fn, key, keep)
        self.call(lambda core: core.add_control(control))
        on_loop = control._remove

        def remove(c) -> None:     # from any thread: onto the broker's loop (at once when already on it)
            if self.running:
                self.call(lambda core: on_loop(c))
            else:
                c.active = False
        control._remove = remove
        return control

    # ---------------------------------------------------------------- internals

    def _prepare(self) -> None:
        if self.storage == "disk" and self.data_dir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="kafkapy-")
            self.data_dir = os.path.join(self._tmpdir, "data")
        if self.mode == "inprocess":
            self.tracer = tracer_from(self._trace_spec)

    def _broker_config(self) -> BrokerConfig:
        return BrokerConfig(host=self.host, port=self.port, advertised_host=self.advertised_host,
                            advertised_port=self.advertised_port, storage=self.storage,
                            data_dir=self.data_dir if self.storage == "disk" else None, node_id=self.node_id,
                            cluster_id=self.cluster_id, properties=dict(self.config))

    def _make_core(self):
        from kafkapy.broker import Broker

        core = Broker(self._broker_config())
        core.tracer = self.tracer
        if self.console_port is not None:
            from kafkapy.console import Console

            core.console = Console(core, self.host, self.console_port)
        return core

    def _console_bound(self) -> None:
        if self.core is not None and self.core.console is not None:
            self.console_port = self.core.console.port

    # in-process, own thread

    def _start_thread(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._thread_main(ready, failure))
            except BaseException as e:  # noqa: BLE001 - reported to start()
                failure.append(e)
            finally:
                ready.set()
                with contextlib.suppress(Exception):
                    _cancel_leftovers(loop)
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name="kafkapy-broker", daemon=True)
        self._thread.start()
        if not ready.wait(self.start_timeout):
            raise BrokerStartError(f"broker not ready within {self.start_timeout} s")
        if failure:
            raise failure[0]

    async def _thread_main(self, ready: threading.Event, failure: list) -> None:
        self._stop_event = asyncio.Event()
        self.core = self._make_core()
        try:
            self.bound = await self.core.start()
            self._console_bound()
        except BaseException as e:  # noqa: BLE001
            failure.append(e)
            ready.set()
            await self.core.stop()
            return
        ready.set()
        await self._stop_event.wait()
        await self.core.stop()

    def _stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if threading.current_thread() is thread:
            raise RuntimeError("stop() called from the broker's own event loop")
        if self._stop_event is not None:
            with contextlib.suppress(RuntimeError):     # loop already closed
                loop.call_soon_threadsafe(self._stop_event.set)
        thread.join(self.stop_timeout)
        if thread.is_alive():
            log.warning("kafkapy broker thread did not stop within %s s", self.stop_timeout)

    # subprocess

    def _start_process(self) -> None:
        cmd = [sys.executable, "-m", "kafkapy", "--host", self.host, "--port", str(self.port),
               "--storage", self.storage, "--node-id", str(self.node_id)]
        if self.storage == "disk":
            cmd += ["--data-dir", self.data_dir]
        if self.advertised_host:
            cmd += ["--advertised-host", self.advertised_host]
        if self.advertised_port:
            cmd += ["--advertised-port", str(self.advertised_port)]
        if self.cluster_id:
            cmd += ["--cluster-id", self.cluster_id]
        for k, v in self.config.items():
            cmd += ["-o", f"{k}={v}"]
        cmd += _trace_args(self._trace_spec)
        if self.console_port is not None:
            if not self.console_port:     # the parent picks the free port: the ready line tells only the broker's
                with socket.socket() as s:
                    s.bind((self.host, 0))
                    self.console_port = s.getsockname()[1]
            cmd += ["--console", "--console-host", self.host, "--console-port", str(self.console_port)]
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="kafkapy-")
        self.log_path = os.path.join(self._tmpdir, "broker.log")
        env = dict(os.environ)
        env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "wb") as err:
            self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                            env=env, preexec_fn=_set_pdeathsig if sys.platform == "linux" else None)
        lines: list[str] = []
        got = threading.Event()

        def read() -> None:
            for raw in self.process.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                m = _READY_RE.match(line)
                if m and not got.is_set():
                    host = m.group("host").strip("[]")
                    self.bound = (host, int(m.group("port")))
                    got.set()
                lines.append(line)
            got.set()        # stdout closed: the process ended

        threading.Thread(target=read, name="kafkapy-broker-stdout", daemon=True).start()
        if not got.wait(self.start_timeout) or self.bound is None:
            rc = self.process.poll()
            raise BrokerStartError(f"kafkapy subprocess not ready within {self.start_timeout} s (exit code {rc}); "
                                   f"log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the subprocess's log (stderr)."""
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - chars))
            return f.read().decode("utf-8", "replace")

    def _stop_process(self) -> None:
        p = self.process
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("kafkapy subprocess did not stop within %s s of SIGTERM; killing it", self.stop_timeout)
                p.kill()
                p.wait(self.stop_timeout)
        if p.stdout is not None:
            p.stdout.close()

    def _cleanup(self) -> None:
        self._state = "stopped"
        if self.tracer is not None and self._trace_spec is not self.tracer:
            self.tracer.close()     # a tracer we made (a file we opened); a caller's Tracer stays theirs
        if self._tmpdir is None:
            return
        # a subprocess that did not exit cleanly keeps its temporary directory (its log) for a post-mortem
        if self.process is None or self.process.returncode in (0, -signal.SIGTERM):
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


def _config_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _trace_args(spec) -> list[str]:
    """The ``trace=`` switch as ``python -m kafkapy`` options (subprocess mode)."""
    if spec is None or spec is False:
        return []
    if spec is True:
        return ["--trace"]
    if isinstance(spec, (str, os.PathLike)):
        return ["--trace-file", os.fspath(spec)]
    if isinstance(spec, dict):
        out = ["--trace"]
        if spec.get("out") is not None:
            if not isinstance(spec["out"], (str, os.PathLike)):
                raise ValueError("a subprocess broker traces to stderr or to a file path")
            out += ["--trace-file", os.fspath(spec["out"])]
        for a in _as_list(spec.get("apis")):
            out += ["--trace-api", a]
        for c in _as_list(spec.get("client_ids")):
            out += ["--trace-client-id", c]
        if spec.get("records"):
            out.append("--trace-records")
        return out
    raise ValueError("a subprocess broker takes trace=True, a file path or a dict of options "
                     "(out, apis, client_ids, records)")


def _as_list(v) -> list[str]:
    if v is None:
        return []
    return [v] if isinstance(v, str) else [str(x) for x in v]


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=5))


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child
    # If the parent dies without stopping us, the broker gets SIGTERM instead of lingering (Linux only).
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _create_topic_over_wire(bound: tuple[str, int], name: str, partitions: int, replication_factor: int,
                            configs: dict[str, str], timeout: float) -> None:
    """CreateTopics v5 with the project's own codec (for a subprocess broker)."""
    from kafkapy.broker import TopicError
    from wire import protocol
    from wire.messages.error_codes import ErrorCode

    api = protocol.API_BY_NAME["CreateTopics"]
    req_mod = api.request
    topic = req_mod.CreatableTopic(
        name=name, num_partitions=partitions, replication_factor=replication_factor, assignments=[],
        configs=[req_mod.CreatableTopicConfig(name=k, value=v) for k, v in configs.items()])
    body = req_mod.MESSAGE(topics=[topic], timeout_ms=int(timeout * 1000), validate_only=False)
    version = 5
    frame = protocol.encode_request(api.key, version, 1, "kafkapy-embedded", body)
    with socket.create_connection(bound, timeout=timeout) as s:
        s.sendall(frame)
        size = struct.unpack(">i", _recv_exactly(s, 4))[0]
        _corr, resp = protocol.decode_response(api.key, version, _recv_exactly(s, size))
    for t in resp.topics:
        if t.error_code:
            raise TopicError(ErrorCode(t.error_code), t.error_message or ErrorCode(t.error_code).name)


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)
