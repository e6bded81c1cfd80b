"""Command-line tools for a running broker: ``kafkapy topics|produce|consume|groups``.

They speak Kafka's protocol through the project's own codec (``wire``) with a small synchronous client
(``kafkapy.tools.client``), so they work against any Kafka-compatible broker. Exit codes: 0 success, 1 a
Kafka error (its name and message) or an unreachable broker, 2 a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from kafkapy.tools.client import DEFAULT_BOOTSTRAP, Client, ToolError

TOOLS = ("topics", "produce", "consume", "groups")


class UsageError(Exception):
    """A bad combination of arguments found after parsing: message and exit code 2."""


def add_common(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    """Connection options. ``suppress``: for a sub-command's parser, so the options can also come after the
    sub-command without overriding the ones given before it."""
    def d(value):
        return argparse.SUPPRESS if suppress else value

    p.add_argument("-b", "--bootstrap-server", default=d(os.environ.get("KAFKAPY_BOOTSTRAP") or DEFAULT_BOOTSTRAP),
                   metavar="HOST:PORT", help=f"broker(s) to bootstrap from, comma-separated "
                                             f"(KAFKAPY_BOOTSTRAP; default {DEFAULT_BOOTSTRAP})")
    p.add_argument("--request-timeout-ms", type=int, default=d(30000), metavar="MS",
                   help="timeout of each request (default 30000)")
    p.add_argument("--connect-timeout-ms", type=int, default=d(5000), metavar="MS",
                   help="timeout of connecting to a broker (default 5000)")
    p.add_argument("--client-id", default=d("kafkapy-tools"), help="client id sent with each request")


def add_commands(p: argparse.ArgumentParser, dest: str = "command"):
    """Sub-commands whose parsers also take the connection options."""
    sub = p.add_subparsers(dest=dest, required=True, metavar="COMMAND")
    orig = sub.add_parser

    def add_parser(name, **kw):
        sp = orig(name, **kw)
        add_common(sp, suppress=True)
        return sp

    sub.add_parser = add_parser
    return sub


def client_from(args) -> Client:
    return Client(args.bootstrap_server, client_id=args.client_id, timeout=args.request_timeout_ms / 1000,
                  connect_timeout=args.connect_timeout_ms / 1000)


def parse_kv(items, what: str) -> list[tuple[str, str]]:
    out = []
    for item in items or ():
        if "=" not in item:
            raise UsageError(f"{what} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out.append((k, v))
    return out


def run(tool: str, argv: list[str]) -> int:
    """Parse ``argv`` for ``tool`` and run it; returns the exit code."""
    mod = importlib.import_module(f"kafkapy.tools.{tool}")
    args = mod.build_parser().parse_args(argv)      # SystemExit(2) on a usage error, (0) on --help
    prefix = f"kafkapy {tool}"
    if getattr(args, "command", None):
        prefix += f" {args.command}"
    try:
        return mod.run(args) or 0
    except UsageError as e:
        print(f"{prefix}: {e}", file=sys.stderr)
        return 2
    except ToolError as e:
        print(f"{prefix}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader went away (``kafkapy consume ... | head``): stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
