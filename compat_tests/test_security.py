"""Security through real clients: listeners, SASL (PLAIN, SCRAM), TLS with client certificates, refusals.

One broker with four listeners (PLAINTEXT, SASL_PLAINTEXT with PLAIN users from a JAAS config, SASL_SSL with
SCRAM-SHA-256/512, SSL requiring a client certificate), all on port 0; certificates from kafkapy.tls (openssl).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
import time

import pytest

from compat_tests.harness import BrokerProcess, unique_topic

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not on PATH")

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" '
        'password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";')


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    from kafkapy import tls

    d = str(tmp_path_factory.mktemp("certs"))
    tls.make_ca(d)
    tls.make_cert(d, "server", hosts=("localhost", "127.0.0.1"), server=True)
    tls.make_cert(d, "alice", subject="/O=kafkapy/OU=test/CN=alice")
    tls.make_cert(d, "expired", days=-1)
    other = str(tmp_path_factory.mktemp("other-ca"))
    tls.make_ca(other, name="someone-else")
    tls.make_cert(other, "mallory")
    return {"dir": d, "ca": f"{d}/ca.pem", "server": f"{d}/server.pem", "alice": f"{d}/alice.pem",
            "alice_cert": f"{d}/alice-cert.pem", "alice_key": f"{d}/alice-key.pem",
            "expired_cert": f"{d}/expired-cert.pem", "expired_key": f"{d}/expired-key.pem",
            "mallory_cert": f"{other}/mallory-cert.pem", "mallory_key": f"{other}/mallory-key.pem"}


def security_args(certs) -> list[str]:
    return [
        "-o", "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0,"
              "SSL://127.0.0.1:0",
        "-o", f"listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}",
        "-o", "listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN",
        "-o", "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512",
        "-o", "kafkapy.scram.users=SCRAM-SHA-512=[name=bob,password=bob-secret];"
              "SCRAM-SHA-256=[name=bob,password=bob-secret]",
        "-o", f"ssl.keystore.location={certs['server']}",
        "-o", f"ssl.truststore.location={certs['ca']}",
        "-o", "listener.name.ssl.ssl.client.auth=required",
    ]


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory, certs):
    b = BrokerProcess(storage="disk")
    b.start(tmp_path_factory.mktemp("secure") / "data", security_args(certs))
    b.ports = {name: b.listener_port(name) for name in ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL")}
    try:
        yield b
    finally:
        b.stop()


def addr(b, name):
    return f"127.0.0.1:{b.ports[name]}"


def plain_conf(b, user="alice", password="alice-secret"):
    return {"bootstrap.servers": addr(b, "SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": password}


def scram_conf(b, certs, user="bob", password="bob-secret", mechanism="SCRAM-SHA-512"):
    return {"bootstrap.servers": addr(b, "SASL_SSL"), "security.protocol": "SASL_SSL",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
            "ssl.ca.location": certs["ca"]}


def ssl_conf(b, certs, cert="alice_cert", key="alice_key"):
    return {"bootstrap.servers": addr(b, "SSL"), "security.protocol": "SSL", "ssl.ca.location": certs["ca"],
            "ssl.certificate.location": certs[cert], "ssl.key.location": certs[key]}


def roundtrip_confluent(conf: dict, n: int = 5) -> None:
    """Admin create topic, produce n records, consume them in a group: all through ``conf``."""
    topic = unique_topic("sec")
    admin = AdminClient(dict(conf))
    futs = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futs[topic].result(timeout=20)
    md = admin.list_topics(timeout=10)
    assert topic in md.topics
    host, port = conf["bootstrap.servers"].rsplit(":", 1)
    assert [(br.host, br.port) for br in md.brokers.values()] == [(host, int(port))]
    p = ck.Producer(dict(conf, **{"acks": "all"}))
    for i in range(n):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i)
    assert p.flush(20) == 0
    c = ck.Consumer(dict(conf, **{"group.id": unique_topic("g"), "auto.offset.reset": "earliest"}))
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.commit(asynchronous=False)
    c.close()
    assert got == [b"v%d" % i for i in range(n)]


def expect_auth_failure(conf: dict, timeout: float = 15, tls: bool = False) -> str:
    """A producer with ``conf`` must get an authentication error (and nothing else). ``tls``: a client certificate
    the broker refuses; with TLS 1.3 the client learns it only as the connection closed right after the handshake
    (as with Kafka), so a transport error counts too."""
    errors = []
    p = ck.Producer(dict(conf, **{"error_cb": lambda e: errors.append(e)}))
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        p.poll(0.2)
    p.flush(0)
    assert errors, "no error reported"
    ok = (ck.KafkaError._AUTHENTICATION, ck.KafkaError.SASL_AUTHENTICATION_FAILED, ck.KafkaError._SSL)
    if tls:
        ok += (ck.KafkaError._ALL_BROKERS_DOWN, ck.KafkaError._TRANSPORT)
    assert any(e.code() in ok for e in errors), errors
    return str(errors[0])


# ---------------------------------------------------------------- listeners


def test_each_listener_advertises_itself(secure_broker, certs):
    b = secure_broker
    assert len(set(b.ports.values())) == 4
    assert b.port == b.ports["PLAINTEXT"]   # the ready line names the first listener
    for conf in (
        {"bootstrap.servers": addr(b, "PLAINTEXT")},
        plain_conf(b),
        scram_conf(b, certs),
        ssl_conf(b, certs),
    ):
        md = AdminClient(dict(conf)).list_topics(timeout=15)
        host, port = conf["bootstrap.servers"].rsplit(":", 1)
        assert [(br.host, br.port) for br in md.brokers.values()] == [(host, int(port))]


def test_jaas_config_is_not_shown(secure_broker):
    from confluent_kafka.admin import ConfigResource

    admin = AdminClient({"bootstrap.servers": addr(secure_broker, "PLAINTEXT")})
    res = ConfigResource(ConfigResource.Type.BROKER, "1")
    entries = admin.describe_configs([res])[res].result(timeout=10)
    jaas = entries["listener.name.sasl_plaintext.plain.sasl.jaas.config"]
    assert jaas.is_sensitive and jaas.value is None
    assert entries["kafkapy.scram.users"].value is None


def test_advertised_listeners(tmp_path):
    b = BrokerProcess(storage="memory")
    b.start(tmp_path / "d", ["-o", "listeners=INTERNAL://127.0.0.1:0,EXTERNAL://127.0.0.1:0",
                             "-o", "listener.security.protocol.map=INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
                             "-o", "advertised.listeners=EXTERNAL://kafka.example.com:19092"])
    try:
        internal, external = b.listener_port("INTERNAL"), b.listener_port("EXTERNAL")
        md = AdminClient({"bootstrap.servers": f"127.0.0.1:{internal}"}).list_topics(timeout=10)
        assert [(x.host, x.port) for x in md.brokers.values()] == [("127.0.0.1", internal)]
        # the EXTERNAL listener answers with its advertised address (raw Metadata: a client would go on to
        # connect to kafka.example.com)
        resp = raw_metadata(external)
        assert [(x.host, x.port) for x in resp.brokers] == [("kafka.example.com", 19092)]
    finally:
        b.stop()


def _frame(api_key, version, corr, body, client_id="raw"):
    from wire import protocol

    return protocol.encode_request(api_key, version, corr, client_id, body)


def _decode_response(key, version, data):
    from wire import protocol

    return protocol.decode_response(key, version, data)


def _recv_frame(s: socket.socket) -> bytes:
    size = struct.unpack(">i", _recv_exact(s, 4))[0]
    return _recv_exact(s, size)


def _recv_exact(s, n) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _closed(s: socket.socket, timeout: float = 5) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def raw_metadata(port: int):
    from wire.messages import metadata_request as MQ

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(_frame(3, 9, 1, MQ.MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                     include_topic_authorized_operations=False)))
        data = _recv_frame(s)
    return _decode_response(3, 9, data)[1]


# ---------------------------------------------------------------- SASL


def test_sasl_plain_confluent(secure_broker):
    roundtrip_confluent(plain_conf(secure_broker))


def test_sasl_ssl_scram_sha512_confluent(secure_broker, certs):
    roundtrip_confluent(scram_conf(secure_broker, certs))


def test_sasl_ssl_scram_sha256_confluent(secure_broker, certs):
    roundtrip_confluent(scram_conf(secure_broker, certs, mechanism="SCRAM-SHA-256"))


def test_ssl_client_certificate_confluent(secure_broker, certs):
    roundtrip_confluent(ssl_conf(secure_broker, certs))


def test_aiokafka_plain_scram_ssl(secure_broker, certs):
    aiokafka = pytest.importorskip("aiokafka")
    from aiokafka.helpers import create_ssl_context

    b = secure_broker

    async def run(**kw):
        topic = unique_topic("aio")
        prod = aiokafka.AIOKafkaProducer(**kw, request_timeout_ms=15000)
        await prod.start()
        try:
            for i in range(3):
                await prod.send_and_wait(topic, b"m%d" % i)
        finally:
            await prod.stop()
        cons = aiokafka.AIOKafkaConsumer(topic, **kw, group_id=unique_topic("g"), auto_offset_reset="earliest")
        await cons.start()
        try:
            got = []
            deadline = time.monotonic() + 20
            while len(got) < 3 and time.monotonic() < deadline:
                batch = await cons.getmany(timeout_ms=500)
                for msgs in batch.values():
                    got += [m.value for m in msgs]
            await cons.commit()
        finally:
            await cons.stop()
        assert got == [b"m0", b"m1", b"m2"]

    ctx = create_ssl_context(cafile=certs["ca"])
    client_ctx = create_ssl_context(cafile=certs["ca"], certfile=certs["alice_cert"], keyfile=certs["alice_key"])
    asyncio.run(run(bootstrap_servers=addr(b, "SASL_PLAINTEXT"), security_protocol="SASL_PLAINTEXT",
                    sasl_mechanism="PLAIN", sasl_plain_username="alice", sasl_plain_password="alice-secret"))
    asyncio.run(run(bootstrap_servers=addr(b, "SASL_SSL"), security_protocol="SASL_SSL", ssl_context=ctx,
                    sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="bob", sasl_plain_password="bob-secret"))
    asyncio.run(run(bootstrap_servers=addr(b, "SSL"), security_protocol="SSL", ssl_context=client_ctx))


def java_props(b, certs, kind: str) -> list[str]:
    """KClient ``--prop`` flags for one listener: PEM truststore/keystore (Kafka 2.7+), JAAS for SASL."""
    if kind == "SASL_PLAINTEXT":
        props = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                 "sasl.jaas.config": 'org.apache.kafka.common.security.plain.PlainLoginModule required '
                                     'username="alice" password="alice-secret";'}
    elif kind == "SASL_SSL":
        props = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                 "sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                                     'username="bob" password="bob-secret";',
                 "ssl.truststore.type": "PEM", "ssl.truststore.location": certs["ca"]}
    else:
        with open(certs["alice_cert"]) as f:
            chain = f.read()
        with open(certs["alice_key"]) as f:
            key = f.read()
        props = {"security.protocol": "SSL", "ssl.truststore.type": "PEM", "ssl.truststore.location": certs["ca"],
                 "ssl.keystore.type": "PEM", "ssl.keystore.certificate.chain": chain, "ssl.keystore.key": key}
    out = []
    for k, v in props.items():
        out += ["--prop", f"{k}={v}"]
    return out


@pytest.mark.parametrize("kind", ["SASL_SSL", "SASL_PLAINTEXT", "SSL"])
def test_java_client(secure_broker, certs, java, kind):
    """kafka-clients 3.9 over SASL_SSL with SCRAM-SHA-512, SASL_PLAINTEXT with PLAIN, SSL with a client
    certificate: admin create topic, produce, consume in a group (committing), admin list/describe group."""
    props = java_props(secure_broker, certs, kind)
    boot = addr(secure_broker, kind)
    topic, group = unique_topic("jsec"), unique_topic("jg")
    java(boot, *props, "create-topic", topic, 2)
    acks = java(boot, *props, "produce", topic, 6, "--acks", "all")
    assert len(acks) == 6 and all("offset" in a for a in acks)
    lines = java(boot, *props, "consume-group", topic, group, 6)
    assert sorted(r["value"] for r in lines if "value" in r) == sorted(f"value-{i}" for i in range(6))
    assert sum(c["offset"] or 0 for c in lines[-1]["committed"]) == 6
    assert group in {g["group"] for g in java(boot, *props, "list-groups")}
    [desc] = java(boot, *props, "describe-group", group)
    assert desc["group"] == group
    offsets = {(o["topic"], o["partition"]): o["offset"] for o in java(boot, *props, "group-offsets", group)}
    assert sum(o or 0 for o in offsets.values()) == 6


def test_scram_credentials_admin(secure_broker, certs):
    from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
                                       UserScramCredentialUpsertion)

    b = secure_broker
    admin = AdminClient({"bootstrap.servers": addr(b, "PLAINTEXT")})
    user = unique_topic("carol")
    up = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"carol-pw")
    admin.alter_user_scram_credentials([up])[user].result(timeout=10)
    desc = admin.describe_user_scram_credentials([user])[user].result(timeout=10)
    infos = desc.scram_credential_infos
    assert [(i.mechanism, i.iterations) for i in infos] == [(ScramMechanism.SCRAM_SHA_256, 8192)]
    roundtrip_confluent(scram_conf(b, certs, user=user, password="carol-pw", mechanism="SCRAM-SHA-256"), n=2)
    expect_auth_failure(scram_conf(b, certs, user=user, password="carol-pw", mechanism="SCRAM-SHA-512"))
    # too few iterations: UNACCEPTABLE_CREDENTIAL
    bad = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 100), b"x")
    with pytest.raises(ck.KafkaException) as ei:
        admin.alter_user_scram_credentials([bad])[user].result(timeout=10)
    assert ei.value.args[0].code() == ck.KafkaError.UNACCEPTABLE_CREDENTIAL
    admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256)])[user].result(timeout=10)
    with pytest.raises(ck.KafkaException) as ei:
        admin.describe_user_scram_credentials([user])[user].result(timeout=10)
    assert "RESOURCE_NOT_FOUND" in str(ei.value) or "does not exist" in str(ei.value)
    expect_auth_failure(scram_conf(b, certs, user=user, password="carol-pw", mechanism="SCRAM-SHA-256"))


# ---------------------------------------------------------------- refusals


def test_wrong_password_and_unknown_user(secure_broker, certs):
    b = secure_broker
    msg = expect_auth_failure(plain_conf(b, password="wrong"))
    assert "Invalid username or password" in msg
    expect_auth_failure(plain_conf(b, user="nobody", password="x"))
    expect_auth_failure(scram_conf(b, certs, password="wrong"))
    expect_auth_failure(scram_conf(b, certs, user="nobody"))
    # the others are unaffected
    roundtrip_confluent(plain_conf(b), n=1)
    assert b.log_contains("SASL PLAIN authentication failed")


def test_bad_client_certificates(secure_broker, certs):
    b = secure_broker
    expect_auth_failure({"bootstrap.servers": addr(b, "SSL"), "security.protocol": "SSL",
                         "ssl.ca.location": certs["ca"]}, tls=True)               # no certificate: required
    expect_auth_failure(ssl_conf(b, certs, cert="expired_cert", key="expired_key"), tls=True)
    expect_auth_failure(ssl_conf(b, certs, cert="mallory_cert", key="mallory_key"), tls=True)   # another CA
    assert b.log_contains("TLS handshake failed on listener SSL", count=3)   # all three refusals are logged
    log_text = b.log_tail(200_000)
    assert "certificate has expired" in log_text or "certificate expired" in log_text
    assert "unknown ca" in log_text.lower() or "certificate verify failed" in log_text
    roundtrip_confluent(ssl_conf(b, certs), n=1)
    assert b.log_contains("TLS handshake failed on listener SSL")


def test_plaintext_bytes_to_tls_port(secure_broker):
    b = secure_broker
    from wire.messages import api_versions_request as AV

    for name in ("SSL", "SASL_SSL"):
        with socket.create_connection(("127.0.0.1", b.ports[name]), timeout=10) as s:
            s.sendall(_frame(18, 0, 1, AV.ApiVersionsRequest()))
            assert _closed(s)
    assert raw_metadata(b.ports["PLAINTEXT"]).brokers


def test_requests_before_sasl_are_refused(secure_broker):
    b = secure_broker
    from wire.messages import api_versions_request as AV
    from wire.messages import metadata_request as MQ

    port = b.ports["SASL_PLAINTEXT"]
    # a raw SASL/PLAIN token with no handshake: not a Kafka request -> closed
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        token = b"\0alice\0alice-secret"
        s.sendall(struct.pack(">i", len(token)) + token)
        assert _closed(s)
    # Metadata before authenticating -> closed; ApiVersions is answered
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(_frame(18, 0, 1, AV.ApiVersionsRequest()))
        _, av = _decode_response(18, 0, _recv_frame(s))
        keys = {k.api_key for k in av.api_keys}
        assert {17, 36} <= keys
        s.sendall(_frame(3, 9, 2, MQ.MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                     include_topic_authorized_operations=False)))
        assert _closed(s)
    assert b.log_contains("Metadata request before SASL authentication")


def _handshake(s, version, mechanism, corr=1):
    from wire.messages import sasl_handshake_request as HQ

    s.sendall(_frame(17, version, corr, HQ.SaslHandshakeRequest(mechanism=mechanism)))
    return _decode_response(17, version, _recv_frame(s))[1]


def test_legacy_v0_handshake_framing(secure_broker):
    """SaslHandshake v0, then the raw PLAIN token with only a size prefix; then ordinary requests."""
    port = secure_broker.ports["SASL_PLAINTEXT"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        r = _handshake(s, 0, "PLAIN")
        assert r.error_code == 0 and r.mechanisms == ["PLAIN"]
        token = b"\0alice\0alice-secret"
        s.sendall(struct.pack(">i", len(token)) + token)
        assert _recv_frame(s) == b""      # PLAIN's (empty) server token, size-prefixed
        md = raw_metadata_on(s)
        assert md.brokers[0].port == port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert _handshake(s, 0, "PLAIN").error_code == 0
        token = b"\0alice\0nope"
        s.sendall(struct.pack(">i", len(token)) + token)
        assert _closed(s)


def raw_metadata_on(s):
    from wire.messages import metadata_request as MQ

    s.sendall(_frame(3, 9, 7, MQ.MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                 include_topic_authorized_operations=False)))
    return _decode_response(3, 9, _recv_frame(s))[1]


def test_sasl_authenticate_errors_on_the_wire(secure_broker):
    from wire.messages import sasl_authenticate_request as AQ
    from wire.messages.error_codes import ErrorCode

    port = secure_broker.ports["SASL_PLAINTEXT"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        r = _handshake(s, 1, "SCRAM-SHA-512")    # not enabled on this listener
        assert r.error_code == ErrorCode.UNSUPPORTED_SASL_MECHANISM and r.mechanisms == ["PLAIN"]
        assert _closed(s)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert _handshake(s, 1, "PLAIN").error_code == 0
        s.sendall(_frame(36, 2, 2, AQ.SaslAuthenticateRequest(auth_bytes=b"\0alice\0bad")))
        r = _decode_response(36, 2, _recv_frame(s))[1]
        assert r.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
        assert r.error_message == "Authentication failed: Invalid username or password"
        assert _closed(s)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert _handshake(s, 1, "PLAIN").error_code == 0
        s.sendall(_frame(36, 2, 2, AQ.SaslAuthenticateRequest(auth_bytes=b"\0alice\0alice-secret")))
        r = _decode_response(36, 2, _recv_frame(s))[1]
        assert r.error_code == 0 and r.session_lifetime_ms == 0
        assert raw_metadata_on(s).brokers[0].port == port


def test_reauthentication(tmp_path):
    """connections.max.reauth.ms: SaslAuthenticate v1+ gives the session lifetime; the Java-style client
    re-authenticates on the same connection; a connection that does not is closed at its next request."""
    from wire.messages import sasl_authenticate_request as AQ

    b = BrokerProcess(storage="memory")
    b.start(tmp_path / "d", ["-o", "listeners=SASL_PLAINTEXT://127.0.0.1:0",
                             "-o", f"listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}",
                             "-o", "connections.max.reauth.ms=1500"])
    try:
        port = b.port

        def auth(s, corr, user="alice", pw="alice-secret"):
            assert _handshake(s, 1, "PLAIN", corr).error_code == 0
            s.sendall(_frame(36, 2, corr + 1, AQ.SaslAuthenticateRequest(
                auth_bytes=b"\0" + user.encode() + b"\0" + pw.encode())))
            return _decode_response(36, 2, _recv_frame(s))[1]

        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            r = auth(s, 1)
            assert r.error_code == 0 and r.session_lifetime_ms == 1500
            raw_metadata_on(s)
            time.sleep(1.0)
            assert auth(s, 10).error_code == 0          # re-authenticated before expiry
            time.sleep(1.0)
            raw_metadata_on(s)                           # 2 s after the first, 1 s after the second
            r = auth(s, 20, user="admin", pw="admin-secret")   # a different principal: refused
            assert r.error_code != 0
            assert _closed(s)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert auth(s, 1).error_code == 0
            time.sleep(1.8)
            s.sendall(_frame(3, 9, 5, __import__("wire.messages.metadata_request", fromlist=["x"]).MetadataRequest(
                topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False)))
            assert _closed(s)
        # confluent-kafka (librdkafka re-authenticates) keeps working past several session lifetimes
        conf = {"bootstrap.servers": b.bootstrap, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.username": "alice", "sasl.password": "alice-secret"}
        topic = unique_topic("reauth")
        p = ck.Producer(conf)
        errors = []
        for i in range(8):
            p.produce(topic, b"x%d" % i, on_delivery=lambda e, m: errors.append(e) if e else None)
            p.flush(10)
            time.sleep(0.5)
        assert not errors
    finally:
        b.stop()


# ---------------------------------------------------------------- ACLs


ACL_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="admin-secret" '
            'user_alice="alice-secret" user_bob="bob-secret";')


def test_acl_matrix(tmp_path):
    """literal and prefixed patterns, deny overrides allow, super user, hidden topics, persistence."""
    from confluent_kafka.admin import AclBinding, AclBindingFilter, AclOperation, AclPermissionType, \
        ResourcePatternType, ResourceType

    b = BrokerProcess(storage="disk")
    args = ["-o", "listeners=SASL_PLAINTEXT://127.0.0.1:0",
            "-o", f"listener.name.sasl_plaintext.plain.sasl.jaas.config={ACL_JAAS}",
            "-o", "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "-o", "super.users=User:admin"]
    b.start(tmp_path / "d", args)

    def conf(user):
        return {"bootstrap.servers": b.bootstrap, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.username": user, "sasl.password": f"{user}-secret"}

    def produce(user, topic):
        p = ck.Producer(dict(conf(user), **{"message.timeout.ms": 5000}))
        res = []
        p.produce(topic, b"x", on_delivery=lambda e, m: res.append(e))
        p.flush(10)
        return res[0].code() if res and res[0] is not None else (None if res else "no report")

    def consume(user, topic, group):
        c = ck.Consumer(dict(conf(user), **{"group.id": group, "auto.offset.reset": "earliest"}))
        c.subscribe([topic])
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error() is not None:
                    if m.error().code() in (ck.KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                            ck.KafkaError.GROUP_AUTHORIZATION_FAILED):
                        return m.error().code()
                    continue
                return m.value()
            return "timeout"
        finally:
            c.close()

    try:
        admin = AdminClient(conf("admin"))
        for t in ("orders", "logs-a", "logs-secret", "other"):
            admin.create_topics([NewTopic(t, 1, 1)])[t].result(timeout=10)
            assert produce("admin", t) is None           # super user: everything
        lit, pre = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
        allow, deny = AclPermissionType.ALLOW, AclPermissionType.DENY
        acls = [
            AclBinding(ResourceType.TOPIC, "orders", lit, "User:alice", "*", AclOperation.WRITE, allow),
            AclBinding(ResourceType.TOPIC, "logs-", pre, "User:alice", "*", AclOperation.READ, allow),
            AclBinding(ResourceType.TOPIC, "logs-secret", lit, "User:alice", "*", AclOperation.READ, deny),
            AclBinding(ResourceType.GROUP, "g-", pre, "User:alice", "*", AclOperation.READ, allow),
        ]
        for f in admin.create_acls(acls).values():
            f.result(timeout=10)

        assert produce("alice", "orders") is None
        assert produce("alice", "other") == ck.KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert produce("alice", "logs-a") == ck.KafkaError.TOPIC_AUTHORIZATION_FAILED   # READ only
        assert produce("bob", "orders") == ck.KafkaError.TOPIC_AUTHORIZATION_FAILED     # no ACL for bob
        assert consume("alice", "logs-a", "g-1") == b"x"                                 # prefixed topic + group
        assert consume("alice", "logs-secret", "g-2") == ck.KafkaError.TOPIC_AUTHORIZATION_FAILED  # deny wins
        assert consume("alice", "logs-a", "h-1") == ck.KafkaError.GROUP_AUTHORIZATION_FAILED

        seen = set(AdminClient(conf("alice")).list_topics(timeout=10).topics)
        # DESCRIBE is implied by WRITE / READ (a DENY READ does not deny DESCRIBE); "other" is hidden
        assert seen == {"orders", "logs-a", "logs-secret"}
        assert not AdminClient(conf("bob")).list_topics(timeout=10).topics
        alice_admin = AdminClient(conf("alice"))    # kept referenced: a destroyed handle fails its futures
        with pytest.raises(ck.KafkaException) as ei:
            alice_admin.create_topics([NewTopic("alice-new", 1, 1)])["alice-new"].result(timeout=10)
        assert ei.value.args[0].code() == ck.KafkaError.TOPIC_AUTHORIZATION_FAILED
        # DescribeAcls without DESCRIBE on the cluster: CLUSTER_AUTHORIZATION_FAILED (librdkafka reports it as an
        # empty result, so the broker log is checked too): no binding leaks
        assert alice_admin.describe_acls(
            AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                             AclPermissionType.ANY)).result(timeout=10) == []
        assert b.log_contains(
            "User:alice is Denied operation = DESCRIBE from host = 127.0.0.1 on resource = Cluster:kafka-cluster")

        b.restart()
        admin = AdminClient(conf("admin"))
        everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                      AclPermissionType.ANY)
        assert sorted(map(str, admin.describe_acls(everything).result(timeout=10))) == sorted(map(str, acls))
        assert produce("alice", "other") == ck.KafkaError.TOPIC_AUTHORIZATION_FAILED    # still enforced
        deleted = admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, "logs-secret", lit, None, None,
                                                      AclOperation.ANY, AclPermissionType.ANY)])
        assert len(list(deleted.values())[0].result(timeout=10)) == 1
        assert consume("alice", "logs-secret", "g-3") == b"x"          # the prefixed allow applies now
    finally:
        b.stop()
