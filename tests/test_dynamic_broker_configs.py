"""Dynamic broker configs (KIP-226) and BROKER_LOGGER resources through raw requests: a broker-level change is
the default of every topic without an override, at once and after a restart; only Kafka's dynamic configs may be
set; a client sees and changes only the broker's own loggers."""

from __future__ import annotations

import json
import logging
import os

import pytest

from kafkapy.config import DYNAMIC_BROKER_CONFIGS, DYNAMIC_CONFIGS_FILE, BrokerConfig
from wire.messages.error_codes import ErrorCode

from test_admin_handlers import (  # noqa: E402 - tests/ is on sys.path (rootdir-relative import by pytest)
    BROKER, DEFAULT_CONFIG, DELETE, DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG, DYNAMIC_TOPIC_CONFIG, SET,
    STATIC_BROKER_CONFIG, TOPIC, RunningBroker, alter, by_name, describe, incremental, topic_name)

BROKER_LOGGER = 8
DYNAMIC_BROKER_LOGGER_CONFIG = 6


@pytest.fixture
def rb():
    b = RunningBroker(storage="memory")
    yield b
    b.close()


def topic_config(rb, topic, name):
    return by_name(describe(rb, 4, [(TOPIC, topic, [name])], synonyms=True)[0])[name]


# ------------------------------------------------------------------------------------------ registry


def test_dynamic_set_is_kafkas():
    # DynamicLogConfig.ReconfigurableConfigs: the first synonym of each topic config, minus message.format.version
    assert {"log.retention.ms", "log.retention.bytes", "log.cleanup.policy", "message.max.bytes", "log.segment.bytes",
            "log.roll.ms", "compression.type", "min.insync.replicas", "log.cleaner.backoff.ms",
            "max.connections"} <= DYNAMIC_BROKER_CONFIGS
    assert not {"log.retention.hours", "log.retention.minutes", "log.roll.hours", "log.message.format.version",
                "num.partitions", "auto.create.topics.enable", "listeners", "offsets.topic.num.partitions"} \
        & DYNAMIC_BROKER_CONFIGS


def test_layers_and_synonyms():
    c = BrokerConfig(storage="memory", properties={"log.retention.hours": "1", "log.segment.bytes": "2000000"})
    assert c.topic_default("retention.ms") == ("3600000", "STATIC_BROKER_CONFIG")
    c.set_dynamic("", {"log.retention.ms": "5000", "log.segment.bytes": "3000000"})
    # a dynamic log.retention.ms hides the static log.retention.hours (DynamicBrokerConfig.overrideProps)
    assert c.topic_default("retention.ms") == ("5000", "DYNAMIC_DEFAULT_BROKER_CONFIG")
    assert c.get("log.retention.hours") == "168" and c.properties["log.retention.hours"] == "1"
    c.set_dynamic("1", {"log.segment.bytes": "4000000"})
    assert c.topic_default("segment.bytes") == ("4000000", "DYNAMIC_BROKER_CONFIG")
    assert c.get_int("log.segment.bytes") == 4000000
    c.set_dynamic("1", {})
    assert c.topic_default("segment.bytes") == ("3000000", "DYNAMIC_DEFAULT_BROKER_CONFIG")
    c.set_dynamic("", {})
    assert c.dynamic == {}
    assert c.topic_default("segment.bytes") == ("2000000", "STATIC_BROKER_CONFIG")
    assert c.topic_default("retention.ms") == ("3600000", "STATIC_BROKER_CONFIG")
    assert c.topic_default("cleanup.policy") == ("delete", "DEFAULT_CONFIG")


def test_persisted_atomically_and_invalid_values_dropped_on_load(tmp_path):
    c = BrokerConfig(data_dir=str(tmp_path), storage="disk")
    c.set_dynamic("", {"log.retention.ms": "5000"})
    c.set_dynamic("1", {"message.max.bytes": "2000"})
    path = tmp_path / DYNAMIC_CONFIGS_FILE
    assert json.loads(path.read_text()) == {"format": 1, "configs": {"": {"log.retention.ms": "5000"},
                                                                     "1": {"message.max.bytes": "2000"}}}
    assert not (tmp_path / (DYNAMIC_CONFIGS_FILE + ".tmp")).exists()
    path.write_text(json.dumps({"format": 1, "configs": {"": {"log.retention.ms": "soon", "log.retention.bytes": "9",
                                                              "num.partitions": "3"}}}))
    c2 = BrokerConfig(data_dir=str(tmp_path), storage="disk")
    c2.load_dynamic()
    assert c2.dynamic == {"": {"log.retention.bytes": "9"}}
    m = BrokerConfig(storage="memory")
    m.set_dynamic("", {"log.retention.ms": "1"})
    assert m.get("log.retention.ms") == "1"


