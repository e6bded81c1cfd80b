"""One client connection's protocol, sans-io (in the manner of h11): frames in, actions out.

Nothing here touches a socket, asyncio or the broker: ``ConnectionState`` is given received bytes
(``receive_data``) or complete frames (``check_size`` + ``receive_frame``) and answers with what to do. The
network side (``kafkapy.server``) only reads, writes, waits and runs handlers:

- ``Dispatch``: run ``handler.fn(ctx, body)``; send ``respond(dispatch, response)``, or, when the handler
  raised, ``handler_failed(dispatch)`` (a ``Respond`` or a ``Close``). ``max_wait_ms`` is how long the
  handler may hold the request (from its registration), so the server knows when to watch the client.
- ``Respond``: send these frames (an answer the protocol gives without a handler).
- ``LegacySaslToken``: a raw SASL token; evaluate it and send ``legacy_sasl_answer(token)``, or close.
- ``Close``: close the connection for ``reason``, logging ``message`` (a warning) when there is one.

Rules, as Kafka's SocketServer, KafkaApis and SaslServerAuthenticator apply them:

1. Framing: a 4-byte big-endian size, then that many bytes. A size that is negative or above
   ``socket.request.max.bytes`` closes the connection before any of the frame is read.
2. After SaslHandshake v0, frames are raw SASL tokens with no request header (legacy framing) until the
   exchange completes; each is answered with a raw size-prefixed token.
3. KIP-511: ApiVersions at a version this broker does not implement is answered at v0 with UNSUPPORTED_VERSION
   and the versions it has, so the client can retry with one of them. The correlation id is read at its fixed
   place (bytes 4-8): the rest of an unknown version's header may not parse. It is the only request the
   protocol answers by itself.
4. A header that does not parse, an unknown api key, a version unknown to the schema or not implemented by a
   handler (for any api but ApiVersions), or a body that does not parse closes the connection without a
   response: Kafka does not answer what it cannot read.
5. On a SASL listener only ApiVersions, SaslHandshake and SaslAuthenticate may come before authentication;
   anything else closes the connection. With ``connections.max.reauth.ms``, any other request after the
   session expired closes it too (KIP-368); re-authentication resets the expiry (``handlers/sasl.py``).
6. A handler that raises is answered with UNKNOWN_SERVER_ERROR, built from the request as Kafka's
   ``getErrorResponse`` builds it (``kafkapy.error_responses``), and the connection stays open, as in Kafka's
   ``KafkaApis.handle``. A request that takes no response (Produce with acks=0) closes the connection instead,
   so the client does not take the lost batch for written (Kafka's ``sendErrorOrCloseConnection``).
7. A handler may ask for the connection to be closed once its response is sent (``close_reason``, e.g. a failed
   SASL authentication): ``after_response`` says so.
8. Every complete frame counts as a request (``requests``), also one that closes the connection.

Handlers see this object as ``ctx.connection`` and keep the SASL state on it (``principal``, ``authenticated``,
``sasl``, ``sasl_mechanism``, ``sasl_legacy``, ``reauthenticating``, ``session_expires``, ``close_reason``).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Callable

from kafkapy.error_responses import error_response
from wire import DecodeError, protocol
from wire.messages.error_codes import ErrorCode

_SIZE = struct.Struct(">i")
_CORRELATION = struct.Struct(">i")
API_VERSIONS = protocol.API_VERSIONS_KEY
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
BEFORE_AUTH = (API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE)   # what an unauthenticated SASL connection may send
DEFAULT_MAX_REQUEST_SIZE = 104857600   # Kafka's socket.request.max.bytes default


@dataclass(frozen=True)
class Dispatch:
    """Run ``handler`` on ``body`` and answer with its response."""

    handler: object                  # kafkapy.handlers.Handler
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: object
    max_wait_ms: int = 0             # how long the handler may hold the request (0: it answers at once)


@dataclass(frozen=True)
class Respond:
    """Send ``frames`` (size-prefixed chunks); ``body`` is the response message, when there is one."""

    frames: list
    body: object = None


@dataclass(frozen=True)
class Close:
    """Close the connection; ``message`` (if any) says why in the broker's log."""

    reason: str
    message: str | None = None


@dataclass(frozen=True)
class LegacySaslToken:
    """A raw SASL token (legacy framing after SaslHandshake v0)."""

    token: bytes


