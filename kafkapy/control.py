"""Request control hooks: let a test answer, fail, delay or cut any request (franz-go kfake's ``Control``).

A hook is a plain function ``fn(request) -> action`` run on the broker's event loop for each request it
matches, after the request was decoded and before its handler runs. ``request`` is a :class:`ControlRequest`
(api key and name, version, correlation id, client id, the decoded body, the peer). The action is one of:

- ``None``: pass. The handler runs as usual; the hook only observed and stays installed.
- a response object (the generated response class, ``request.response_class(...)``): sent instead of the
  handler's answer; the handler does not run.
- an error code (``int``, ``ErrorCode``, its name "NOT_LEADER_OR_FOLLOWER", or ``Error(code)``): the request is answered with that code, built
  from the request as Kafka's ``getErrorResponse`` builds it (``kafkapy.error_responses``); the handler does
  not run. A request that takes no answer (Produce with acks=0) gets its connection closed instead.
- ``CLOSE`` (``CloseConnection()``): close the connection without an answer; the handler does not run.
- ``Delay(seconds, then=None)``: wait, then do ``then`` (any action above, ``None`` running the handler).
  The connection holds its next requests meanwhile, as Kafka answers a connection's requests in order.
- ``DROP_RESPONSE`` (``DropResponse(close=True)``): the handler runs, so the request takes effect, and its
  answer is lost: the connection is closed (``close=False``: left open, the client waits for the answer
  until its own request timeout).

Rules, as kfake's ``Control`` / ``ControlKey`` / ``KeepControl`` / ``DropControl`` have them:

1. Hooks for one api key (``key=``) are asked before hooks for every request, each group in the order
   they were added. Every hook asked returns; the first one that returns an action (not ``None``) decides,
   and the ones after it are not asked for that request.
2. A hook that acts is removed once it acted, unless it was added with ``keep=True`` (or set
   ``control.keep = True``). A hook that passes stays. ``Control.remove()`` removes a hook at any time, also
   from inside the hook itself (kfake's ``DropControl``).
3. A hook that raises or returns something that is not an action is logged, kept in ``Control.errors``,
   and the request is answered with UNKNOWN_SERVER_ERROR as if its handler had raised.
4. Hooks run on the broker's event loop and must not block it: wait with ``Delay``. Adding and removing
   hooks happens on that loop too (``kafkapy.Broker`` schedules it there from any thread).
5. No hook installed costs one attribute check per request (``broker.controls is None``).

Which requests reach a hook: every request that has a handler, after the protocol's own checks (framing,
SASL gate, versions); ApiVersions at an unsupported version (answered by the protocol itself) and raw SASL
tokens do not.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from kafkapy.error_responses import error_code_of, error_response
from wire import protocol

log = logging.getLogger("kafkapy.control")


@dataclass(frozen=True)
class CloseConnection:
    """Close the connection without answering (the handler does not run)."""

    reason: str = "closed by a control hook"


@dataclass(frozen=True)
class DropResponse:
    """Run the handler (the request takes effect), then lose its answer: close the connection (``close``),
    or leave it open with the answer never sent."""

    close: bool = True


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds``, then do ``then`` (None: run the handler as usual)."""

    seconds: float
    then: object = None

    def __post_init__(self):
        if not self.seconds >= 0:
            raise ValueError(f"Delay needs seconds >= 0, got {self.seconds!r}")


@dataclass(frozen=True)
class Error:
    """Answer with error ``code`` (the same as returning the code itself)."""

    code: int | str


CLOSE = CloseConnection()
DROP_RESPONSE = DropResponse()


