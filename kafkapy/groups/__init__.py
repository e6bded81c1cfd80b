"""Consumer groups: the classic group protocol's coordinator and its ``__consumer_offsets`` persistence.

The broker builds the one GroupCoordinator (``broker.groups``); handlers reach it there."""

from __future__ import annotations

from kafkapy.groups.coordinator import GroupCoordinator
from kafkapy.internal_topics import OFFSETS_TOPIC

__all__ = ["GroupCoordinator", "OFFSETS_TOPIC"]
