"""The network side: an asyncio server, one task per connection, requests answered in order.

Like Kafka, a connection's next request is read only after the previous one was answered (Kafka
mutes the channel while a request is in flight), so responses always come back in request order
and a Fetch long-poll simply holds its connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from dataclasses import dataclass, field

from wire import DecodeError, protocol
from wire.messages.error_codes import ErrorCode

log = logging.getLogger("kafkapy.server")

_SIZE = struct.Struct(">i")


@dataclass
class RequestContext:
    """What a handler knows about the request besides its body."""

    broker: object                    # kafkapy.broker.Broker
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    connection: "Connection"


@dataclass(eq=False)
class Connection:
    peer: str
    writer: asyncio.StreamWriter
    opened: float = field(default_factory=time.monotonic)
    requests: int = 0

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


class Server:
    def __init__(self, broker, host: str, port: int):
        self.broker = broker
        self.host = host
        self.port = port
        self._servers: list[asyncio.base_events.Server] = []
        self.connections: set[Connection] = set()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> tuple[str, int]:
        """Listen on every address ``host`` resolves to (IPv4 first), all on the same port (also for port 0)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        addrs = []
        for _family, *_rest, sockaddr in sorted(infos, key=lambda i: i[0] != socket.AF_INET):
            if sockaddr[0] not in addrs:
                addrs.append(sockaddr[0])
        first = await asyncio.start_server(self._accept, addrs[0], self.port, limit=1 << 16, reuse_address=True)
        self._servers = [first]
        bound = first.sockets[0].getsockname()
        self.port = bound[1]
        for other in addrs[1:]:
            try:
                self._servers.append(await asyncio.start_server(self._accept, other, self.port, limit=1 << 16,
                                                                reuse_address=True))
            except OSError as e:   # e.g. no IPv6 on this machine: the first address is enough
                log.debug("not listening on %s:%d: %s", other, self.port, e)
        return bound[0], bound[1]

    async def stop(self) -> None:
        for srv in self._servers:
            srv.close()
        for c in list(self.connections):
            c.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        for srv in self._servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - stopping regardless
                pass

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        peer_s = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        conn = Connection(peer_s, writer)
        self.connections.add(conn)
        log.info("connection opened from %s", peer_s)
        reason = "closed by client"
        try:
            reason = await self._serve(conn, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            reason = "closed by client"
        except asyncio.CancelledError:
            reason = "broker shutting down"
        except Exception:  # noqa: BLE001 - one connection's failure must not touch the others
            log.exception("connection %s failed", peer_s)
            reason = "internal error"
        finally:
            self.connections.discard(conn)
            self._tasks.discard(task)
            conn.close()
            log.info("connection closed from %s after %d requests (%s)", peer_s, conn.requests, reason)

    async def _serve(self, conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        broker = self.broker
        max_size = broker.config.get_int("socket.request.max.bytes")
        idle_ms = broker.config.get_int("connections.max.idle.ms")
        idle = None if idle_ms < 0 else idle_ms / 1000
        handlers = broker.handlers
        while True:
            try:
                prefix = await asyncio.wait_for(reader.readexactly(4), idle)
            except asyncio.TimeoutError:
                return f"idle for more than {idle_ms} ms (connections.max.idle.ms)"
            except asyncio.IncompleteReadError as e:
                return "closed by client" if not e.partial else "closed by client inside a size prefix"
            size = _SIZE.unpack(prefix)[0]
            if size < 0 or size > max_size:
                log.warning("%s: request size %d is invalid (socket.request.max.bytes=%d); closing the connection",
                            conn.peer, size, max_size)
                return "invalid request size"
            try:
                frame = memoryview(await reader.readexactly(size))
            except asyncio.IncompleteReadError:
                return "closed by client inside a request"
            conn.requests += 1
            try:
                header, _hv, pos = protocol.decode_request_header(frame)
            except protocol.UnsupportedVersion:
                key, version = protocol.peek_key_version(frame)
                if key == protocol.API_VERSIONS_KEY:
                    # KIP-511: answer at v0 with UNSUPPORTED_VERSION and our versions, so the client can retry
                    corr = struct.unpack_from(">i", frame, 4)[0] if len(frame) >= 8 else 0
                    body = broker.api_versions_response(ErrorCode.UNSUPPORTED_VERSION)
                    writer.writelines(protocol.encode_response(key, 0, corr, body))
                    await writer.drain()
                    continue
                log.warning("%s: %s v%d is not a version this broker knows; closing the connection",
                            conn.peer, protocol.API[key].name, version)
                return "unsupported version"
            except protocol.UnknownApiKey as e:
                log.warning("%s: %s; closing the connection", conn.peer, e)
                return "unknown api key"
            except DecodeError as e:
                log.warning("%s: malformed request header (%s); closing the connection", conn.peer, e)
                return "malformed request"
            key = header.request_api_key
            version = header.request_api_version
            handler = handlers.get(key)
            if handler is None or not handler.min_version <= version <= handler.max_version:
                if key == protocol.API_VERSIONS_KEY:
                    body = broker.api_versions_response(ErrorCode.UNSUPPORTED_VERSION)
                    writer.writelines(protocol.encode_response(key, 0, header.correlation_id, body))
                    await writer.drain()
                    continue
                log.warning("%s: %s v%d is not implemented by this broker; closing the connection",
                            conn.peer, protocol.API[key].name, version)
                return "unsupported api"
            try:
                body, end = protocol.decode(protocol.API[key].request, version, frame, pos)
            except DecodeError as e:
                log.warning("%s: malformed %s v%d request (%s); closing the connection",
                            conn.peer, protocol.API[key].name, version, e)
                return "malformed request"
            ctx = RequestContext(broker, key, version, header.correlation_id, header.client_id, conn)
            tracer = broker.tracer
            if tracer is not None:
                tracer.request(ctx, body)
            started = time.monotonic()
            response = await handler.fn(ctx, body)
            broker.metrics_observe(key, version, time.monotonic() - started)
            if response is None:
                continue
            if tracer is not None:
                tracer.response(ctx, response)
            writer.writelines(protocol.encode_response(key, version, header.correlation_id, response))
            await writer.drain()
