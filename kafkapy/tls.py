"""TLS for SSL and SASL_SSL listeners (Python's ssl module), and a throwaway CA for tests and local use.

Server side, per listener (each setting may carry Kafka's ``listener.name.<name>.`` prefix):

- the server certificate and key, PEM only: ``ssl.keystore.location`` (one PEM file holding the certificate chain
  and the private key, ``ssl.keystore.type=PEM``), or ``ssl.keystore.certificate.chain`` + ``ssl.keystore.key``
  (PEM text, as Kafka takes them), or kafkapy's ``ssl.certfile`` + ``ssl.keyfile`` (PEM files);
  ``ssl.key.password`` (or ``ssl.keystore.password``) if the key is encrypted;
- ``ssl.client.auth`` = ``required`` | ``requested`` | ``none`` (default);
- trusted CAs for client certificates: ``ssl.truststore.location`` (PEM file), ``ssl.truststore.certificates``
  (PEM text) or kafkapy's ``ssl.cafile``.

The principal of an SSL connection is ``User:`` + the certificate subject as RFC 2253 text (``User:CN=alice,O=x``),
as Kafka's default principal builder gives it; ``User:ANONYMOUS`` without a client certificate.

Helper (needs the ``openssl`` command, not needed at run time)::

    python -m kafkapy.tls DIR [--client NAME ...]   # DIR/ca.pem, server.pem (cert+key), client-NAME.pem, ...
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import tempfile

from kafkapy.config import ConfigError

# RFC 2253 short names (X500Principal.getName()); the rest by OID in Kafka, by name here
_SHORT = {"commonName": "CN", "localityName": "L", "stateOrProvinceName": "ST", "organizationName": "O",
          "organizationalUnitName": "OU", "countryName": "C", "streetAddress": "STREET", "domainComponent": "DC",
          "userId": "UID"}
_OIDS = {"emailAddress": "1.2.840.113549.1.9.1", "serialNumber": "2.5.4.5", "title": "2.5.4.12",
         "surname": "2.5.4.4", "givenName": "2.5.4.42"}


def _escape(v: str) -> str:
    out = []
    for i, ch in enumerate(v):
        if ch in ',+"\\<>;' or (ch == "#" and i == 0) or (ch == " " and (i == 0 or i == len(v) - 1)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def subject_dn(cert: dict) -> str:
    """RFC 2253 text of a getpeercert() subject: most specific RDN first (``CN=client,O=kafkapy``)."""
    rdns = []
    for rdn in reversed(cert.get("subject", ())):
        parts = []
        for name, value in rdn:
            key = _SHORT.get(name) or _OIDS.get(name, name)
            parts.append(f"{key}={_escape(value)}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


def principal_of(ssl_object) -> str:
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert:
        return "User:ANONYMOUS"
    return "User:" + subject_dn(cert)


def server_context(config, listener) -> ssl.SSLContext:
    """The SSLContext of an SSL/SASL_SSL listener from its settings; ConfigError when they are incomplete."""
    from kafkapy.listeners import listener_setting

    def get(key):
        v = listener_setting(config, listener, key)
        return v if v not in ("", None) else None

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    password = get("ssl.key.password") or get("ssl.keystore.password")
    kstype = (get("ssl.keystore.type") or "PEM").upper()
    where = f"listener {listener.name}"
    try:
        if get("ssl.certfile"):
            ctx.load_cert_chain(get("ssl.certfile"), get("ssl.keyfile"), password=password)
        elif get("ssl.keystore.certificate.chain"):
            if not get("ssl.keystore.key"):
                raise ConfigError(f"{where}: ssl.keystore.certificate.chain without ssl.keystore.key")
            _load_pem_text(ctx, get("ssl.keystore.certificate.chain"), get("ssl.keystore.key"), password)
        elif get("ssl.keystore.location"):
            if kstype != "PEM":
                raise ConfigError(f"{where}: ssl.keystore.type={kstype}: kafkapy reads PEM keystores only "
                                  "(convert with openssl pkcs12 -nodes, or keytool -importkeystore)")
            ctx.load_cert_chain(get("ssl.keystore.location"), password=password)
        else:
            raise ConfigError(f"{where} ({listener.protocol}) needs a certificate: ssl.keystore.location (PEM), "
                              "ssl.keystore.certificate.chain + ssl.keystore.key, or ssl.certfile + ssl.keyfile")
        cafile = get("ssl.cafile") or get("ssl.truststore.location")
        if cafile:
            ctx.load_verify_locations(cafile=cafile)
        if get("ssl.truststore.certificates"):
            ctx.load_verify_locations(cadata=get("ssl.truststore.certificates"))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"{where}: cannot load TLS certificate/key/CA: {e}") from None
    auth = (get("ssl.client.auth") or "none").lower()
    if auth not in ("required", "requested", "none"):
        raise ConfigError(f"{where}: ssl.client.auth must be required, requested or none, got {auth!r}")
    if auth != "none" and not (cafile or get("ssl.truststore.certificates")):
        raise ConfigError(f"{where}: ssl.client.auth={auth} needs trusted CAs (ssl.truststore.location)")
    ctx.verify_mode = {"required": ssl.CERT_REQUIRED, "requested": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}[auth]
    listener.client_auth = auth
    return ctx


def _load_pem_text(ctx: ssl.SSLContext, chain: str, key: str, password: str | None) -> None:
    # load_cert_chain takes files only: a private temporary file, removed at once
    fd, path = tempfile.mkstemp(prefix="kafkapy-key-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(chain.strip() + "\n" + key.strip() + "\n")
        ctx.load_cert_chain(path, password=password)
    finally:
        os.unlink(path)


# ---------------------------------------------------------------- throwaway CA (openssl command)

def _openssl(*args: str, cwd: str) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def make_ca(directory: str, name: str = "kafkapy-test-ca", days: int = 30) -> dict[str, str]:
    """A self-signed CA: ``{"cert": ca.pem, "key": ca-key.pem}`` in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem",
             "-days", str(days), "-subj", f"/O=kafkapy/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    return {"cert": os.path.join(directory, "ca.pem"), "key": os.path.join(directory, "ca-key.pem")}


