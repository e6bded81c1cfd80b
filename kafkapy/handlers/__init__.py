"""One handler per api key, registered with the versions it implements.

ApiVersions' answer is computed from this registry, so the broker never advertises what it does not
handle. A handler is ``async def handle(ctx: RequestContext, request) -> response | None``; ``None``
means "send nothing" (Produce with acks=0).
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

    @property
    def name(self) -> str:
        return protocol.API[self.api_key].name


HANDLERS: dict[int, Handler] = {}


def api(name: str, min_version: int, max_version: int):
    """Register ``fn`` as the handler of the api called ``name`` (Kafka's name, e.g. "Produce")."""
    spec = protocol.API_BY_NAME[name]
    if not spec.min_version <= min_version <= max_version <= spec.max_version:
        raise ValueError(f"{name}: versions {min_version}-{max_version} outside the schema's range")

    def register(fn):
        if spec.key in HANDLERS:
            raise ValueError(f"two handlers for {name}")
        HANDLERS[spec.key] = Handler(spec.key, min_version, max_version, fn)
        return fn
    return register


# every module in this package that defines handlers
MODULES = [
    "api_versions", "metadata", "produce", "fetch", "list_offsets", "topics", "configs", "cluster",
    "records_admin", "groups", "offsets", "producers", "sasl", "scram", "acls",
]


class HandlerImportError(RuntimeError):
    """A handler module failed to import: the broker must not start without its APIs."""


def load_all() -> dict[int, Handler]:
    for m in MODULES:
        try:
            importlib.import_module(f"kafkapy.handlers.{m}")
        except Exception as e:
            raise HandlerImportError(f"handler module kafkapy.handlers.{m} failed to import ({e.__class__.__name__}: "
                                     f"{e}); the broker would lack its APIs, so it does not start") from e
    return HANDLERS