# ------------------------------------------------------------------------------------------ through requests


@pytest.mark.parametrize("resource", ["", "1"])
def test_broker_level_retention_is_every_topics_default_until_deleted(rb, resource):
    source = DYNAMIC_DEFAULT_BROKER_CONFIG if resource == "" else DYNAMIC_BROKER_CONFIG
    plain, overridden = topic_name(), topic_name()
    rb.create_topic(plain)
    rb.create_topic(overridden, configs={"retention.ms": "123456"})
    before = topic_config(rb, plain, "retention.ms")
    assert (before.value, before.config_source) == ("604800000", DEFAULT_CONFIG)

    assert incremental(rb, 1, BROKER, resource, [("log.retention.ms", SET, "60000"),
                                                 ("log.cleanup.policy", SET, "compact")]).error_code == 0
    ret = topic_config(rb, plain, "retention.ms")
    assert (ret.value, ret.config_source) == ("60000", source)
    assert [(y.name, y.value, y.source) for y in ret.synonyms] == [
        ("log.retention.ms", "60000", source), ("log.retention.hours", "168", DEFAULT_CONFIG)]
    assert topic_config(rb, plain, "cleanup.policy").value == "compact"
    other = topic_config(rb, overridden, "retention.ms")
    assert (other.value, other.config_source) == ("123456", DYNAMIC_TOPIC_CONFIG)
    assert [y.source for y in other.synonyms] == [DYNAMIC_TOPIC_CONFIG, source, DEFAULT_CONFIG]
    # applied to the open partition logs at once
    plog = rb.broker.partition_log(plain, 0)
    assert plog.config.retention_ms == 60000 and plog.config.compact
    assert rb.broker.partition_log(overridden, 0).config.retention_ms == 123456
    # a topic created now inherits it too
    late = topic_name()
    rb.create_topic(late)
    assert rb.broker.partition_log(late, 0).config.retention_ms == 60000

    assert incremental(rb, 1, BROKER, resource, [("log.retention.ms", DELETE, None),
                                                 ("log.cleanup.policy", DELETE, None)]).error_code == 0
    after = topic_config(rb, plain, "retention.ms")
    assert (after.value, after.config_source) == ("604800000", DEFAULT_CONFIG)
    assert plog.config.retention_ms == 604800000 and not plog.config.compact
    assert rb.broker.config.dynamic == {}


def test_broker_message_max_bytes_limits_produce(rb):
    t = topic_name()
    rb.create_topic(t)
    assert rb.produce(t, 0, value=b"x" * 5000).error_code == 0
    [r] = alter(rb, 2, [(BROKER, "", {"message.max.bytes": "1000"})])
    assert r.error_code == 0
    assert rb.produce(t, 0, value=b"x" * 5000).error_code == ErrorCode.MESSAGE_TOO_LARGE
    assert topic_config(rb, t, "max.message.bytes").config_source == DYNAMIC_DEFAULT_BROKER_CONFIG
    [r] = alter(rb, 2, [(BROKER, "", {})])          # AlterConfigs replaces the whole set
    assert r.error_code == 0
    assert rb.produce(t, 0, value=b"x" * 5000).error_code == 0


