"""Consumer groups: the classic group protocol's coordinator and its ``__consumer_offsets`` persistence."""

from __future__ import annotations

from kafkapy.broker import on_start
from kafkapy.groups.coordinator import OFFSETS_TOPIC, GroupCoordinator

__all__ = ["GroupCoordinator", "OFFSETS_TOPIC", "coordinator_of"]


def coordinator_of(broker) -> GroupCoordinator:
    c = broker.coordinators.get("group")
    if c is None:   # a broker built without start() (tests of handlers): create it on first use
        c = _install(broker)
    return c


def _install(broker) -> GroupCoordinator:
    c = GroupCoordinator(broker)
    broker.coordinators["group"] = c
    broker.on_topic_deleted.append(c.on_topic_deleted)
    return c


@on_start
def _start_group_coordinator(broker) -> None:
    old = broker.coordinators.get("group")
    if old is not None:
        old.close()
        if old.on_topic_deleted in broker.on_topic_deleted:
            broker.on_topic_deleted.remove(old.on_topic_deleted)
    _install(broker).start()
