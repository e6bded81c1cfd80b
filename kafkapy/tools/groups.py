"""``kafkapy groups``: list and describe consumer groups (members, assignments, offsets, lag), reset a group's
offsets, delete groups."""

from __future__ import annotations

import argparse
import struct
import sys

from kafkapy.tools import UsageError, add_commands, add_common, client_from
from kafkapy.tools.client import Client, KafkaError, ToolError, check, commit_offsets, fetch_committed
from kafkapy.tools.consume import parse_timestamp
from wire import protocol as P
from wire.errors import DecodeError
from wire.messages.error_codes import ErrorCode

INACTIVE_STATES = ("Empty", "Dead")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kafkapy groups", description="Consumer groups of a running broker.")
    add_common(p)
    sub = add_commands(p)
    ls = sub.add_parser("list", help="group ids, one per line")
    ls.add_argument("--state", action="store_true", help="also print each group's state and protocol type")
    d = sub.add_parser("describe", help="members, assignments, committed offsets, log end offsets and lag")
    d.add_argument("groups", nargs="+", metavar="GROUP")
    r = sub.add_parser("reset-offsets", help="set a group's committed offsets (dry run unless --execute)")
    r.add_argument("group")
    r.add_argument("--topic", action="append", required=True, metavar="TOPIC[:P,P...]",
                   help="topic (and optionally partitions) to reset (repeatable)")
    to = r.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true")
    to.add_argument("--to-latest", action="store_true")
    to.add_argument("--to-offset", type=int, metavar="N", help="offset N (kept within earliest..latest)")
    to.add_argument("--to-datetime", metavar="MS|ISO", help="first offset at or after this time")
    to.add_argument("--shift-by", type=int, metavar="N", help="move the committed offset by N (may be negative)")
    r.add_argument("--execute", action="store_true", help="commit the new offsets (default: only show them)")
    x = sub.add_parser("delete", help="delete groups (they must have no members)")
    x.add_argument("groups", nargs="+", metavar="GROUP")
    return p


def run(args) -> int:
    with client_from(args) as client:
        return COMMANDS[args.command](client, args)