def test_per_broker_beats_cluster_default(rb):
    t = topic_name()
    rb.create_topic(t)
    assert alter(rb, 1, [(BROKER, "", {"log.retention.bytes": "1000"}),
                         (BROKER, "1", {"log.retention.bytes": "2000"})])[0].error_code == 0
    r = topic_config(rb, t, "retention.bytes")
    assert (r.value, r.config_source) == ("2000", DYNAMIC_BROKER_CONFIG)
    assert [(y.value, y.source) for y in r.synonyms] == [("2000", DYNAMIC_BROKER_CONFIG),
                                                         ("1000", DYNAMIC_DEFAULT_BROKER_CONFIG),
                                                         ("-1", DEFAULT_CONFIG)]
    b = by_name(describe(rb, 4, [(BROKER, "1", ["log.retention.bytes"])], synonyms=True)[0])["log.retention.bytes"]
    assert (b.value, b.config_source) == ("2000", DYNAMIC_BROKER_CONFIG)
    [d] = describe(rb, 4, [(BROKER, "", None)], synonyms=True)
    assert [(c.name, c.value, c.config_source) for c in d.configs] == [
        ("log.retention.bytes", "1000", DYNAMIC_DEFAULT_BROKER_CONFIG)]


def test_validate_only_changes_nothing(rb):
    t = topic_name()
    rb.create_topic(t)
    assert incremental(rb, 1, BROKER, "", [("log.retention.ms", SET, "1")], validate_only=True).error_code == 0
    assert alter(rb, 1, [(BROKER, "1", {"log.retention.ms": "1"})], validate_only=True)[0].error_code == 0
    assert rb.broker.config.dynamic == {}
    assert rb.broker.partition_log(t, 0).config.retention_ms == 604800000


def test_read_only_broker_configs_are_refused(rb):
    for name, value in [("log.retention.hours", "1"), ("num.partitions", "3"), ("log.message.format.version", "3.0"),
                        ("offsets.topic.num.partitions", "3")]:
        r = incremental(rb, 1, BROKER, "", [(name, SET, value)])
        assert r.error_code == ErrorCode.INVALID_REQUEST, name
        assert r.error_message == f"Cannot update these configs dynamically: Set({name})"
    r = incremental(rb, 1, BROKER, "1", [("log.retention.ms", SET, "-5")])
    assert r.error_code == ErrorCode.INVALID_REQUEST and "log.retention.ms" in r.error_message
    r = incremental(rb, 1, BROKER, "2", [("log.retention.ms", SET, "5")])
    assert (r.error_code, r.error_message) == (ErrorCode.INVALID_REQUEST,
                                               "Unexpected broker id, expected 1, but received 2")
    assert rb.broker.config.dynamic == {}


def test_persisted_across_restart_on_disk(tmp_path):
    data = str(tmp_path / "data")
    b = RunningBroker(storage="disk", data_dir=data)
    try:
        t = topic_name()
        b.create_topic(t)
        assert incremental(b, 1, BROKER, "", [("log.retention.ms", SET, "70000")]).error_code == 0
        assert incremental(b, 1, BROKER, "1", [("log.segment.bytes", SET, "2000000")]).error_code == 0
    finally:
        b.close()
    assert os.path.exists(os.path.join(data, DYNAMIC_CONFIGS_FILE))
    b = RunningBroker(storage="disk", data_dir=data)
    try:
        r = topic_config(b, t, "retention.ms")
        assert (r.value, r.config_source) == ("70000", DYNAMIC_DEFAULT_BROKER_CONFIG)
        s = topic_config(b, t, "segment.bytes")
        assert (s.value, s.config_source) == ("2000000", DYNAMIC_BROKER_CONFIG)
        assert b.broker.partition_log(t, 0).config.retention_ms == 70000
        assert b.broker.partition_log(t, 0).config.segment_bytes == 2000000
        assert incremental(b, 1, BROKER, "", [("log.retention.ms", DELETE, None)]).error_code == 0
    finally:
        b.close()
    b = RunningBroker(storage="disk", data_dir=data)
    try:
        r = topic_config(b, t, "retention.ms")
        assert (r.value, r.config_source) == ("604800000", DEFAULT_CONFIG)
        assert topic_config(b, t, "segment.bytes").config_source == DYNAMIC_BROKER_CONFIG
    finally:
        b.close()


