"""kafkapy/handlers/__init__.py's API_TABLE (API -> handler -> owner -> tests) cannot go stale: it is checked here
against the registry, the code and the test files."""

from __future__ import annotations

import ast
import importlib
import os
import typing

import pytest

from kafkapy import handlers
from wire import protocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rows() -> list[list[str]]:
    out = []
    for line in handlers.API_TABLE.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 4, line
        out.append(cells)
    return out


def resolve(dotted: str):
    """``package.module.Class.attr`` -> the attribute (instance attributes: set in the class's __init__)."""
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for j, name in enumerate(parts[i:]):
            if hasattr(obj, name):
                obj = getattr(obj, name)
            elif j == len(parts[i:]) - 1 and isinstance(obj, type) and name in _init_attributes(obj):
                return name
            else:
                raise AttributeError(f"{dotted}: no {name}")
        return obj
    raise ImportError(dotted)


def _init_attributes(cls) -> set[str]:
    import inspect
    tree = ast.parse(inspect.getsource(cls.__init__).lstrip())
    return {t.attr for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}


def test_every_registered_api_has_exactly_one_row():
    registered = {h.name for h in handlers.load_all().values()}
    listed = [r[0] for r in rows()]
    assert len(listed) == len(set(listed))
    assert set(listed) == registered


@pytest.mark.parametrize("api,handler,owner,tests", rows(), ids=[r[0] for r in rows()])
def test_row(api, handler, owner, tests):
    registry = {h.name: h for h in handlers.load_all().values()}
    h = registry[api]
    module, fn = handler.split(".")
    assert h.fn.__module__ == f"kafkapy.handlers.{module}" and h.fn.__name__ == fn
    spec = protocol.API_BY_NAME[api]
    assert fn == spec.request_module[: -len("_request")]          # named after its API
    hints = typing.get_type_hints(h.fn, globalns={
        spec.request_module: protocol.module(spec.request_module),
        spec.response_module: protocol.module(spec.response_module),
        **vars(importlib.import_module(h.fn.__module__))}, localns={"RequestContext": object})
    assert hints["req"] is protocol.module(spec.request_module).MESSAGE          # typed with its generated classes
    assert protocol.module(spec.response_module).MESSAGE in typing.get_args(hints["return"]) or \
        hints["return"] is protocol.module(spec.response_module).MESSAGE
    resolve(owner)
    for t in (x.strip() for x in tests.split(",")):
        path, _, name = t.partition("::")
        full = os.path.join(ROOT, path)
        assert os.path.exists(full), t
        if name:
            tree = ast.parse(open(full, encoding="utf-8").read())
            assert name in {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}, t


def test_a_handler_not_named_after_its_api_is_refused():
    with pytest.raises(ValueError, match="must be called end_txn"):
        @handlers.api("EndTxn", 0, 4)
        async def handle(ctx, req):   # noqa: ARG001
            return None
