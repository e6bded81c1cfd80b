"""``kafkapy topics``: list, create, describe, delete topics and alter their configs."""

from __future__ import annotations

import argparse
import base64
import sys

from kafkapy.tools import UsageError, add_commands, add_common, client_from, parse_kv
from kafkapy.tools.client import Client, KafkaError, check
from wire import protocol as P
from wire.messages.error_codes import ErrorCode

TOPIC_RESOURCE = 2
SOURCE_TOPIC_CONFIG = 1      # DescribeConfigs config_source: a topic override
OP_SET, OP_DELETE = 0, 1     # IncrementalAlterConfigs config_operation


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kafkapy topics", description="Manage the topics of a running broker.")
    add_common(p)
    sub = add_commands(p)
    ls = sub.add_parser("list", help="topic names, one per line")
    ls.add_argument("--exclude-internal", action="store_true", help="leave out internal topics")
    c = sub.add_parser("create", help="create a topic")
    c.add_argument("name")
    c.add_argument("--partitions", type=int, default=None, help="default: the broker's num.partitions")
    c.add_argument("--replication-factor", type=int, default=None,
                   help="default: the broker's default.replication.factor")
    c.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="topic config (repeatable)")
    c.add_argument("--if-not-exists", action="store_true", help="succeed when the topic already exists")
    d = sub.add_parser("describe", help="partitions, leaders, replicas, ISR, offsets and config overrides")
    d.add_argument("names", nargs="*", metavar="NAME", help="default: every topic")
    d.add_argument("--exclude-internal", action="store_true", help="leave out internal topics")
    x = sub.add_parser("delete", help="delete topics")
    x.add_argument("names", nargs="+", metavar="NAME")
    a = sub.add_parser("alter-config", help="set or remove topic config overrides")
    a.add_argument("name")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set a config (repeatable)")
    a.add_argument("--delete", action="append", default=[], metavar="KEY",
                   help="remove an override, back to the default (repeatable)")
    return p


def topic_id_str(u) -> str:
    """Kafka's printed form of a topic id (Uuid.toString: url-safe base64 without padding)."""
    return base64.urlsafe_b64encode(u.bytes).decode().rstrip("=")


def run(args) -> int:
    with client_from(args) as client:
        return COMMANDS[args.command](client, args)


def cmd_list(client: Client, args) -> int:
    resp = client.metadata(None)
    names = sorted(t.name for t in resp.topics if t.error_code == 0 and not (args.exclude_internal and t.is_internal))
    for n in names:
        print(n)
    return 0


def cmd_create(client: Client, args) -> int:
    configs = parse_kv(args.config, "--config")
    if args.partitions is not None and args.partitions < 1:
        raise UsageError("--partitions must be at least 1")
    if args.replication_factor is not None and args.replication_factor < 1:
        raise UsageError("--replication-factor must be at least 1")
    C = P.module("create_topics_request")
    controller = client.metadata([]).controller_id
    node = controller if controller is not None and controller >= 0 else None

    def build(v):
        # -1 (the broker's default) needs v4+; older brokers get Kafka's defaults spelled out
        parts = args.partitions if args.partitions is not None else (-1 if v >= 4 else 1)
        rf = args.replication_factor if args.replication_factor is not None else (-1 if v >= 4 else 1)
        return C.CreateTopicsRequest(topics=[C.CreatableTopic(
            name=args.name, num_partitions=parts, replication_factor=rf, assignments=[],
            configs=[C.CreatableTopicConfig(name=k, value=v_) for k, v_ in configs])],
            timeout_ms=int(client.timeout * 1000), validate_only=False)

    resp, _ = client.call("CreateTopics", build, node)
    for t in resp.topics:
        if t.error_code == ErrorCode.TOPIC_ALREADY_EXISTS and args.if_not_exists:
            return 0
        check(t.error_code, t.error_message)
    print(f"Created topic {args.name}.")
    return 0