@dataclass
class ControlRequest:
    """What a hook sees of a request."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: object                  # the decoded request (generated request class)
    peer: str                     # the client's "host:port"
    connection: object = None     # kafkapy.server.Connection

    @property
    def api_name(self) -> str:
        return protocol.API[self.api_key].name

    @property
    def response_class(self):
        """The generated response class of this api (build a response to return with it)."""
        return protocol.API[self.api_key].response.MESSAGE

    def error_response(self, code: int):
        """The response that answers this request with error ``code`` (None for a Produce with acks=0)."""
        return error_response(self.api_key, self.api_version, self.body, code)


class Control:
    """One installed hook (what ``control`` / ``control_key`` return).

    ``seen``: requests it was asked about; ``fired``: times it acted; ``errors``: what it raised;
    ``wait(timeout)``: block (another thread than the broker's) until it acted once; ``remove()``."""

    def __init__(self, fn: Callable[[ControlRequest], object], key: int | str | None = None, keep: bool = False):
        if not callable(fn):
            raise TypeError(f"a control hook must be callable, got {fn!r}")
        self.fn = fn
        self.key = api_key_of(key)
        self.keep = keep
        self.seen = 0
        self.fired = 0
        self.errors: list[BaseException] = []
        self.active = False
        self._fired = threading.Event()
        self._remove: Callable[[Control], None] | None = None   # set when installed

    def remove(self) -> None:
        """Uninstall this hook (a no-op when it is not installed any more)."""
        if self._remove is not None:
            self._remove(self)

    def wait(self, timeout: float) -> bool:
        """Whether the hook acted at least once within ``timeout`` seconds (call it from the test's thread)."""
        return self._fired.wait(timeout)

    def __repr__(self):
        key = "any" if self.key is None else protocol.API[self.key].name
        return (f"<kafkapy.control.Control {getattr(self.fn, '__name__', self.fn)!s} key={key} keep={self.keep} "
                f"seen={self.seen} fired={self.fired} {'active' if self.active else 'removed'}>")


def api_key_of(key: int | str | None) -> int | None:
    """An api key given as a number or by its name ("Produce"); None for every request."""
    if key is None:
        return None
    if isinstance(key, str):
        api = protocol.API_BY_NAME.get(key)
        if api is None:
            raise ValueError(f"unknown api name {key!r} (e.g. 'Produce', 'Fetch', 'Metadata')")
        return api.key
    if isinstance(key, bool) or not isinstance(key, int) or key not in protocol.API:
        raise ValueError(f"unknown api key {key!r}")
    return int(key)


class HookFailed(Exception):
    """A hook raised or returned something that is not an action (the cause is chained)."""


class Controls:
    """The hooks installed on one core broker (``broker.controls`` while there is at least one).

    Used on the broker's event loop only."""

    def __init__(self, broker):
        self.broker = broker
        self.by_key: dict[int, list[Control]] = {}
        self.any: list[Control] = []

    # ---------------------------------------------------------------- installing

    def add(self, control: Control) -> Control:
        if control.active:
            raise ValueError(f"{control!r} is already installed")
        (self.any if control.key is None else self.by_key.setdefault(control.key, [])).append(control)
        control.active = True
        control._remove = self.remove
        self.broker.controls = self
        return control

    def remove(self, control: Control) -> None:
        group = self.any if control.key is None else self.by_key.get(control.key, [])
        if control in group:
            group.remove(control)
            if not group and control.key is not None:
                del self.by_key[control.key]
        control.active = False
        if not self.any and not self.by_key and self.broker.controls is self:
            self.broker.controls = None

    def clear(self) -> None:
        for c in list(self.any) + [c for group in self.by_key.values() for c in group]:
            self.remove(c)

    @property
    def installed(self) -> list[Control]:
        return [c for group in self.by_key.values() for c in group] + list(self.any)

    # ---------------------------------------------------------------- deciding

    def decide(self, request: ControlRequest):
        """Ask the hooks about ``request``: the deciding action (normalized, see ``check_action``), or None
        when every hook passed. Raises HookFailed when a hook raised or returned a wrong value."""
        hooks = self.by_key.get(request.api_key, ())
        for control in (*hooks, *self.any):
            if not control.active:          # removed by a hook asked before it
                continue
            control.seen += 1
            try:
                action = control.fn(request)
                if action is None:
                    continue
                action = check_action(action, request.api_key)
            except Exception as e:  # noqa: BLE001 - a test's hook: reported, and the request fails visibly
                control.errors.append(e)
                raise HookFailed(f"control hook {control!r} failed on {request.api_name} "
                                 f"v{request.api_version}: {e!r}") from e
            control.fired += 1
            if not control.keep:
                self.remove(control)
            control._fired.set()
            return action
        return None


def check_action(action, api_key: int):
    """``action`` as the server executes it: Delay (its ``then`` checked), CloseConnection, DropResponse,
    Error, or a response object of api ``api_key``'s response class. Raises TypeError for anything else."""
    if isinstance(action, Delay):
        then = None if action.then is None else check_action(action.then, api_key)
        return action if then is action.then else Delay(action.seconds, then)
    if isinstance(action, (CloseConnection, DropResponse)):
        return action
    if isinstance(action, Error):
        return Error(error_code_of(action.code))
    if isinstance(action, (int, str)) and not isinstance(action, bool):
        return Error(error_code_of(action))
    cls = protocol.API[api_key].response.MESSAGE
    if isinstance(action, cls):
        return action
    raise TypeError(f"a control hook returned {action!r}: expected None, a {protocol.API[api_key].name} response "
                    f"({cls.__module__}.{cls.__name__}), an error code, CLOSE, Delay(...) or DROP_RESPONSE")
