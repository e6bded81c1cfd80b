"""Authorization with Kafka's ACL model (StandardAuthorizer semantics).

Enabled when ``authorizer.class.name`` is set (to anything, e.g. Kafka's
``org.apache.kafka.metadata.authorizer.StandardAuthorizer``); unset, everything is allowed, as in Kafka.

An ACL binding: resource (type, name, pattern type LITERAL | PREFIXED), principal (``User:alice``, ``User:*``),
host (``*`` or an address), operation, permission (ALLOW | DENY). A request is allowed when the principal is in
``super.users`` (``User:a;User:b``), or no DENY binding matches and an ALLOW binding does; DESCRIBE is implied by
READ, WRITE, DELETE and ALTER, DESCRIBE_CONFIGS by ALTER_CONFIGS. When no binding at all matches the resource,
``allow.everyone.if.no.acl.found`` decides (default false). Bindings persist in ``kafkapy-acls.json`` in the data
dir.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass

from storage.checkpoint import write_atomic

log = logging.getLogger("kafkapy.acl")

ACL_FILE = "kafkapy-acls.json"

# org.apache.kafka.common.resource.ResourceType
R_UNKNOWN, R_ANY, R_TOPIC, R_GROUP, R_CLUSTER, R_TRANSACTIONAL_ID, R_DELEGATION_TOKEN, R_USER = range(8)
# PatternType
P_UNKNOWN, P_ANY, P_MATCH, P_LITERAL, P_PREFIXED = range(5)
# AclOperation
(OP_UNKNOWN, OP_ANY, OP_ALL, READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
 ALTER_CONFIGS, IDEMPOTENT_WRITE, CREATE_TOKENS, DESCRIBE_TOKENS) = range(15)
# AclPermissionType
PERM_UNKNOWN, PERM_ANY, DENY, ALLOW = range(4)

OPERATIONS = {"READ": READ, "WRITE": WRITE, "CREATE": CREATE, "DELETE": DELETE, "ALTER": ALTER,
              "DESCRIBE": DESCRIBE, "CLUSTER_ACTION": CLUSTER_ACTION, "DESCRIBE_CONFIGS": DESCRIBE_CONFIGS,
              "ALTER_CONFIGS": ALTER_CONFIGS, "IDEMPOTENT_WRITE": IDEMPOTENT_WRITE, "ALL": OP_ALL}
CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"
_IMPLIES_DESCRIBE = (READ, WRITE, DELETE, ALTER, DESCRIBE)
_IMPLIES_DESCRIBE_CONFIGS = (ALTER_CONFIGS, DESCRIBE_CONFIGS)


@dataclass(frozen=True)
class AclBinding:
    resource_type: int
    resource_name: str
    pattern_type: int
    principal: str
    host: str
    operation: int
    permission_type: int


def validate_binding(b: AclBinding) -> str | None:
    """Why Kafka refuses to create this binding (INVALID_REQUEST), or None."""
    if b.resource_type in (R_UNKNOWN, R_ANY) or not R_TOPIC <= b.resource_type <= R_USER:
        return "Invalid resource type"
    if b.pattern_type not in (P_LITERAL, P_PREFIXED):
        return "Invalid pattern type: only LITERAL and PREFIXED bindings can be created"
    if b.operation in (OP_UNKNOWN, OP_ANY) or not OP_ALL <= b.operation <= DESCRIBE_TOKENS:
        return "Invalid operation"
    if b.permission_type not in (DENY, ALLOW):
        return "Invalid permission type"
    if not b.resource_name:
        return "Resource name must not be empty"
    if b.resource_type == R_CLUSTER and b.resource_name != CLUSTER_NAME:
        return "The only valid name for the CLUSTER resource is kafka-cluster"
    if ":" not in (b.principal or ""):
        return f"Could not parse principal from `{b.principal}` (no colon is present separating the principal " \
               "type from the principal name)"
    if not b.host:
        return "Host must not be empty"
    return None


def filter_matches(f, b: AclBinding) -> bool:
    """A Describe/DeleteAcls filter (resource_type_filter, resource_name_filter, pattern_type_filter, ...)."""
    if f.resource_type_filter != R_ANY and f.resource_type_filter != b.resource_type:
        return False
    pt = getattr(f, "pattern_type_filter", P_LITERAL)
    name = f.resource_name_filter
    if pt == P_MATCH:   # bindings that would apply to the named resource
        if name is not None and not (
                (b.pattern_type == P_LITERAL and b.resource_name in (name, WILDCARD))
                or (b.pattern_type == P_PREFIXED and name.startswith(b.resource_name))):
            return False
    else:
        if pt not in (P_ANY,) and pt != b.pattern_type:
            return False
        if name is not None and name != b.resource_name:
            return False
    if f.principal_filter is not None and f.principal_filter != b.principal:
        return False
    if f.host_filter is not None and f.host_filter != b.host:
        return False
    if f.operation != OP_ANY and f.operation != b.operation:
        return False
    if f.permission_type != PERM_ANY and f.permission_type != b.permission_type:
        return False
    return True


def filter_invalid(f) -> str | None:
    if f.resource_type_filter == R_UNKNOWN or f.operation == OP_UNKNOWN or f.permission_type == PERM_UNKNOWN:
        return "Filter contains UNKNOWN elements"
    if getattr(f, "pattern_type_filter", P_LITERAL) == P_UNKNOWN:
        return "Filter contains UNKNOWN elements"
    return None


class Authorizer:
    def __init__(self, config, data_dir: str | None):
        self.super_users = {s.strip() for s in (config.get("super.users") or "").split(";") if s.strip()}
        self.allow_if_no_acl = config.get_bool("allow.everyone.if.no.acl.found")
        self.path = os.path.join(data_dir, ACL_FILE) if data_dir else None
        self.bindings: list[AclBinding] = []
        if self.path and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            if data.get("format") != 1:
                raise RuntimeError(f"{self.path}: format {data.get('format')!r} is not one this kafkapy reads")
            self.bindings = [AclBinding(**d) for d in data["acls"]]

    def save(self) -> None:
        if self.path:
            write_atomic(self.path, json.dumps({"format": 1, "acls": [asdict(b) for b in self.bindings]}, indent=1))

    def add(self, b: AclBinding) -> None:
        if b not in self.bindings:
            self.bindings.append(b)

    def remove(self, bs: list[AclBinding]) -> None:
        gone = set(bs)
        self.bindings = [b for b in self.bindings if b not in gone]

    # ------------------------------------------------------------ decisions

    def authorize(self, principal: str, host: str, operation: int, resource_type: int, name: str) -> bool:
        if principal in self.super_users:
            return True
        matching = [b for b in self.bindings if b.resource_type == resource_type and (
            (b.pattern_type == P_LITERAL and b.resource_name in (name, WILDCARD))
            or (b.pattern_type == P_PREFIXED and name.startswith(b.resource_name)))]
        if not matching:
            return self.allow_if_no_acl
        mine = [b for b in matching if b.principal in (principal, "User:*") and b.host in (host, WILDCARD)]
        if any(b.permission_type == DENY and b.operation in (operation, OP_ALL) for b in mine):
            return False
        if operation == DESCRIBE:
            allowed_ops = _IMPLIES_DESCRIBE + (OP_ALL,)
        elif operation == DESCRIBE_CONFIGS:
            allowed_ops = _IMPLIES_DESCRIBE_CONFIGS + (OP_ALL,)
        else:
            allowed_ops = (operation, OP_ALL)
        return any(b.permission_type == ALLOW and b.operation in allowed_ops for b in mine)


def _who(ctx) -> tuple[str, str]:
    conn = ctx.connection
    return getattr(conn, "principal", "User:ANONYMOUS"), getattr(conn, "ip", "") or ""


def allowed(ctx, operation: int, resource_type: int, name: str) -> bool:
    """True when ``ctx``'s principal may do ``operation`` on the resource (always, without an authorizer)."""
    authz = getattr(ctx.broker, "authorizer", None)
    if authz is None:
        return True
    principal, host = _who(ctx)
    ok = authz.authorize(principal, host, operation, resource_type, name)
    if not ok:
        log.info("Principal = %s is Denied operation = %s from host = %s on resource = %s:%s", principal,
                 _OP_NAMES.get(operation, operation), host, _RT_NAMES.get(resource_type, resource_type), name)
    return ok


