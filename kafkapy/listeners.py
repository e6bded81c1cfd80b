"""Listeners as Kafka configures them: ``listeners``, ``advertised.listeners``, ``listener.security.protocol.map``.

``listeners=PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9093`` names each listener (the part before ``://``);
its security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) comes from ``listener.security.protocol.map``
(``NAME:PROTOCOL,...``; by default each protocol name maps to itself). ``advertised.listeners`` gives, by listener
name, the address clients are told in Metadata, FindCoordinator and DescribeCluster: a client is always answered
with the advertised address of the listener it came in on. Port 0 picks a free port; an advertised port 0 (or a
listener missing from ``advertised.listeners``) means the bound one.

Settings of one listener may be given with Kafka's prefix ``listener.name.<name in lower case>.<setting>``
(``listener.name.sasl_ssl.ssl.keystore.location``; for SASL JAAS also
``listener.name.<name>.<mechanism in lower case>.sasl.jaas.config``); :func:`listener_setting` looks them up.

Without ``listeners`` the broker has one PLAINTEXT listener on ``--host``/``--port`` (advertised as
``--advertised-host``/``--advertised-port``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kafkapy.config import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
DEFAULT_PROTOCOL_MAP = {p: p for p in PROTOCOLS}
_URL = re.compile(r"^(?P<name>[A-Za-z0-9_]+)://(?P<host>\[[^\]]*\]|[^:/]*):(?P<port>-?\d+)$")


@dataclass(eq=False)
class Listener:
    name: str                         # upper case, e.g. "SASL_SSL" or "EXTERNAL"
    protocol: str                     # one of PROTOCOLS
    host: str                         # listen host ("" = every interface)
    port: int                         # listen port (0 = a free one)
    advertised_host: str | None = None
    advertised_port: int | None = None
    bound_host: str | None = None     # filled in once listening
    bound_port: int | None = None
    ssl_context: object = None        # ssl.SSLContext for SSL / SASL_SSL, built at start
    client_auth: str = "none"         # ssl.client.auth: required | requested | none
    mechanisms: list[str] = field(default_factory=list)   # sasl.enabled.mechanisms on SASL listeners

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def advertised(self) -> tuple[str, int]:
        host = self.advertised_host or self.bound_host or self.host or "localhost"
        if host in ("0.0.0.0", "::"):
            host = "localhost"
        return host, self.advertised_port or self.bound_port or self.port

    def __repr__(self) -> str:
        return (f"Listener({self.name}, {self.protocol}, {self.bound_host or self.host}:{self.bound_port or self.port},"
                f" advertised {'%s:%d' % self.advertised})")


def _split(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def parse_protocol_map(text: str | None) -> dict[str, str]:
    if not text:
        return dict(DEFAULT_PROTOCOL_MAP)
    out = {}
    for item in _split(text):
        name, sep, proto = item.partition(":")
        name, proto = name.strip().upper(), proto.strip().upper()
        if not sep or not name or proto not in PROTOCOLS:
            raise ConfigError(f"listener.security.protocol.map: {item!r} is not NAME:PROTOCOL with PROTOCOL one of "
                              f"{', '.join(PROTOCOLS)}")
        out[name] = proto
    return out


def parse_endpoints(text: str | None, setting: str) -> list[tuple[str, str, int]]:
    out = []
    for item in _split(text):
        m = _URL.match(item)
        if not m:
            raise ConfigError(f"{setting}: {item!r} is not NAME://HOST:PORT")
        host = m["host"]
        if host.startswith("["):
            host = host[1:-1]
        port = int(m["port"])
        if not 0 <= port <= 65535:
            raise ConfigError(f"{setting}: port {port} out of range")
        name = m["name"].upper()
        if any(n == name for n, _, _ in out):
            raise ConfigError(f"{setting}: listener name {name} appears more than once")
        out.append((name, host, port))
    return out


def listeners_from_config(config) -> list[Listener]:
    """The listeners of a BrokerConfig (``listeners`` if set, else one PLAINTEXT listener on host:port)."""
    props = config.properties
    pmap = parse_protocol_map(props.get("listener.security.protocol.map"))
    advertised = {n: (h, p) for n, h, p in parse_endpoints(props.get("advertised.listeners"), "advertised.listeners")}
    if not props.get("listeners"):
        ah, ap = advertised.get("PLAINTEXT", (None, None))
        return [Listener("PLAINTEXT", "PLAINTEXT", config.host, config.port, config.advertised_host or ah or None,
                         config.advertised_port or ap or None)]
    out = []
    for name, host, port in parse_endpoints(props["listeners"], "listeners"):
        proto = pmap.get(name)
        if proto is None:
            raise ConfigError(f"listeners: listener {name} has no security protocol in listener.security.protocol.map")
        ah, ap = advertised.get(name, (None, None))
        out.append(Listener(name, proto, host, port, ah or None, ap or None))
    for name in advertised:
        if not any(lst.name == name for lst in out):
            raise ConfigError(f"advertised.listeners: {name} is not one of the listeners")
    if not out:
        raise ConfigError("listeners: no listener given")
    return out


def listener_setting(config, listener: Listener | None, key: str, mechanism: str | None = None) -> str | None:
    """A setting for ``listener``: ``listener.name.<l>.<mech>.<key>``, ``listener.name.<l>.<key>``, then ``key``."""
    props = config.properties
    if listener is not None:
        prefix = f"listener.name.{listener.name.lower()}."
        if mechanism:
            v = props.get(f"{prefix}{mechanism.lower()}.{key}")
            if v is not None:
                return v
        v = props.get(prefix + key)
        if v is not None:
            return v
    if mechanism:
        v = props.get(f"{mechanism.lower()}.{key}")
        if v is not None:
            return v
    return config.get(key)