def table(rows: list[list], out=None) -> None:
    out = out or sys.stdout
    rows = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print(" ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


# ---------------------------------------------------------------- list

def cmd_list(client: Client, args) -> int:
    L = P.module("list_groups_request")
    nodes = list(client.metadata([]).brokers) or [None]
    groups = {}
    for b in nodes:
        resp, _ = client.call("ListGroups", lambda v: L.ListGroupsRequest(states_filter=[], types_filter=[]),
                              None if b is None else b.node_id)
        check(resp.error_code, None, "ListGroups")
        for g in resp.groups:
            groups[g.group_id] = g
    if args.state:
        rows = [["GROUP", "STATE", "PROTOCOL-TYPE"]]
        rows += [[g.group_id, getattr(g, "group_state", None) or None, g.protocol_type or None]
                 for _, g in sorted(groups.items())]
        if len(rows) > 1:
            table(rows)
    else:
        for gid in sorted(groups):
            print(gid)
    return 0


# ---------------------------------------------------------------- describe

def describe_group(client: Client, group: str, node: int):
    D = P.module("describe_groups_request")
    resp, _ = client.call("DescribeGroups", lambda v: D.DescribeGroupsRequest(groups=[group],
                                                                              include_authorized_operations=False),
                          node)
    g = resp.groups[0]
    check(g.error_code, getattr(g, "error_message", None), f"DescribeGroups {group}")
    return g


def decode_assignment(data) -> list[tuple[str, int]]:
    """(topic, partition) pairs of a consumer-protocol member assignment (ConsumerProtocolAssignment)."""
    if not data or len(data) < 2:
        return []
    (version,) = struct.unpack_from(">h", data, 0)
    mod = P.data_module("ConsumerProtocolAssignment")
    version = min(max(version, 0), max(mod.DECODERS))   # newer versions only add fields: read what we know
    try:
        msg, _ = P.decode(mod, version, bytes(data), 2)
    except DecodeError as e:
        raise ToolError(f"cannot decode a member assignment: {e}") from None
    return [(tp.topic, p) for tp in msg.assigned_partitions for p in tp.partitions]


def cmd_describe(client: Client, args) -> int:
    first = True
    for group in args.groups:
        if not first:
            print()
        first = False
        node = client.coordinator(group)
        g = describe_group(client, group, node)
        committed = fetch_committed(client, group, None, node)
        if g.group_state == "Dead" and not committed:
            raise KafkaError(ErrorCode.GROUP_ID_NOT_FOUND, f"Consumer group '{group}' does not exist.")
        owner: dict[tuple[str, int], object] = {}
        assignments = {}
        for m in g.members:
            tps = decode_assignment(m.member_assignment) if g.protocol_type == "consumer" else []
            assignments[m.member_id] = tps
            for tp in tps:
                owner[tp] = m
        partitions = sorted(set(committed) | set(owner))
        by_topic: dict[str, list[int]] = {}
        for t, p in partitions:
            by_topic.setdefault(t, []).append(p)
        existing = {}
        if by_topic:
            meta = client.metadata(list(by_topic))
            known = {(t.name, p.partition_index) for t in meta.topics if t.error_code == 0 for p in t.partitions}
            existing_topics: dict[str, list[int]] = {}
            for t, p in partitions:
                if (t, p) in known:
                    existing_topics.setdefault(t, []).append(p)
            if existing_topics:
                existing = client.list_offsets(existing_topics, -1)
        protocol = f"{g.protocol_type}/{g.protocol_data}" if g.protocol_data else (g.protocol_type or "-")
        print(f"Group: {group}\tState: {g.group_state}\tProtocol: {protocol}\tMembers: {len(g.members)}")
        if partitions:
            print()
            rows = [["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST",
                     "CLIENT-ID"]]
            for tp in partitions:
                cur = committed.get(tp)
                end = existing.get(tp)
                lag = max(0, end - cur) if cur is not None and end is not None and end >= 0 else None
                m = owner.get(tp)
                rows.append([group, tp[0], tp[1], cur, end, lag, m.member_id if m else None,
                             m.client_host if m else None, m.client_id if m else None])
            table(rows)
        if g.members:
            print()
            rows = [["MEMBER-ID", "INSTANCE-ID", "HOST", "CLIENT-ID", "ASSIGNMENT"]]
            for m in g.members:
                tps = assignments.get(m.member_id) or []
                by_t: dict[str, list[int]] = {}
                for t, p in tps:
                    by_t.setdefault(t, []).append(p)
                text = ";".join(f"{t}:{','.join(map(str, sorted(ps)))}" for t, ps in sorted(by_t.items()))
                rows.append([m.member_id, getattr(m, "group_instance_id", None), m.client_host, m.client_id,
                             text or None])
            table(rows)
        elif g.group_state != "Dead":
            print(f"\nConsumer group '{group}' has no active members.")
    return 0


# ---------------------------------------------------------------- reset-offsets

def parse_topic_spec(spec: str) -> tuple[str, list[int] | None]:
    topic, sep, parts = spec.partition(":")
    if not sep:
        return topic, None
    try:
        return topic, sorted({int(p) for p in parts.split(",") if p.strip()})
    except ValueError:
        raise UsageError(f"--topic expects TOPIC or TOPIC:P,P..., got {spec!r}") from None


def cmd_reset_offsets(client: Client, args) -> int:
    group = args.group
    node = client.coordinator(group)
    g = describe_group(client, group, node)
    if args.execute and g.group_state not in INACTIVE_STATES:
        raise ToolError(f"Assignments can only be reset if the group '{group}' is inactive, but the current "
                        f"state is {g.group_state}.")
    targets: dict[str, list[int]] = {}
    for spec in args.topic:
        topic, parts = parse_topic_spec(spec)
        meta = client.topic(topic)
        all_parts = sorted(p.partition_index for p in meta.partitions)
        for p in parts or all_parts:
            if p not in all_parts:
                raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                 f"Partition {p} of topic '{topic}' does not exist.")
        targets.setdefault(topic, [])
        targets[topic] = sorted(set(targets[topic]) | set(parts or all_parts))
    earliest = client.list_offsets(targets, -2)
    latest = client.list_offsets(targets, -1)
    new: dict[tuple[str, int], int] = {}
    if args.to_earliest:
        new = dict(earliest)
    elif args.to_latest:
        new = dict(latest)
    elif args.to_offset is not None:
        new = {tp: args.to_offset for tp in earliest}
    elif args.to_datetime is not None:
        found = client.list_offsets(targets, parse_timestamp(args.to_datetime))
        new = {tp: off if off >= 0 else latest[tp] for tp, off in found.items()}
    else:
        committed = fetch_committed(client, group, targets, node)
        new = {tp: committed.get(tp, latest[tp]) + args.shift_by for tp in earliest}
    new = {tp: min(max(off, earliest[tp]), latest[tp]) for tp, off in new.items()}    # like Kafka: clamp
    rows = [["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]]
    rows += [[group, t, p, off] for (t, p), off in sorted(new.items())]
    table(rows)
    if args.execute:
        commit_offsets(client, group, new, coordinator=node)
    else:
        print("(dry run: nothing committed; add --execute to commit these offsets)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- delete

def cmd_delete(client: Client, args) -> int:
    D = P.module("delete_groups_request")
    by_node: dict[int, list[str]] = {}
    for group in args.groups:
        by_node.setdefault(client.coordinator(group), []).append(group)
    failures = []
    deleted = []
    for node, groups in by_node.items():
        resp, _ = client.call("DeleteGroups", lambda v, groups=groups: D.DeleteGroupsRequest(groups_names=groups),
                              node)
        for r in resp.results:
            if r.error_code:
                msg = None
                if r.error_code == ErrorCode.GROUP_ID_NOT_FOUND:
                    msg = f"Group '{r.group_id}' does not exist."
                elif r.error_code == ErrorCode.NON_EMPTY_GROUP:
                    msg = f"Group '{r.group_id}' is not empty (it has active members)."
                failures.append((r.group_id, KafkaError(r.error_code, msg)))
            else:
                deleted.append(r.group_id)
    if deleted:
        names = ", ".join(f"'{g}'" for g in deleted)
        print(f"Deletion of requested consumer groups ({names}) was successful.")
    if len(args.groups) == 1 and failures:
        raise failures[0][1]
    for g, err in failures:
        print(f"kafkapy groups delete: {g}: {err}", file=sys.stderr)
    return 1 if failures else 0


COMMANDS = {"list": cmd_list, "describe": cmd_describe, "reset-offsets": cmd_reset_offsets, "delete": cmd_delete}