def allowed_quietly(ctx, operation: int, resource_type: int, name: str) -> bool:
    """As allowed(), without logging a denial (Metadata filtering, authorized-operations bitfields)."""
    authz = getattr(ctx.broker, "authorizer", None)
    if authz is None:
        return True
    principal, host = _who(ctx)
    return authz.authorize(principal, host, operation, resource_type, name)


def topic_allowed(ctx, operation: int, topic: str) -> bool:
    return allowed(ctx, operation, R_TOPIC, topic)


def group_allowed(ctx, operation: int, group: str) -> bool:
    return allowed(ctx, operation, R_GROUP, group)


def cluster_allowed(ctx, operation: int) -> bool:
    return allowed(ctx, operation, R_CLUSTER, CLUSTER_NAME)


_OP_NAMES = {v: k for k, v in OPERATIONS.items()}
_RT_NAMES = {R_TOPIC: "Topic", R_GROUP: "Group", R_CLUSTER: "Cluster", R_TRANSACTIONAL_ID: "TransactionalId",
             R_DELEGATION_TOKEN: "DelegationToken", R_USER: "User"}


def authorized_operations(ctx, resource_type: int, name: str, all_ops: int) -> int:
    """Kafka's authorizedOperations bitfield: which of ``all_ops`` (a bitfield) the principal may do."""
    if getattr(ctx.broker, "authorizer", None) is None:
        return all_ops
    return sum(1 << op for op in range(READ, DESCRIBE_TOKENS + 1)
               if all_ops & (1 << op) and allowed_quietly(ctx, op, resource_type, name))