def make_cert(directory: str, name: str, subject: str | None = None, hosts: tuple[str, ...] = (),
              days: int = 30, ca: str = "ca", server: bool = False, start: str | None = None) -> dict[str, str]:
    """A key and a certificate signed by ``directory/<ca>.pem``: ``{"cert", "key", "pem"}`` (pem: both in one file).

    ``subject``: openssl's ``/O=x/CN=y`` form (default ``/O=kafkapy/CN=<name>``); ``hosts``: DNS names / IPs for
    subjectAltName; ``days`` may be negative for an expired certificate (validity then ends ``-days`` ago)."""
    subject = subject or f"/O=kafkapy/CN={name}"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-key.pem", "-out", f"{name}.csr",
             "-subj", subject, cwd=directory)
    ext = ["basicConstraints=CA:FALSE", "extendedKeyUsage=" + ("serverAuth,clientAuth" if server else "clientAuth")]
    if hosts:
        alts = [("IP:" if _is_ip(h) else "DNS:") + h for h in hosts]
        ext.append("subjectAltName=" + ",".join(alts))
    with open(os.path.join(directory, f"{name}.ext"), "w") as f:
        f.write("\n".join(ext) + "\n")
    if days < 0:   # expired: valid from 2*|days| ago until |days| ago (openssl ca takes explicit dates)
        import datetime

        now = datetime.datetime.now(datetime.timezone.utc)
        fmt = "%Y%m%d%H%M%SZ"
        cnf = os.path.join(directory, f"{name}-ca.cnf")
        db = os.path.join(directory, f"{name}-index.txt")
        open(db, "w").close()
        with open(os.path.join(directory, f"{name}-serial"), "w") as f:
            f.write(secrets_hex() + "\n")
        with open(cnf, "w") as f:
            f.write(f"[ca]\ndefault_ca=d\n[d]\ndatabase={db}\nnew_certs_dir={directory}\n"
                    f"serial={directory}/{name}-serial\ndefault_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n"
                    "organizationName=optional\norganizationalUnitName=optional\n")
        args = ["ca", "-batch", "-notext", "-config", cnf, "-cert", f"{ca}.pem", "-keyfile", f"{ca}-key.pem",
                "-in", f"{name}.csr", "-out", f"{name}-cert.pem", "-extfile", f"{name}.ext",
                "-startdate", (now + datetime.timedelta(days=2 * days)).strftime(fmt),
                "-enddate", (now + datetime.timedelta(days=days)).strftime(fmt)]
    else:
        args = ["x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}-key.pem",
                "-CAcreateserial", "-out", f"{name}-cert.pem", "-extfile", f"{name}.ext", "-days", str(days)]
    _openssl(*args, cwd=directory)
    cert = os.path.join(directory, f"{name}-cert.pem")
    key = os.path.join(directory, f"{name}-key.pem")
    pem = os.path.join(directory, f"{name}.pem")
    with open(pem, "w") as out:
        out.write(open(cert).read() + open(key).read())
    return {"cert": cert, "key": key, "pem": pem}


def secrets_hex() -> str:
    import secrets

    return secrets.token_hex(8)


def _is_ip(h: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(h)
        return True
    except ValueError:
        return False


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m kafkapy.tls",
                                description="Create a throwaway CA, a server certificate and client certificates "
                                            "(PEM) for local use and tests. Needs the openssl command.")
    p.add_argument("directory")
    p.add_argument("--host", action="append", default=[], help="server DNS name/IP (default localhost, 127.0.0.1)")
    p.add_argument("--client", action="append", default=[], help="a client certificate with CN=NAME (repeatable)")
    p.add_argument("--days", type=int, default=30)
    a = p.parse_args(argv)
    make_ca(a.directory, days=a.days)
    make_cert(a.directory, "server", hosts=tuple(a.host or ("localhost", "127.0.0.1")), days=a.days, server=True)
    for c in a.client:
        make_cert(a.directory, f"client-{c}", subject=f"/O=kafkapy/CN={c}", days=a.days)
    print(f"CA {a.directory}/ca.pem; server {a.directory}/server.pem (certificate and key); "
          + ", ".join(f"{a.directory}/client-{c}.pem" for c in a.client))
    return 0


if __name__ == "__main__":
    sys.exit(main())