def describe_configs(client: Client, names: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Topic config overrides (source TOPIC_CONFIG) by topic name."""
    if not names:
        return {}
    D = P.module("describe_configs_request")
    resp, v = client.call("DescribeConfigs", lambda v: D.DescribeConfigsRequest(resources=[
        D.DescribeConfigsResource(resource_type=TOPIC_RESOURCE, resource_name=n, configuration_keys=None)
        for n in names], include_synonyms=False, include_documentation=False))
    out = {}
    for r in resp.results:
        check(r.error_code, r.error_message, f"DescribeConfigs {r.resource_name}")
        overrides = []
        for c in r.configs:
            override = (c.config_source == SOURCE_TOPIC_CONFIG) if v >= 1 else not c.is_default
            if override:
                overrides.append((c.name, "<sensitive>" if c.is_sensitive else (c.value or "")))
        out[r.resource_name] = sorted(overrides)
    return out


def cmd_describe(client: Client, args) -> int:
    if args.names:
        topics = [client.topic(n) for n in args.names]
    else:
        topics = [t for t in client.metadata(None).topics
                  if t.error_code == 0 and not (args.exclude_internal and t.is_internal)]
    topics.sort(key=lambda t: t.name)
    configs = describe_configs(client, [t.name for t in topics])
    parts = {t.name: [p.partition_index for p in t.partitions] for t in topics if t.partitions}
    earliest = client.list_offsets(parts, -2) if parts else {}
    latest = client.list_offsets(parts, -1) if parts else {}
    for t in topics:
        rf = len(t.partitions[0].replica_nodes) if t.partitions else 0
        cfg = ",".join(f"{k}={v}" for k, v in configs.get(t.name, []))
        print(f"Topic: {t.name}\tTopicId: {topic_id_str(t.topic_id)}\tPartitionCount: {len(t.partitions)}\t"
              f"ReplicationFactor: {rf}\tConfigs: {cfg}")
        for p in sorted(t.partitions, key=lambda p: p.partition_index):
            key = (t.name, p.partition_index)
            print(f"\tTopic: {t.name}\tPartition: {p.partition_index}\tLeader: "
                  f"{p.leader_id if p.leader_id >= 0 else 'none'}\t"
                  f"Replicas: {','.join(map(str, p.replica_nodes))}\tIsr: {','.join(map(str, p.isr_nodes))}\t"
                  f"Earliest: {earliest.get(key, -1)}\tLatest: {latest.get(key, -1)}")
    return 0


def cmd_delete(client: Client, args) -> int:
    D = P.module("delete_topics_request")
    controller = client.metadata([]).controller_id
    node = controller if controller is not None and controller >= 0 else None
    resp, _ = client.call("DeleteTopics", lambda v: D.DeleteTopicsRequest(
        topics=[D.DeleteTopicState(name=n) for n in args.names], topic_names=list(args.names),
        timeout_ms=int(client.timeout * 1000)), node)
    failures = []
    results = {r.name: r for r in resp.responses}
    for n in args.names:
        r = results.get(n)
        if r is None:
            continue
        if r.error_code:
            msg = r.error_message
            if r.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and not msg:
                msg = f"Topic '{n}' does not exist."
            failures.append((n, KafkaError(r.error_code, msg)))
        else:
            print(f"Deleted topic {n}.")
    if len(args.names) == 1 and failures:
        raise failures[0][1]
    for n, err in failures:
        print(f"kafkapy topics delete: {n}: {err}", file=sys.stderr)
    return 1 if failures else 0


def cmd_alter_config(client: Client, args) -> int:
    sets = parse_kv(args.set, "--set")
    if not sets and not args.delete:
        raise UsageError("nothing to do: give --set KEY=VALUE and/or --delete KEY")
    client.topic(args.name)
    A = P.module("incremental_alter_configs_request")
    resp, _ = client.call("IncrementalAlterConfigs", lambda v: A.IncrementalAlterConfigsRequest(resources=[
        A.AlterConfigsResource(resource_type=TOPIC_RESOURCE, resource_name=args.name, configs=[
            *[A.AlterableConfig(name=k, config_operation=OP_SET, value=val) for k, val in sets],
            *[A.AlterableConfig(name=k, config_operation=OP_DELETE, value=None) for k in args.delete]])],
        validate_only=False))
    for r in resp.responses:
        check(r.error_code, r.error_message)
    print(f"Completed updating config for topic {args.name}.")
    return 0


COMMANDS = {"list": cmd_list, "create": cmd_create, "describe": cmd_describe, "delete": cmd_delete,
            "alter-config": cmd_alter_config}