def allowed_on_any(ctx, operation: int, resource_type: int) -> bool:
    """Authorizer.authorizeByResourceType: may the principal do ``operation`` on some resource of this type?

    Allowed when a check of a hard-coded name passes (super users, allow.everyone.if.no.acl.found), or an ALLOW
    binding of the principal (or User:*) for the operation (or ALL) is not covered by a DENY: a DENY on the
    LITERAL ``*`` covers everything, a DENY PREFIXED covers the names it prefixes. Used by InitProducerId (KIP-679).
    """
    authz = getattr(ctx.broker, "authorizer", None)
    if authz is None:
        return True
    principal, host = _who(ctx)
    if authz.authorize(principal, host, operation, resource_type, "hardcode"):
        return True
    mine = [b for b in authz.bindings if b.resource_type == resource_type and b.principal in (principal, "User:*")
            and b.host in (host, WILDCARD) and b.operation in (operation, OP_ALL)]
    deny_lit = {b.resource_name for b in mine if b.permission_type == DENY and b.pattern_type == P_LITERAL}
    deny_pre = [b.resource_name for b in mine if b.permission_type == DENY and b.pattern_type == P_PREFIXED]
    if WILDCARD in deny_lit:
        return False
    for b in mine:
        if b.permission_type != ALLOW:
            continue
        if b.pattern_type == P_LITERAL and b.resource_name == WILDCARD:
            return True
        if any(b.resource_name.startswith(d) for d in deny_pre):
            continue
        if b.pattern_type == P_PREFIXED or b.resource_name not in deny_lit:
            return True
    return False


def transactional_id_allowed(ctx, operation: int, transactional_id: str) -> bool:
    return allowed(ctx, operation, R_TRANSACTIONAL_ID, transactional_id)


# ConfigResource.Type -> (ACL resource type, the error Kafka answers when the check fails)
_CONFIG_RESOURCES = {2: (R_TOPIC, 29), 4: (R_CLUSTER, 31), 8: (R_CLUSTER, 31), 16: (R_CLUSTER, 31),
                     32: (R_GROUP, 30)}


def config_resource_error(ctx, operation: int, config_resource_type: int, name: str) -> int:
    """0, or TOPIC_/CLUSTER_/GROUP_AUTHORIZATION_FAILED for a Describe/AlterConfigs resource (KafkaApis)."""
    rt, code = _CONFIG_RESOURCES.get(config_resource_type, (None, 0))
    if rt is None:
        return 0
    return 0 if allowed(ctx, operation, rt, CLUSTER_NAME if rt == R_CLUSTER else name) else code

# Errors.message() of the authorization errors
ERROR_MESSAGES = {29: "Topic authorization failed.", 30: "Group authorization failed.",
                  31: "Cluster authorization failed.", 53: "Transactional Id authorization failed."}