class ConnectionState:
    """The protocol state of one connection. ``handlers``: api key -> Handler (the registry);
    ``api_versions(error_code)``: the broker's ApiVersions response body; ``clock``: monotonic seconds."""

    def __init__(self, peer: str, *, handlers: dict, api_versions: Callable[[int], object], listener=None,
                 max_request_size: int = DEFAULT_MAX_REQUEST_SIZE, clock: Callable[[], float] = time.monotonic):
        self.peer = peer
        self.listener = listener                 # kafkapy.listeners.Listener the client came in on
        self.handlers = handlers
        self.api_versions = api_versions
        self.max_request_size = max_request_size
        self.clock = clock
        self.requests = 0
        self.principal = "User:ANONYMOUS"        # Kafka's KafkaPrincipal as "Type:name"
        # False on a SASL listener until SaslAuthenticate succeeds
        self.authenticated = not getattr(listener, "sasl", False)
        self.sasl = None                         # the SASL exchange in progress or done (kafkapy.sasl)
        self.sasl_mechanism: str | None = None
        self.sasl_legacy = False                 # after SaslHandshake v0: raw size-prefixed SASL tokens
        self.reauthenticating = False
        self.session_expires: float | None = None   # on ``clock``; connections.max.reauth.ms
        self.close_reason: str | None = None     # set by a handler: close after sending its response
        self.closed: Close | None = None         # once a Close was returned, nothing more is taken
        self._buffer = bytearray()

    # ------------------------------------------------------------ input

    def receive_data(self, data: bytes) -> list:
        """Bytes as they come from the socket: the actions of every frame they complete, in order."""
        if self.closed is not None:
            return []
        self._buffer += data
        actions = []
        while self.closed is None and len(self._buffer) >= 4:
            size = _SIZE.unpack_from(self._buffer, 0)[0]
            bad = self.check_size(size)
            if bad is not None:
                actions.append(bad)
                break
            if len(self._buffer) < 4 + size:
                break
            frame = bytes(self._buffer[4:4 + size])
            del self._buffer[:4 + size]
            actions.append(self.receive_frame(frame))
        return actions

    def check_size(self, size: int) -> Close | None:
        """The size prefix of the next frame: a Close when it is negative or too large, else None."""
        if 0 <= size <= self.max_request_size:
            return None
        return self._close("invalid request size",
                           f"request size {size} is invalid (socket.request.max.bytes={self.max_request_size})")

    def receive_frame(self, frame) -> Dispatch | Respond | Close | LegacySaslToken:
        """One complete frame (without its size prefix)."""
        if self.closed is not None:
            raise RuntimeError(f"connection already closed ({self.closed.reason})")
        self.requests += 1
        if self.sasl_legacy:
            return LegacySaslToken(bytes(frame))
        try:
            key, version = protocol.peek_key_version(frame)
        except DecodeError as e:   # str(e): a kept log record must not keep the frame alive via the traceback
            return self._close("malformed request", f"malformed request header ({e})")
        if key == API_VERSIONS and not self._implemented(key, version):
            corr = _CORRELATION.unpack_from(frame, 4)[0] if len(frame) >= 8 else 0
            body = self.api_versions(ErrorCode.UNSUPPORTED_VERSION)
            return Respond(protocol.encode_response(key, 0, corr, body), body)
        try:
            header, _hv, pos = protocol.decode_request_header(frame)
        except protocol.UnsupportedVersion:
            return self._close("unsupported version",
                               f"{protocol.API[key].name} v{version} is not a version this broker knows")
        except protocol.UnknownApiKey as e:
            return self._close("unknown api key", str(e))
        except DecodeError as e:
            return self._close("malformed request", f"malformed request header ({e})")
        name = protocol.API[key].name
        if key not in BEFORE_AUTH:
            if not self.authenticated:
                return self._close("request before SASL authentication",
                                   f"{name} request before SASL authentication on listener "
                                   f"{getattr(self.listener, 'name', None)}")
            if self.session_expires is not None and self.clock() > self.session_expires:
                return self._close("SASL session expired", "SASL session expired (connections.max.reauth.ms) and "
                                   "the client did not re-authenticate")
        if not self._implemented(key, version):
            return self._close("unsupported api", f"{name} v{version} is not implemented by this broker")
        handler = self.handlers[key]
        try:
            body, _end = protocol.decode(protocol.API[key].request, version, frame, pos)
        except DecodeError as e:
            return self._close("malformed request", f"malformed {name} v{version} request ({e})")
        max_wait = handler.max_wait(body) if getattr(handler, "max_wait", None) is not None else 0
        return Dispatch(handler, key, version, header.correlation_id, header.client_id, body, max_wait)

    # ------------------------------------------------------------ output

    def respond(self, d: Dispatch, body) -> list:
        """The response frame (as chunks) that answers ``d`` with ``body``."""
        return protocol.encode_response(d.api_key, d.api_version, d.correlation_id, body)

    def handler_failed(self, d: Dispatch) -> Respond | Close:
        """``d``'s handler raised: answer UNKNOWN_SERVER_ERROR and go on; close when the request takes no answer."""
        body = error_response(d.api_key, d.api_version, d.body, ErrorCode.UNKNOWN_SERVER_ERROR)
        if body is None:
            return self._close("handler failed on a request without a response",
                               f"{protocol.API[d.api_key].name} v{d.api_version} failed and takes no response")
        return Respond(self.respond(d, body), body)

    def after_response(self) -> Close | None:
        """Whether the connection closes now that a response was sent (a handler asked for it)."""
        if self.close_reason is not None:
            return self._close(self.close_reason)
        return None

    def legacy_sasl_answer(self, token: bytes) -> Respond:
        """The raw size-prefixed answer to a legacy SASL token; leaves the legacy framing once authenticated."""
        if self.sasl is not None and self.sasl.complete:
            self.sasl_legacy = False
        return Respond([_SIZE.pack(len(token)), token])

    def legacy_sasl_failed(self, error: Exception) -> Close:
        return self._close("SASL authentication failed",
                           f"SASL {self.sasl_mechanism} authentication failed on listener "
                           f"{getattr(self.listener, 'name', None)}: {error}")

    # ------------------------------------------------------------ helpers

    def _implemented(self, key: int, version: int) -> bool:
        h = self.handlers.get(key)
        return h is not None and h.min_version <= version <= h.max_version

    def _close(self, reason: str, message: str | None = None) -> Close:
        self.closed = Close(reason, message)
        return self.closed
