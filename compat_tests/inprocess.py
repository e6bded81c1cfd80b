"""An in-process broker on its own event-loop thread, for tests that look inside it (connections, buffers,
tasks) while real clients talk to it over sockets; plus a tiny blocking raw-protocol client."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

from kafkapy.broker import Broker
from kafkapy.config import BrokerConfig
from wire import protocol


class InProcessBroker:
    """``with InProcessBroker(properties={...}) as b: b.bootstrap; b.run(coro_fn)``."""

    def __init__(self, properties: dict[str, str] | None = None, storage: str = "memory", data_dir=None):
        self.config = BrokerConfig(host="127.0.0.1", port=0, storage=storage,
                                   data_dir=None if data_dir is None else str(data_dir),
                                   properties=dict(properties or {}))
        self.broker: Broker | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="inprocess-broker", daemon=True)
        self.port = None

    def start(self) -> InProcessBroker:
        self._thread.start()
        self.broker = Broker(self.config)
        _host, self.port = self.run(self.broker.start)
        return self

    def run(self, fn, *args, timeout: float = 30):
        """Run ``fn(*args)`` (a coroutine function or a plain function) on the broker's loop; its result."""
        async def call():
            r = fn(*args)
            if asyncio.iscoroutine(r):
                r = await r
            return r
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    def stop(self) -> None:
        if self.broker is not None:
            self.run(self.broker.stop)
            self.broker = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def server(self):
        return self.broker.server

    def __enter__(self) -> InProcessBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def connect(bootstrap: str, timeout: float = 10) -> socket.socket:
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_frame(s: socket.socket) -> bytes | None:
    """One size-prefixed frame; None on EOF."""
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    n = struct.unpack(">i", head)[0]
    parts, got = [], 0
    while got < n:
        chunk = s.recv(min(n - got, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def request(s: socket.socket, key: int, version: int, body, correlation_id: int = 1, client_id: str = "test"):
    """Send one request on ``s`` and decode its response."""
    s.sendall(protocol.encode_request(key, version, correlation_id, client_id, body))
    frame = recv_frame(s)
    if frame is None:
        raise ConnectionError("broker closed the connection")
    corr, resp = protocol.decode_response(key, version, frame)
    assert corr == correlation_id
    return resp


def closed_by_peer(s: socket.socket, timeout: float) -> bool:
    """True when the broker closes ``s`` (EOF or reset) within ``timeout``; False if it stays open."""
    s.settimeout(timeout)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
