"""SASL mechanisms on the server side: PLAIN and SCRAM-SHA-256/512, and the SCRAM credential store.

PLAIN users come from the JAAS config of the listener, as Kafka's PlainLoginModule reads them::

    listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \
        required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";

(also ``listener.name.<l>.sasl.jaas.config`` or ``sasl.jaas.config``): every ``user_NAME="PASSWORD"`` is a user.

SCRAM credentials are kept as Kafka keeps them (salt, iterations, StoredKey, ServerKey; never the password) in
``kafkapy-scram-credentials.json`` in the data dir, changed with AlterUserScramCredentials (``kafka-configs
--alter --add-config 'SCRAM-SHA-512=[password=...]' --entity-type users``, or any admin client) or created at
start from ``kafkapy.scram.users`` (``SCRAM-SHA-512=[name=alice,password=secret];...``, the syntax of
``kafka-storage format --add-scram``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets

from storage.checkpoint import write_atomic

log = logging.getLogger("kafkapy.sasl")

SCRAM_FILE = "kafkapy-scram-credentials.json"
SCRAM_MECHANISMS = {"SCRAM-SHA-256": (1, "sha256"), "SCRAM-SHA-512": (2, "sha512")}   # name: (wire code, hash)
SCRAM_BY_CODE = {code: name for name, (code, _) in SCRAM_MECHANISMS.items()}
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384
DEFAULT_ITERATIONS = 4096


class AuthenticationError(Exception):
    """Authentication failed: SASL_AUTHENTICATION_FAILED with this message, then the connection is closed."""


class SaslStateError(Exception):
    """A token that makes no sense in the exchange's state (Kafka: IllegalSaslStateException): close."""


# ---------------------------------------------------------------- JAAS (PlainLoginModule users)

_JAAS_OPT = re.compile(r'([A-Za-z0-9_.\-@]+)\s*=\s*"((?:[^"\\]|\\.)*)"')


