"""One handler per api key, registered with the versions it implements.

ApiVersions' answer is computed from this registry, so the broker never advertises what it does not
handle. A handler is ``async def handle(ctx: RequestContext, request) -> response | None``; ``None``
means "send nothing" (Produce with acks=0).

A handler that may hold its request for a while (a long poll) says so with ``max_wait``: a function of the
request giving the longest it may wait in ms (Fetch: ``max_wait_ms``). The server watches the client of such a
request and gives up on it when the client goes away, without knowing the api.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Awaitable, Callable

from wire import protocol


@dataclass(frozen=True)
class Handler:
    api_key: int
    min_version: int
    max_version: int
    fn: Callable[..., Awaitable[object]]
    max_wait: Callable[[object], int] | None = None    # request -> ms the handler may wait (long polls)

    @property
    def name(self) -> str:
        return protocol.API[self.api_key].name


HANDLERS: dict[int, Handler] = {}


def api(name: str, min_version: int, max_version: int, max_wait: Callable[[object], int] | None = None):
    """Register ``fn`` as the handler of the api called ``name`` (Kafka's name, e.g. "Produce"); ``max_wait`` for
    a handler that long-polls (see the module's docstring)."""
    spec = protocol.API_BY_NAME[name]
    if not spec.min_version <= min_version <= max_version <= spec.max_version:
        raise ValueError(f"{name}: versions {min_version}-{max_version} outside the schema's range")

    def register(fn):
        if spec.key in HANDLERS:
            raise ValueError(f"two handlers for {name}")
        HANDLERS[spec.key] = Handler(spec.key, min_version, max_version, fn, max_wait)
        return fn
    return register


# every module in this package that defines handlers
MODULES = [
    "api_versions", "metadata", "produce", "fetch", "list_offsets", "topics", "configs", "cluster",
    "records_admin", "groups", "offsets", "producers", "sasl", "scram", "acls",
]


def load_all() -> dict[int, Handler]:
    for m in MODULES:
        try:
            importlib.import_module(f"kafkapy.handlers.{m}")
        except ModuleNotFoundError as e:
            if e.name != f"kafkapy.handlers.{m}":
                raise
    return HANDLERS
