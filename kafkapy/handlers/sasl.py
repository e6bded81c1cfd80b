"""SaslHandshake (key 17) and SaslAuthenticate (key 36), as Kafka's SaslServerAuthenticator runs them.

On a SASL listener a connection may send only ApiVersions, SaslHandshake and SaslAuthenticate until it is
authenticated (the connection core, kafkapy/connection.py, closes it on anything else). SaslHandshake v0 switches
the connection to the legacy framing: the next frames are raw SASL tokens with a size prefix and no request header,
answered the same way (the connection core does that); v1 expects SaslAuthenticate requests. A failed authentication answers
SASL_AUTHENTICATION_FAILED (v1) or nothing (legacy) and closes the connection; an unknown mechanism answers
UNSUPPORTED_SASL_MECHANISM and closes it.

Re-authentication (KIP-368): with ``connections.max.reauth.ms`` > 0, SaslAuthenticate v1+ tells the client its
session lifetime; it then sends SaslHandshake + SaslAuthenticate again on the same connection before the session
expires (the principal may not change). A request after expiry closes the connection.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from kafkapy.handlers import api
from kafkapy.sasl import AuthenticationError, SaslStateError, new_exchange
from wire.messages import sasl_authenticate_response as AR
from wire.messages import sasl_handshake_response as HR
from wire.messages.error_codes import ErrorCode

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import sasl_authenticate_request
    from wire.messages import sasl_authenticate_response
    from wire.messages import sasl_handshake_request
    from wire.messages import sasl_handshake_response

log = logging.getLogger("kafkapy.sasl")


def enabled_mechanisms(ctx) -> list[str]:
    return list(ctx.connection.listener.mechanisms)


@api("SaslHandshake", 0, 1)
async def sasl_handshake(ctx: RequestContext, req: sasl_handshake_request.SaslHandshakeRequest) -> sasl_handshake_response.SaslHandshakeResponse:
    """Version notes: v0 switches the connection to legacy framing (raw SASL tokens follow); v1 expects
    SaslAuthenticate. Re-authentication (KIP-368) needs v1 and the same mechanism, else ILLEGAL_SASL_STATE and the
    connection closes.

    Behaviour: ILLEGAL_SASL_STATE on a listener without SASL (as KafkaApis answers any SaslHandshake reaching it) and in
    the middle of an exchange (closes); UNSUPPORTED_SASL_MECHANISM with the enabled mechanisms for one the listener does
    not enable (closes). Otherwise starts the exchange with kafkapy.sasl.new_exchange; closing is left to the server
    loop through conn.close_reason.
    """
    conn = ctx.connection
    lst = conn.listener
    if lst is None or not lst.sasl:
        return HR.SaslHandshakeResponse(error_code=int(ErrorCode.ILLEGAL_SASL_STATE), mechanisms=[])
    mechs = enabled_mechanisms(ctx)
    if conn.sasl is not None and not conn.sasl.complete:
        log.warning("%s: SaslHandshake in the middle of a SASL exchange; closing the connection", conn.peer)
        conn.close_reason = "SaslHandshake during a SASL exchange"
        return HR.SaslHandshakeResponse(error_code=int(ErrorCode.ILLEGAL_SASL_STATE), mechanisms=mechs)
    if req.mechanism not in mechs:
        log.warning("%s: SASL mechanism %r is not enabled on listener %s (%s); closing the connection",
                    conn.peer, req.mechanism, lst.name, ",".join(mechs))
        conn.close_reason = f"unsupported SASL mechanism {req.mechanism!r}"
        return HR.SaslHandshakeResponse(error_code=int(ErrorCode.UNSUPPORTED_SASL_MECHANISM), mechanisms=mechs)
    if conn.authenticated:
        if ctx.api_version == 0:
            conn.close_reason = "re-authentication with SaslHandshake v0"
            return HR.SaslHandshakeResponse(error_code=int(ErrorCode.ILLEGAL_SASL_STATE), mechanisms=mechs)
        if req.mechanism != conn.sasl_mechanism:
            log.warning("%s: re-authentication with %s, not %s; closing", conn.peer, req.mechanism,
                        conn.sasl_mechanism)
            conn.close_reason = "re-authentication changed the SASL mechanism"
            return HR.SaslHandshakeResponse(error_code=int(ErrorCode.ILLEGAL_SASL_STATE), mechanisms=mechs)
        conn.reauthenticating = True
    conn.sasl = new_exchange(ctx.broker, lst, req.mechanism)
    conn.sasl_mechanism = req.mechanism
    conn.sasl_legacy = ctx.api_version == 0
    return HR.SaslHandshakeResponse(error_code=0, mechanisms=mechs)


def evaluate(conn, broker, token: bytes, version: int | None) -> tuple[bytes, int]:
    """Feed one token to the connection's exchange; (response token, session lifetime ms). Raises
    AuthenticationError / SaslStateError; on completion marks the connection authenticated."""
    out = conn.sasl.evaluate(token)
    lifetime = 0
    if conn.sasl.complete:
        principal = conn.sasl.principal
        if conn.reauthenticating and principal != conn.principal:
            raise AuthenticationError(f"Cannot change principals during re-authentication from {conn.principal}: "
                                      f"{principal}")
        reauth_ms = broker.config.get_int("connections.max.reauth.ms")
        conn.session_expires = time.monotonic() + reauth_ms / 1000 if reauth_ms > 0 else None
        lifetime = reauth_ms if reauth_ms > 0 and (version or 0) >= 1 else 0
        if not conn.reauthenticating:
            log.info("%s: authenticated as %s with %s on listener %s", conn.peer, principal, conn.sasl.mechanism,
                     conn.listener.name)
        else:
            log.debug("%s: re-authenticated as %s", conn.peer, principal)
        conn.principal = principal
        conn.authenticated = True
        conn.reauthenticating = False
    return out, lifetime


@api("SaslAuthenticate", 0, 2)
async def sasl_authenticate(ctx: RequestContext, req: sasl_authenticate_request.SaslAuthenticateRequest) -> sasl_authenticate_response.SaslAuthenticateResponse:
    """Version notes: v1+ session_lifetime_ms: connections.max.reauth.ms when set (KIP-368), 0 for v0 and when unset.

    Behaviour: feeds the token to the exchange SaslHandshake v1 started (kafkapy.sasl) and answers its reply; on
    completion the connection is authenticated as the exchange's principal (a re-authentication may not change it).
    ILLEGAL_SASL_STATE on a listener without SASL, or without a pending v1 exchange (closes); SASL_AUTHENTICATION_FAILED
    with the reason on a failed authentication (closes).
    """
    conn = ctx.connection
    lst = conn.listener

    def fail(code, message, reason):
        conn.close_reason = reason
        return AR.SaslAuthenticateResponse(error_code=int(code), error_message=message, auth_bytes=b"",
                                           session_lifetime_ms=0)

    if lst is None or not lst.sasl:
        return AR.SaslAuthenticateResponse(error_code=int(ErrorCode.ILLEGAL_SASL_STATE),
                                           error_message="SaslAuthenticate on a listener without SASL",
                                           auth_bytes=b"", session_lifetime_ms=0)
    if conn.sasl is None or conn.sasl_legacy or conn.sasl.complete:
        log.warning("%s: SaslAuthenticate without a SaslHandshake v1 before it; closing the connection", conn.peer)
        return fail(ErrorCode.ILLEGAL_SASL_STATE, "Unexpected SaslAuthenticate request", "SASL state error")
    try:
        out, lifetime = evaluate(conn, ctx.broker, bytes(req.auth_bytes or b""), ctx.api_version)
    except AuthenticationError as e:
        log.warning("%s: SASL %s authentication failed on listener %s: %s; closing the connection",
                    conn.peer, conn.sasl_mechanism, lst.name, e)
        return fail(ErrorCode.SASL_AUTHENTICATION_FAILED, str(e), "SASL authentication failed")
    except SaslStateError as e:
        log.warning("%s: %s; closing the connection", conn.peer, e)
        return fail(ErrorCode.ILLEGAL_SASL_STATE, str(e), "SASL state error")
    return AR.SaslAuthenticateResponse(error_code=0, error_message=None, auth_bytes=out,
                                       session_lifetime_ms=lifetime)
