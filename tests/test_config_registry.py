"""Defaults live in one place, kafkapy/config.py: storage's LogConfig (kept so storage can be used on its own) and
the coordinators must agree with it."""

from __future__ import annotations

import dataclasses

from kafkapy.config import BROKER_CONFIGS, TOPIC_CONFIGS, BrokerConfig
from storage.config import KAFKA_NAMES, LogConfig


def test_storage_log_config_defaults_are_the_registrys():
    assert LogConfig() == LogConfig.from_kafka({name: d.default for name, d in TOPIC_CONFIGS.items()})
    assert set(KAFKA_NAMES) <= set(TOPIC_CONFIGS)
    mapped = {f for f in KAFKA_NAMES.values() if f}
    assert mapped == {f.name for f in dataclasses.fields(LogConfig)}


def test_a_broker_without_settings_gives_topics_kafkas_defaults():
    cfg = BrokerConfig(storage="memory")
    assert cfg.effective_topic_configs({}) == {name: d.default for name, d in TOPIC_CONFIGS.items()}
    assert all(src == "DEFAULT_CONFIG" for _, src in map(cfg.topic_default, TOPIC_CONFIGS))


def test_broker_synonyms_share_the_topic_configs_definition():
    for d in TOPIC_CONFIGS.values():
        b = BROKER_CONFIGS.get(d.broker_synonym) if d.broker_synonym else None
        if b is not None and d.broker_synonym not in ("log.retention.ms", "log.roll.ms", "log.flush.interval.ms"):
            assert (b.default, b.config_type) == (d.default, d.config_type), d.name


def test_coordinator_settings_have_registry_defaults():
    for name in ("group.initial.rebalance.delay.ms", "group.min.session.timeout.ms", "group.max.session.timeout.ms",
                 "group.max.size", "offsets.topic.num.partitions", "offsets.retention.minutes",
                 "offsets.retention.check.interval.ms", "offset.metadata.max.bytes", "offsets.topic.segment.bytes",
                 "transaction.max.timeout.ms", "transactional.id.expiration.ms",
                 "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                 "transaction.remove.expired.transaction.cleanup.interval.ms", "producer.id.expiration.ms",
                 "producer.id.expiration.check.interval.ms", "transaction.state.log.segment.bytes",
                 "transaction.state.log.num.partitions"):
        assert BrokerConfig(storage="memory").get_int(name) == int(BROKER_CONFIGS[name].default), name
