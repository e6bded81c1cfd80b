"""The `kafkapy` command: readiness line, config sources, advertised address, clean stop, start-up errors."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from kafkapy.__main__ import build_parser, config_from_args
from kafkapy.config import BrokerConfig, ConfigError, env_properties, parse_properties, validate_topic_configs
from wire import protocol
from wire.messages import metadata_request as MQ

ROOT = Path(__file__).resolve().parent.parent


def start(*args, env=None, expect_ready=True):
    p = subprocess.Popen([sys.executable, "-m", "kafkapy", "--host", "127.0.0.1", *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **(env or {})})
    if not expect_ready:
        return p, None
    line = p.stdout.readline()
    assert line.startswith("kafkapy ready at "), (line, p.stderr.read() if p.poll() is not None else "")
    return p, line.split()[-1]


def metadata(bootstrap, topics=None, version=12):
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        body = MQ.MetadataRequest(topics=None if topics is None else [MQ.MetadataRequestTopic(name=t) for t in topics],
                                  allow_auto_topic_creation=True)
        s.sendall(protocol.encode_request(3, version, 1, "t", body))
        n = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        return protocol.decode_response(3, version, s.recv(n, socket.MSG_WAITALL))[1]


def stop(p) -> int:
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(15)
    finally:
        if p.poll() is None:
            p.kill()


def test_ready_line_port_zero_sigterm_and_clean_shutdown(tmp_path):
    p, bs = start("--port", "0", "--data-dir", str(tmp_path / "d"))
    try:
        md = metadata(bs)
        assert md.brokers[0].port == int(bs.rsplit(":", 1)[1])
        cluster = md.cluster_id
        assert len(cluster) == 22
    finally:
        assert stop(p) == 0
    assert (tmp_path / "d" / ".kafka_cleanshutdown").exists()
    assert "cluster.id=" + cluster in (tmp_path / "d" / "meta.properties").read_text()
    p, bs = start("--port", "0", "--data-dir", str(tmp_path / "d"))
    try:
        assert metadata(bs).cluster_id == cluster
    finally:
        stop(p)


def test_advertised_address_and_env_and_properties(tmp_path):
    props = tmp_path / "server.properties"
    props.write_text("# broker defaults\nnum.partitions=2\nauto.create.topics.enable = true\n")
    p, bs = start("--port", "0", "--storage", "memory", "--config", str(props),
                  "--advertised-host", "kafka.example", "--advertised-port", "19092",
                  env={"KAFKA_NUM_PARTITIONS": "3"})
    try:
        md = metadata(bs, ["auto-created"])
        assert (md.brokers[0].host, md.brokers[0].port) == ("kafka.example", 19092)
        assert md.topics[0].error_code == 0
        assert len(md.topics[0].partitions) == 3   # environment beats the properties file
    finally:
        assert stop(p) == 0


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p, _ = start("--port", str(port), "--storage", "memory", expect_ready=False)
        out, err = p.communicate(timeout=20)
    assert p.returncode == 2
    assert "already in use" in err and out == ""


def test_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    p, _ = start("--port", "0", "--data-dir", str(f), expect_ready=False)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 2 and "kafkapy" in err


def test_config_parsing_and_precedence(tmp_path):
    assert parse_properties("a=1\n# c\n! c\nb : two\nlong=x\\\n  y\n") == {"a": "1", "b": "two", "long": "xy"}
    assert env_properties({"KAFKA_LOG_RETENTION_MS": "5", "KAFKA_NUM_PARTITIONS": "4", "HOME": "/"}) == \
        {"log.retention.ms": "5", "num.partitions": "4"}
    props = tmp_path / "p"
    props.write_text("num.partitions=2\nlog.dirs=/tmp/x\n")
    args = build_parser().parse_args(["--config", str(props), "-o", "num.partitions=5"])
    cfg = config_from_args(args, environ={"KAFKA_NUM_PARTITIONS": "3"})
    assert cfg.get_int("num.partitions") == 5 and cfg.data_dir == "/tmp/x"
    with pytest.raises(ConfigError):
        BrokerConfig(properties={"num.partitions": "zero"})
    c = BrokerConfig(properties={"log.retention.hours": "1"})
    assert c.topic_default("retention.ms") == ("3600000", "STATIC_BROKER_CONFIG")
    assert BrokerConfig().topic_default("retention.ms") == ("604800000", "DEFAULT_CONFIG")
    assert validate_topic_configs({"cleanup.policy": "compact, delete"}) == {"cleanup.policy": "compact,delete"}
    for bad in ({"no.such.config": "1"}, {"retention.ms": "soon"}, {"message.timestamp.type": "Now"}):
        with pytest.raises(ConfigError):
            validate_topic_configs(bad)