def parse_jaas_options(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    return {k: re.sub(r"\\(.)", r"\1", v) for k, v in _JAAS_OPT.findall(text)}


def plain_users(text: str | None) -> dict[str, str]:
    return {k[5:]: v for k, v in parse_jaas_options(text).items() if k.startswith("user_")}


# ---------------------------------------------------------------- SCRAM credentials

def _h(alg: str, data: bytes) -> bytes:
    return hashlib.new(alg, data).digest()


def _hmac(alg: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, alg).digest()


def salted_password(alg: str, password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(alg, password.encode(), salt, iterations)


def credential_from_salted(mechanism: str, salt: bytes, salted: bytes, iterations: int) -> dict:
    alg = SCRAM_MECHANISMS[mechanism][1]
    stored_key = _h(alg, _hmac(alg, salted, b"Client Key"))
    server_key = _hmac(alg, salted, b"Server Key")
    return {"salt": base64.b64encode(salt).decode(), "stored_key": base64.b64encode(stored_key).decode(),
            "server_key": base64.b64encode(server_key).decode(), "iterations": iterations}


def credential_from_password(mechanism: str, password: str, iterations: int = DEFAULT_ITERATIONS) -> dict:
    alg = SCRAM_MECHANISMS[mechanism][1]
    salt = secrets.token_bytes(32)
    return credential_from_salted(mechanism, salt, salted_password(alg, password, salt, iterations), iterations)


def parse_scram_users(text: str | None) -> list[tuple[str, str, str, int]]:
    """'SCRAM-SHA-512=[name=alice,password=secret,iterations=8192];...' -> [(mechanism, name, password, iterations)]"""
    out = []
    for item in re.split(r"[;\n]", text or ""):
        item = item.strip()
        if not item:
            continue
        m = re.match(r"^(SCRAM-SHA-256|SCRAM-SHA-512)\s*=\s*\[(.*)\]$", item)
        if not m:
            raise ValueError(f"kafkapy.scram.users: {item!r} is not SCRAM-SHA-256|512=[name=...,password=...]")
        fields = {}
        for kv in m[2].split(","):
            k, _, v = kv.partition("=")
            fields[k.strip()] = v.strip().strip('"')
        if not fields.get("name") or "password" not in fields:
            raise ValueError(f"kafkapy.scram.users: {item!r} needs name= and password=")
        out.append((m[1], fields["name"], fields["password"], int(fields.get("iterations", DEFAULT_ITERATIONS))))
    return out


class ScramStore:
    """user -> mechanism -> credential (salt, stored_key, server_key, iterations), persisted atomically."""

    def __init__(self, data_dir: str | None):
        self.path = os.path.join(data_dir, SCRAM_FILE) if data_dir else None
        self.users: dict[str, dict[str, dict]] = {}
        if self.path and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            if data.get("format") != 1:
                raise RuntimeError(f"{self.path}: format {data.get('format')!r} is not one this kafkapy reads")
            self.users = data["users"]

    def get(self, user: str, mechanism: str) -> dict | None:
        return self.users.get(user, {}).get(mechanism)

    def put(self, user: str, mechanism: str, cred: dict) -> None:
        self.users.setdefault(user, {})[mechanism] = cred

    def delete(self, user: str, mechanism: str) -> bool:
        creds = self.users.get(user)
        if not creds or mechanism not in creds:
            return False
        del creds[mechanism]
        if not creds:
            del self.users[user]
        return True

    def save(self) -> None:
        if self.path:
            write_atomic(self.path, json.dumps({"format": 1, "users": self.users}, indent=1, sort_keys=True))


# ---------------------------------------------------------------- server-side exchanges

class PlainServer:
    mechanism = "PLAIN"

    def __init__(self, users: dict[str, str]):
        self.users = users
        self.complete = False
        self.principal: str | None = None

    def evaluate(self, token: bytes) -> bytes:
        parts = bytes(token).split(b"\0")
        if len(parts) != 3:
            raise AuthenticationError("Invalid SASL/PLAIN response: expected 3 tokens, got " + str(len(parts)))
        authz, user, password = (p.decode("utf-8", "replace") for p in parts)
        if not user:
            raise AuthenticationError("Authentication failed: username not specified")
        if not password:
            raise AuthenticationError("Authentication failed: password not specified")
        expected = self.users.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise AuthenticationError("Authentication failed: Invalid username or password")
        if authz and authz != user:
            raise AuthenticationError("Authentication failed: Client requested an authorization id that is "
                                      "different from username")
        self.principal = "User:" + user
        self.complete = True
        return b""


def _scram_name(s: str) -> str:
    return s.replace("=2C", ",").replace("=3D", "=")


class ScramServer:
    """RFC 5802 server (Kafka's ScramSaslServer): client-first, server-first, client-final, server-final."""

    def __init__(self, mechanism: str, store: ScramStore):
        self.mechanism = mechanism
        self.alg = SCRAM_MECHANISMS[mechanism][1]
        self.store = store
        self.state = 0
        self.complete = False
        self.principal: str | None = None

    def evaluate(self, token: bytes) -> bytes:
        try:
            msg = bytes(token).decode("utf-8")
        except UnicodeDecodeError:
            raise AuthenticationError("Invalid SCRAM message: not UTF-8") from None
        if self.state == 0:
            return self._client_first(msg)
        if self.state == 1:
            return self._client_final(msg)
        raise SaslStateError("Unexpected SASL token after the SCRAM exchange completed")

    def _client_first(self, msg: str) -> bytes:
        m = re.match(r"^([ny]|p=[^,]*),(a=[^,]*)?,(.*)$", msg)
        if not m:
            raise AuthenticationError("Invalid SCRAM client first message")
        if m[1].startswith("p="):
            raise AuthenticationError("Channel binding is not supported")
        bare = m[3]
        attrs = dict(a.split("=", 1) for a in bare.split(",") if "=" in a)
        if "n" not in attrs or "r" not in attrs:
            raise AuthenticationError("Invalid SCRAM client first message")
        user = _scram_name(attrs["n"])
        authz = _scram_name(m[2][2:]) if m[2] else ""
        if authz and authz != user:
            raise AuthenticationError("Authentication failed: Client requested an authorization id that is "
                                      "different from username")
        cred = self.store.get(user, self.mechanism)
        if cred is None:
            raise AuthenticationError("Authentication failed during authentication due to invalid credentials "
                                      f"with SASL mechanism {self.mechanism}")
        self.user, self.cred, self.client_first_bare = user, cred, bare
        self.nonce = attrs["r"] + base64.b64encode(secrets.token_bytes(18)).decode()
        self.server_first = f"r={self.nonce},s={cred['salt']},i={cred['iterations']}"
        self.state = 1
        return self.server_first.encode()

    def _client_final(self, msg: str) -> bytes:
        if ",p=" not in msg:
            raise AuthenticationError("Invalid SCRAM client final message")
        without_proof, _, proof_b64 = msg.rpartition(",p=")
        attrs = dict(a.split("=", 1) for a in without_proof.split(",") if "=" in a)
        if attrs.get("r") != self.nonce:
            raise AuthenticationError("Invalid client nonce in the final client message.")
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        stored_key = base64.b64decode(self.cred["stored_key"])
        signature = _hmac(self.alg, stored_key, auth_message)
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError:
            raise AuthenticationError("Invalid client proof") from None
        if len(proof) != len(signature):
            raise AuthenticationError("Authentication failed: Invalid user credentials")
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if not hmac.compare_digest(_h(self.alg, client_key), stored_key):
            raise AuthenticationError("Authentication failed: Invalid user credentials")
        server_sig = _hmac(self.alg, base64.b64decode(self.cred["server_key"]), auth_message)
        self.state = 2
        self.complete = True
        self.principal = "User:" + self.user
        return b"v=" + base64.b64encode(server_sig)


def new_exchange(broker, listener, mechanism: str):
    """The server side of ``mechanism`` on ``listener``."""
    from kafkapy.listeners import listener_setting

    if mechanism == "PLAIN":
        return PlainServer(plain_users(listener_setting(broker.config, listener, "sasl.jaas.config", "plain")))
    return ScramServer(mechanism, broker.scram)
