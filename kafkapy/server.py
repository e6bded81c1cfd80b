"""The network side: an asyncio server, one task per connection, requests answered in order.

Like Kafka, a connection's next request is read only after the previous one was answered (Kafka
mutes the channel while a request is in flight), so responses always come back in request order
and a long poll (Fetch) simply holds its connection.

This module only reads, writes, waits and runs handlers; what a frame means (framing limits, KIP-511, the
SASL gate, which handler, what to answer when a handler raises) is decided by the sans-io protocol core,
``kafkapy.connection``, and nothing here knows any api's fields.

Limits, as Kafka has them:

- ``socket.request.max.bytes``: a size prefix beyond it (or negative) closes the connection before the frame is
  read.
- ``max.connections.per.ip`` (and ``max.connections.per.ip.overrides``): a connection beyond the limit of its
  address is closed at once and logged (Kafka: TooManyConnectionsException, connection dropped).
- ``max.connections``: beyond the broker-wide limit a new connection is accepted by the kernel but not served
  until another one closes (Kafka blocks its acceptor); it is dropped if the client gives up meanwhile, and
  at once when ``socket.listen.backlog.size`` connections are already waiting (the kernel's backlog in Kafka).
- ``connections.max.idle.ms``: a connection with no complete request (also one that stopped inside a request),
  or whose peer reads nothing of a response, for that long is closed.
- In-flight requests per connection: one being handled; what a pipelining client sends meanwhile stays in
  the StreamReader's buffer, which pauses the socket past ``2 * READ_LIMIT`` bytes plus one socket read
  (asyncio reads at most 256 KiB at a time); the rest waits in the kernel and then in the client, so the
  broker holds at most one request frame plus that buffer per connection.
- Backpressure: every response is followed by ``drain()``; the transport's write buffer high-water mark is
  ``WRITE_HIGH_WATER``, so a client that does not read stops its own connection (no further request is read)
  and the broker holds at most one response for it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import time
from dataclasses import dataclass

from kafkapy.connection import Close, ConnectionState, Dispatch, LegacySaslToken, Respond
from kafkapy.error_responses import error_response

log = logging.getLogger("kafkapy.server")

_SIZE = struct.Struct(">i")
READ_LIMIT = 1 << 16            # StreamReader limit: the transport pauses reading past twice this
WRITE_HIGH_WATER = 1 << 20      # transport write buffer: drain() waits above this ...
WRITE_LOW_WATER = 1 << 18       # ... until it is below this
_LONG_POLL_WATCH_MS = 500     # a request whose handler may wait longer is watched for its client going away ...
_PEER_POLL = 0.25              # ... this often (Kafka closes a connection at once when its peer does)
_PEER_GONE = object()
_RUN_HANDLER = object()          # a control hook let the handler run (kafkapy.control)
_SLOT_POLL = 0.1                # how often a connection waiting for a slot (max.connections) checks its peer
TLS_HANDSHAKE_TIMEOUT = 10.0    # seconds a new connection on an SSL listener has to finish the TLS handshake


def parse_overrides(text: str | None) -> dict[str, int]:
    """``max.connections.per.ip.overrides``: "hostName:100,127.0.0.1:200" -> {host: limit}."""
    out: dict[str, int] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, n = item.rpartition(":")
        if not sep or not host or not n.strip().isdigit():
            raise ValueError(f"max.connections.per.ip.overrides: {item!r} is not host:count")
        out[host.strip()] = int(n)
    return out


@dataclass
class RequestContext:
    """What a handler knows about the request besides its body."""

    broker: object                    # kafkapy.broker.Broker
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    connection: "Connection"


class Connection(ConnectionState):
    """A connection's protocol state (``ConnectionState``) plus its streams."""

    def __init__(self, peer: str, writer: asyncio.StreamWriter, reader: asyncio.StreamReader | None = None,
                 ip: str = "", **protocol_args):
        super().__init__(peer, **protocol_args)
        self.writer = writer
        self.reader = reader
        self.ip = ip
        self.opened = time.monotonic()

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