def test_static_config_still_shown_under_a_dynamic_one():
    b = RunningBroker(storage="memory", properties={"log.retention.ms": "5000"})
    try:
        t = topic_name()
        b.create_topic(t)
        assert incremental(b, 1, BROKER, "", [("log.retention.ms", SET, "9000")]).error_code == 0
        r = topic_config(b, t, "retention.ms")
        assert (r.value, r.config_source) == ("9000", DYNAMIC_DEFAULT_BROKER_CONFIG)
        assert [(y.value, y.source) for y in r.synonyms] == [("9000", DYNAMIC_DEFAULT_BROKER_CONFIG),
                                                             ("5000", STATIC_BROKER_CONFIG),
                                                             ("168", DEFAULT_CONFIG)]
    finally:
        b.close()


# ------------------------------------------------------------------------------------------ BROKER_LOGGER


def test_loggers_listed_are_the_brokers_own(rb):
    logging.getLogger("host.app.module")           # the program around an embedded broker
    [r] = describe(rb, 4, [(BROKER_LOGGER, "1", None)])
    names = [c.name for c in r.configs]
    assert {"kafkapy", "storage", "wire", "kafkapy.broker"} <= set(names)
    assert all(n.split(".")[0] in ("kafkapy", "storage", "wire") for n in names), names
    assert all(c.config_source == DYNAMIC_BROKER_LOGGER_CONFIG for c in r.configs)
    [r] = describe(rb, 4, [(BROKER_LOGGER, "1", ["root", "host.app.module", "kafkapy.broker"])])
    assert [c.name for c in r.configs] == ["kafkapy.broker"]


def test_host_loggers_cannot_be_changed(rb):
    host = logging.getLogger("host.app.module")
    root_level, host_level = logging.getLogger().level, host.level
    for name in ("root", "host.app.module", "host", "kafkapyx", "kafkapy.no.such.logger"):
        for op, value in ((SET, "DEBUG"), (DELETE, None)):
            r = incremental(rb, 1, BROKER_LOGGER, "1", [(name, op, value)])
            assert (r.error_code, r.error_message) == (ErrorCode.INVALID_CONFIG, f"Logger {name} does not exist!")
    assert logging.getLogger().level == root_level and host.level == host_level
    assert "kafkapy.no.such.logger" not in logging.root.manager.loggerDict


def test_own_logger_level_set_and_unset(rb):
    lg = logging.getLogger("kafkapy.broker")
    saved = lg.level
    try:
        r = incremental(rb, 1, BROKER_LOGGER, "1", [("kafkapy.broker", SET, "ERROR")], validate_only=True)
        assert r.error_code == 0 and lg.level == saved
        assert incremental(rb, 1, BROKER_LOGGER, "1", [("kafkapy.broker", SET, "ERROR")]).error_code == 0
        assert lg.level == logging.ERROR
        c = by_name(describe(rb, 4, [(BROKER_LOGGER, "1", ["kafkapy.broker"])])[0])["kafkapy.broker"]
        assert c.value == "ERROR"
        r = incremental(rb, 1, BROKER_LOGGER, "1", [("kafkapy.broker", SET, "debug")])
        assert r.error_code == ErrorCode.INVALID_CONFIG
        assert r.error_message == ("Cannot set the log level of kafkapy.broker to debug as it is not a supported log "
                                   "level. Valid log levels are DEBUG, ERROR, FATAL, INFO, TRACE, WARN")
        assert incremental(rb, 1, BROKER_LOGGER, "1", [("kafkapy.broker", DELETE, None)]).error_code == 0
        assert lg.level == logging.NOTSET
        r = incremental(rb, 1, BROKER_LOGGER, "1", [("kafkapy.broker", 2, "x")])    # APPEND
        assert (r.error_code, r.error_message) == (ErrorCode.INVALID_REQUEST,
                                                   "APPEND operation is not allowed for the BROKER_LOGGER resource")
        r = incremental(rb, 1, BROKER_LOGGER, "", [("kafkapy.broker", SET, "INFO")])
        assert (r.error_code, r.error_message) == (ErrorCode.INVALID_REQUEST, "Node id must be an integer, but it is: ")
        r = incremental(rb, 1, BROKER_LOGGER, "1", [("kafkapy.broker", SET, None)])
        assert (r.error_code, r.error_message) == (ErrorCode.INVALID_REQUEST, "Null value not supported for : "
                                                                              "kafkapy.broker")
    finally:
        lg.setLevel(saved)