class Server:
    def __init__(self, broker, host: str, port: int, listeners: list | None = None):
        from kafkapy.listeners import Listener

        self.broker = broker
        self.host = host
        self.port = port
        self.listeners = listeners or [Listener("PLAINTEXT", "PLAINTEXT", host, port)]
        self._servers: list[asyncio.base_events.Server] = []
        self.connections: set[Connection] = set()
        self._tasks: set[asyncio.Task] = set()
        self._per_ip: dict[str, int] = {}
        self._slot_freed = asyncio.Event()
        self.rejected_connections = 0        # closed by max.connections.per.ip
        self.waiting_connections = 0         # held by max.connections, not served yet

    async def start(self) -> tuple[str, int]:
        """Listen on every listener; returns the bound (host, port) of the first. Each listener listens on every
        address its host resolves to (IPv4 first), all on the same port (also for port 0)."""
        try:
            for lst in self.listeners:
                lst.bound_host, lst.bound_port = await self._listen(lst)
        except BaseException:
            for srv in self._servers:
                srv.close()
            raise
        first = self.listeners[0]
        self.host, self.port = first.bound_host, first.bound_port
        return first.bound_host, first.bound_port

    async def _listen(self, lst) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(lst.host or None, lst.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        addrs = []
        for _family, *_rest, sockaddr in sorted(infos, key=lambda i: i[0] != socket.AF_INET):
            if sockaddr[0] not in addrs:
                addrs.append(sockaddr[0])
        backlog = self.broker.config.get_int("socket.listen.backlog.size")

        async def accept(reader, writer):
            await self._accept(reader, writer, lst)

        first = await asyncio.start_server(accept, addrs[0], lst.port, limit=READ_LIMIT, reuse_address=True,
                                           backlog=backlog)
        self._servers.append(first)
        bound = first.sockets[0].getsockname()
        for other in addrs[1:]:
            try:
                self._servers.append(await asyncio.start_server(accept, other, bound[1], limit=READ_LIMIT,
                                                                reuse_address=True, backlog=backlog))
            except OSError as e:   # e.g. no IPv6 on this machine: the first address is enough
                log.debug("not listening on %s:%d: %s", other, bound[1], e)
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

    def _ip_limit(self, ip: str) -> int:
        cfg = self.broker.config
        overrides = parse_overrides(cfg.get("max.connections.per.ip.overrides"))
        return overrides.get(ip, cfg.get_int("max.connections.per.ip"))

    async def _wait_for_slot(self, reader: asyncio.StreamReader, peer: str) -> bool:
        """Hold a new connection while the broker has max.connections; False if the peer went away."""
        limit = self.broker.config.get_int("max.connections")
        if len(self.connections) < limit:
            return True
        backlog = self.broker.config.get_int("socket.listen.backlog.size")
        if self.waiting_connections >= backlog:
            # Kafka's blocked acceptor leaves them to the kernel's listen backlog, which drops what is beyond it
            log.warning("%s: the broker has max.connections=%d connections and %d waiting "
                        "(socket.listen.backlog.size); closing this one", peer, limit, self.waiting_connections)
            return False
        log.warning("%s: the broker has max.connections=%d connections; not serving this one until one closes",
                    peer, limit)
        self.waiting_connections += 1
        try:
            while len(self.connections) >= limit:
                if getattr(reader, "_eof", False) or reader.exception() is not None:
                    return False
                self._slot_freed.clear()
                try:
                    await asyncio.wait_for(self._slot_freed.wait(), _SLOT_POLL)
                except asyncio.TimeoutError:
                    pass
            return True
        finally:
            self.waiting_connections -= 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener=None) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        peer_s = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        ip = peer[0] if isinstance(peer, tuple) else str(peer)
        try:
            limit = self._ip_limit(ip)
            if self._per_ip.get(ip, 0) >= limit:
                self.rejected_connections += 1
                log.warning("rejected connection from %s: %s already has max.connections.per.ip=%d connections",
                            peer_s, ip, limit)
                writer.transport.abort()
                self._tasks.discard(task)
                return
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        except BaseException:
            self._tasks.discard(task)
            writer.transport.abort()
            raise
        cfg = self.broker.config
        conn = Connection(peer_s, writer, reader, ip, listener=listener or self.listeners[0],
                          handlers=self.broker.handlers, api_versions=self.broker.api_versions_response,
                          max_request_size=cfg.get_int("socket.request.max.bytes"))
        reason = "closed by client"
        served = False
        try:
            writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
            if not await self._wait_for_slot(reader, peer_s):
                reason = "not served: max.connections reached (client gone, or too many waiting)"
                return
            lst = conn.listener
            if lst.tls:
                failed = await self._tls_handshake(conn, writer)
                if failed:
                    reason = failed
                    return
            served = True
            self.broker.metrics.connections_total += 1
            self.connections.add(conn)
            log.info("connection opened from %s", peer_s)
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
            n = self._per_ip.get(ip, 1) - 1
            if n > 0:
                self._per_ip[ip] = n
            else:
                self._per_ip.pop(ip, None)
            self._slot_freed.set()
            self._tasks.discard(task)
            conn.close()
            if served:
                log.info("connection closed from %s after %d requests (%s)", peer_s, conn.requests, reason)
            else:
                log.info("connection from %s closed before it was served (%s)", peer_s, reason)

    async def _tls_handshake(self, conn: Connection, writer: asyncio.StreamWriter) -> str | None:
        """TLS on an SSL/SASL_SSL listener; None when done, else why the connection is closed (logged)."""
        lst = conn.listener
        try:
            await writer.start_tls(lst.ssl_context, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, ssl.CertificateError, ConnectionError, OSError, asyncio.TimeoutError) as e:
            log.warning("%s: TLS handshake failed on listener %s: %s; closing the connection",
                        conn.peer, lst.name, e.__class__.__name__ + (f": {e}" if str(e) else ""))
            writer.transport.abort()
            return "TLS handshake failed"
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        if lst.protocol == "SSL":
            from kafkapy.tls import principal_of

            conn.principal = principal_of(writer.get_extra_info("ssl_object"))
        log.debug("%s: TLS established on listener %s (%s)", conn.peer, lst.name, conn.principal)
        return None

    def _legacy_sasl_token(self, conn: Connection, token: bytes) -> Respond | Close:
        """A raw SASL token after SaslHandshake v0 (no request header): the raw answer, or Close."""
        from kafkapy.handlers.sasl import evaluate
        from kafkapy.sasl import AuthenticationError, SaslStateError

        try:
            out, _ = evaluate(conn, self.broker, token, None)
        except (AuthenticationError, SaslStateError) as e:
            return conn.legacy_sasl_failed(e)
        return conn.legacy_sasl_answer(out)

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader, conn: Connection) -> memoryview | Close:
        """The next frame without its size prefix, or Close when its size is refused (nothing more is read)."""
        size = _SIZE.unpack(await reader.readexactly(4))[0]
        refused = conn.check_size(size)
        if refused is not None:
            return refused
        return memoryview(await reader.readexactly(size))

    @staticmethod
    def _peer_gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        return bool(getattr(reader, "_eof", False)) or reader.exception() is not None or writer.transport.is_closing()

    async def _long_poll(self, coro, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        """Run a long-polling handler; cancel it (and answer _PEER_GONE) if the client closes meanwhile, so a
        gone client does not hold its connection task for the whole wait."""
        task = asyncio.ensure_future(coro)
        try:
            while True:
                done, _ = await asyncio.wait((task,), timeout=_PEER_POLL)
                if done:
                    return task.result()
                if self._peer_gone(reader, writer):
                    task.cancel()
                    await asyncio.wait((task,))
                    return _PEER_GONE
        except asyncio.CancelledError:
            task.cancel()
            raise

    async def _send(self, writer: asyncio.StreamWriter, frames, idle: float | None) -> bool:
        """Write one response and wait for the transport to take it (backpressure). False when the peer read
        nothing of it for connections.max.idle.ms."""
        writer.writelines(frames)
        if idle is None or writer.transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            await writer.drain()    # not paused: returns at once (raises if the connection was lost)
            return True
        try:
            await asyncio.wait_for(writer.drain(), idle)
        except asyncio.TimeoutError:
            return False
        return True

    async def _serve(self, conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        idle_ms = self.broker.config.get_int("connections.max.idle.ms")
        idle = None if idle_ms < 0 else idle_ms / 1000
        metrics = self.broker.metrics
        while True:
            try:
                # one timeout for the size prefix and the frame: a client that stops inside a request is idle too
                frame = await asyncio.wait_for(self._read_request(reader, conn), idle)
            except asyncio.TimeoutError:
                return f"idle for more than {idle_ms} ms (connections.max.idle.ms)"
            except asyncio.IncompleteReadError as e:
                if e.expected == 4:
                    return "closed by client" if not e.partial else "closed by client inside a size prefix"
                return "closed by client inside a request"
            if isinstance(frame, Close):
                return self._closing(conn, frame)
            metrics.bytes_in += len(frame) + 4
            action = conn.receive_frame(frame)
            if isinstance(action, Dispatch):
                action = await self._dispatch(conn, action, reader, writer)
                if action is None:     # the request takes no response (Produce with acks=0)
                    continue
            elif isinstance(action, LegacySaslToken):
                action = self._legacy_sasl_token(conn, action.token)
            if isinstance(action, Close):
                return self._closing(conn, action)
            if not await self._send(writer, action.frames, idle):
                return f"the client read nothing of a response for {idle_ms} ms (connections.max.idle.ms)"
            done = conn.after_response()
            if done is not None:
                return self._closing(conn, done)

    @staticmethod
    def _closing(conn: Connection, close: Close) -> str:
        if close.message is not None:
            log.warning("%s: %s; closing the connection", conn.peer, close.message)
        return close.reason

    async def _dispatch(self, conn: Connection, d: Dispatch, reader, writer) -> Respond | Close | None:
        """Run ``d``'s handler: its response, the core's error response when it raised, None for no response.
        With control hooks installed (``broker.controls``, ``kafkapy.control``) they are asked first."""
        broker = self.broker
        if broker.paused is not None:      # kafkapy.Cluster.pause: a hung broker answers nothing until resumed
            await broker.paused.wait()
        if broker.isolation is not None and broker.isolation.refuses(d.client_id):     # kafkapy.Cluster.isolate
            return Close("network partition (kafkapy.Cluster.isolate)")
        ctx = RequestContext(broker, d.api_key, d.api_version, d.correlation_id, d.client_id, conn)
        tracer = broker.tracer
        if tracer is not None:
            tracer.request(ctx, d.body)
        started = time.monotonic()
        out = _RUN_HANDLER
        dropped = _RUN_HANDLER
        controls = broker.controls
        if controls is not None:
            out, dropped = await self._control(controls, conn, d, reader, writer)
        if out is _RUN_HANDLER:
            try:
                if d.max_wait_ms > _LONG_POLL_WATCH_MS:
                    response = await self._long_poll(d.handler.fn(ctx, d.body), reader, writer)
                    if response is _PEER_GONE:
                        return Close(f"closed by client during a {d.handler.name} long poll")
                else:
                    response = await d.handler.fn(ctx, d.body)
                out = None if response is None else Respond(conn.respond(d, response), response)
            except Exception:  # noqa: BLE001 - Kafka's KafkaApis.handle: the request gets an error response
                log.exception("%s: %s v%d request (correlation id %d) failed; answering UNKNOWN_SERVER_ERROR",
                              conn.peer, d.handler.name, d.api_version, d.correlation_id)
                out = conn.handler_failed(d)
            if dropped is not _RUN_HANDLER:     # a hook's DropResponse: the request took effect, the answer is lost
                log.info("%s: %s v%d (correlation id %d): a control hook dropped the response", conn.peer,
                         d.handler.name, d.api_version, d.correlation_id)
                out = dropped
        if broker.isolation is not None and broker.isolation.refuses(d.client_id):
            return Close("network partition (kafkapy.Cluster.isolate): the answer is lost")   # began meanwhile
        broker.metrics_observe(d.api_key, d.api_version, time.monotonic() - started)
        if isinstance(out, Respond):
            if tracer is not None:
                tracer.response(ctx, out.body)
            broker.metrics.responded(d.api_key, out.body, out.frames)
        return out

    async def _control(self, controls, conn: Connection, d: Dispatch, reader, writer):
        """Ask the control hooks about ``d``: (what to send, or _RUN_HANDLER; what to send instead of the
        handler's answer (Close, or None for nothing), or _RUN_HANDLER to send that answer)."""
        from kafkapy import control as c

        req = c.ControlRequest(d.api_key, d.api_version, d.correlation_id, d.client_id, d.body, conn.peer, conn)
        try:
            action = controls.decide(req)
        except c.HookFailed:
            log.exception("%s: %s v%d (correlation id %d): answering UNKNOWN_SERVER_ERROR", conn.peer,
                          d.handler.name, d.api_version, d.correlation_id)
            return conn.handler_failed(d), _RUN_HANDLER
        while isinstance(action, c.Delay):
            if action.seconds > _LONG_POLL_WATCH_MS / 1000:
                if await self._long_poll(asyncio.sleep(action.seconds), reader, writer) is _PEER_GONE:
                    return Close("closed by client during a control hook's delay"), _RUN_HANDLER
            else:
                await asyncio.sleep(action.seconds)
            action = action.then
        if action is None:
            return _RUN_HANDLER, _RUN_HANDLER
        if isinstance(action, c.DropResponse):
            return _RUN_HANDLER, (Close("response dropped by a control hook") if action.close else None)
        if isinstance(action, c.CloseConnection):
            log.info("%s: %s v%d (correlation id %d): %s", conn.peer, d.handler.name, d.api_version,
                     d.correlation_id, action.reason)
            return Close(action.reason), _RUN_HANDLER
        if isinstance(action, c.Error):
            body = error_response(d.api_key, d.api_version, d.body, action.code)
            if body is None:       # takes no answer (acks=0): closing tells the client the batch is lost
                return Close(f"a control hook failed a {d.handler.name} that takes no response"), _RUN_HANDLER
        else:
            body = action
        try:
            return Respond(conn.respond(d, body), body), _RUN_HANDLER
        except Exception:  # noqa: BLE001 - a hook's response that does not encode at this version
            log.exception("%s: a control hook's %s v%d response does not encode; answering UNKNOWN_SERVER_ERROR",
                          conn.peer, d.handler.name, d.api_version)
            return conn.handler_failed(d), _RUN_HANDLER
