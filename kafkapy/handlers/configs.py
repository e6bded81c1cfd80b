"""Configs: DescribeConfigs (32), AlterConfigs (33), IncrementalAlterConfigs (44).

Follows Kafka 3.9's ``ConfigHelper`` (describe) and ``ConfigAdminManager`` / ``ConfigurationControlManager``
(alter): a topic's config entry lists its synonyms most specific first (the topic override, then the broker
settings that provide the default: dynamic per-broker, dynamic cluster default, static, Kafka's default), and
its source is that of the first synonym. Broker resources are named by the node id ("" is the dynamic
cluster-wide default); only dynamic broker configs may be altered (``kafkapy.config.DYNAMIC_BROKER_CONFIGS``).

Topic configs change through ``Broker.alter_topic_configs``: this broker alone, or in a cluster the topic key of the
metadata store (a compare-and-set; every broker applies the overrides from its watch, as brokers followed ZooKeeper's
config change notifications). Dynamic broker configs live in ``broker.config.dynamic`` (keyed "" and the node id,
persisted in the data dir by ``BrokerConfig.set_dynamic``); topics without an override inherit them at once
(``Broker.broker_configs_changed``). In a cluster they stay with the broker that was asked, the cluster-wide default
("") included: they are not in the metadata store yet (Kafka kept them in ZooKeeper's /config/brokers).

BROKER_LOGGER resources are the broker's own Python loggers only: "kafkapy", "storage", "wire" and their
children. Any other name (the root logger, the host program's loggers when the broker is embedded) is a logger
that does not exist, as Kafka answers for an unknown log4j logger.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kafkapy.broker import TopicError, validate_topic_name
from kafkapy.config import BROKER_CONFIGS, DYNAMIC_BROKER_CONFIGS, NO_BROKER_SYNONYM, TOPIC_CONFIGS, TYPE_LIST, \
    TYPE_PASSWORD, ConfigError, broker_config_synonyms, validate_topic_configs
from kafkapy import acl
from kafkapy.handlers import api
from wire.messages import alter_configs_response as AC
from wire.messages import describe_configs_response as DC
from wire.messages import incremental_alter_configs_response as IAC
from wire.messages.error_codes import ErrorCode

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import alter_configs_request
    from wire.messages import alter_configs_response
    from wire.messages import describe_configs_request
    from wire.messages import describe_configs_response
    from wire.messages import incremental_alter_configs_request
    from wire.messages import incremental_alter_configs_response

log = logging.getLogger("kafkapy.configs")

# ConfigResource.Type
TOPIC, BROKER, BROKER_LOGGER, CLIENT_METRICS, GROUP = 2, 4, 8, 16, 32
_TYPE_NAMES = {TOPIC: "TOPIC", BROKER: "BROKER", BROKER_LOGGER: "BROKER_LOGGER", CLIENT_METRICS: "CLIENT_METRICS",
               GROUP: "GROUP"}

# DescribeConfigsResponse.ConfigSource
UNKNOWN, DYNAMIC_TOPIC_CONFIG, DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG = 0, 1, 2, 3
STATIC_BROKER_CONFIG, DEFAULT_CONFIG, DYNAMIC_BROKER_LOGGER_CONFIG = 4, 5, 6

# AlterConfigOp.OpType
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
_OP_NAMES = {SET: "SET", DELETE: "DELETE", APPEND: "APPEND", SUBTRACT: "SUBTRACT"}

class ResourceError(Exception):
    def __init__(self, code: ErrorCode, message: str | None):
        super().__init__(message)
        self.code = code
        self.message = message


def _dynamic(broker, resource_name: str) -> dict[str, str]:
    """The dynamic configs of BROKER resource ``resource_name`` ("" or the node id)."""
    return broker.config.dynamic.get(resource_name and str(broker.node_id), {})


def _static_default(name: str) -> str | None:
    d = BROKER_CONFIGS.get(name)
    return None if d is None else d.default


def _listener_config_type(name: str) -> int:
    """listener.name.<l>[.<mechanism>].<setting> has the type of <setting> (a JAAS config is a password)."""
    if not name.startswith("listener.name."):
        return 0
    parts = name.split(".")[3:]
    for i in range(len(parts)):
        d = BROKER_CONFIGS.get(".".join(parts[i:]))
        if d is not None:
            return d.config_type
    return TYPE_PASSWORD if "jaas" in name or "password" in name else 0


def _is_sensitive(config_type: int) -> bool:
    return config_type == TYPE_PASSWORD


def config_synonyms(broker, name: str, names: list[str], sensitive: bool, *, include_dynamic: bool = True
                    ) -> list[DC.DescribeConfigsSynonym]:
    """ConfigHelper.configSynonyms: every source of every synonym, most specific source first; then drop what
    comes before the first entry for ``name`` itself (as Kafka does)."""
    sources = []
    if include_dynamic:
        sources += [(_dynamic(broker, str(broker.node_id)), DYNAMIC_BROKER_CONFIG),
                    (_dynamic(broker, ""), DYNAMIC_DEFAULT_BROKER_CONFIG)]
    sources.append((broker.config.properties, STATIC_BROKER_CONFIG))
    out = []
    for values, source in sources:
        for n in names:
            if n in values:
                out.append(DC.DescribeConfigsSynonym(name=n, value=None if sensitive else values[n], source=source))
    for n in names:
        default = _static_default(n)
        if default is not None:
            out.append(DC.DescribeConfigsSynonym(name=n, value=None if sensitive else default, source=DEFAULT_CONFIG))
    for i, s in enumerate(out):
        if s.name == name:
            return out[i:]
    return []


def _entry(name, value, source, sensitive, read_only, synonyms, include_synonyms, config_type, doc, v):
    e = DC.DescribeConfigsResourceResult(name=name, value=None if sensitive else value, read_only=read_only,
                                         is_default=source == DEFAULT_CONFIG, config_source=source,
                                         is_sensitive=sensitive, synonyms=synonyms if include_synonyms else [],
                                         config_type=config_type, documentation=doc)
    return e


def _wanted(keys, name: str) -> bool:
    return not keys or name in keys


def describe_topic(broker, res, include_synonyms: bool, include_doc: bool, v: int) -> list:
    try:
        validate_topic_name(res.resource_name)
    except TopicError as e:
        raise ResourceError(e.code, e.message) from None
    topic = broker.topics.get(res.resource_name)
    if topic is None:
        raise ResourceError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None)
    effective = broker.effective_topic_configs(topic)
    out = []
    for name in sorted(TOPIC_CONFIGS):
        if not _wanted(res.configuration_keys, name):
            continue
        d = TOPIC_CONFIGS[name]
        sensitive = _is_sensitive(d.config_type)
        value = effective.get(name)
        synonyms = []
        if d.broker_synonym and name not in NO_BROKER_SYNONYM:
            synonyms = config_synonyms(broker, d.broker_synonym, broker_config_synonyms(d.broker_synonym), sensitive)
        if name in topic.configs:
            synonyms.insert(0, DC.DescribeConfigsSynonym(name=name, value=None if sensitive else topic.configs[name],
                                                         source=DYNAMIC_TOPIC_CONFIG))
        source = synonyms[0].source if synonyms else DEFAULT_CONFIG
        out.append(_entry(name, value, source, sensitive, False, synonyms, include_synonyms, d.config_type,
                          (d.doc or None) if include_doc else None, v))
    return out


def describe_broker(broker, res, include_synonyms: bool, include_doc: bool, v: int) -> list:
    name = res.resource_name
    if not name:
        per_broker = False
        names = sorted(_dynamic(broker, ""))
    else:
        _broker_id(name, f"Unexpected broker id, expected {broker.node_id} or empty string, but received {name}",
                   broker.node_id)
        per_broker = True
        names = sorted(set(BROKER_CONFIGS) | set(broker.config.properties) | set(_dynamic(broker, ""))
                       | set(_dynamic(broker, name)))
    out = []
    for n in names:
        if not _wanted(res.configuration_keys, n):
            continue
        d = BROKER_CONFIGS.get(n)
        config_type = d.config_type if d is not None else _listener_config_type(n)
        sensitive = _is_sensitive(config_type)
        synonyms = config_synonyms(broker, n, broker_config_synonyms(n), sensitive)
        if not per_broker:
            synonyms = [s for s in synonyms if s.source == DYNAMIC_DEFAULT_BROKER_CONFIG]
            value = _dynamic(broker, "").get(n)
        else:
            value = broker.config.get(n)
        source = synonyms[0].source if synonyms else DEFAULT_CONFIG
        out.append(_entry(n, value, source, sensitive, n not in DYNAMIC_BROKER_CONFIGS, synonyms, include_synonyms,
                          config_type, ((d.doc if d else "") or None) if include_doc else None, v))
    return out


_LEVELS = {logging.CRITICAL: "FATAL", logging.ERROR: "ERROR", logging.WARNING: "WARN", logging.INFO: "INFO",
           logging.DEBUG: "DEBUG", logging.NOTSET: "TRACE"}

# The loggers a client may see and change: the broker's own. Everything else belongs to the program around an
# embedded broker (or to Python's root logger), and does not exist as far as clients can tell.
BROKER_LOGGER_NAMESPACES = ("kafkapy", "storage", "wire")


def _own_logger(name: str | None) -> bool:
    return bool(name) and any(name == ns or name.startswith(ns + ".") for ns in BROKER_LOGGER_NAMESPACES)


def broker_loggers() -> dict[str, logging.Logger]:
    """The broker's loggers that exist (Log4jController.loggers): its namespaces and every logger created under
    them."""
    out = {ns: logging.getLogger(ns) for ns in BROKER_LOGGER_NAMESPACES}
    for lname, lg in list(logging.root.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger) and _own_logger(lname):
            out[lname] = lg
    return dict(sorted(out.items()))


def describe_broker_logger(broker, res) -> list:
    name = res.resource_name
    if not name:
        raise ResourceError(ErrorCode.INVALID_REQUEST, "Broker id must not be empty")
    _broker_id(name, f"Unexpected broker id, expected {broker.node_id} but received {name}", broker.node_id)
    return [DC.DescribeConfigsResourceResult(name=n, value=_LEVELS.get(lg.getEffectiveLevel(),
                                                                        logging.getLevelName(lg.getEffectiveLevel())),
                                             read_only=False, is_default=False,
                                             config_source=DYNAMIC_BROKER_LOGGER_CONFIG, is_sensitive=False,
                                             synonyms=[], config_type=0, documentation=None)
            for n, lg in broker_loggers().items() if _wanted(res.configuration_keys, n)]


def _broker_id(name: str, mismatch: str, node_id: int, what: str = "Broker id") -> None:
    try:
        n = int(name)
    except ValueError:
        raise ResourceError(ErrorCode.INVALID_REQUEST, f"{what} must be an integer, but it is: {name}") from None
    if n != node_id:
        raise ResourceError(ErrorCode.INVALID_REQUEST, mismatch)


@api("DescribeConfigs", 0, 4)
async def describe_configs(ctx: RequestContext, req: describe_configs_request.DescribeConfigsRequest) -> describe_configs_response.DescribeConfigsResponse:
    """Version notes: v1+ include_synonyms; v3+ include_documentation (and config types); v4 is flexible.

    Behaviour: DESCRIBE_CONFIGS on the topic or the cluster (TOPIC_/CLUSTER_AUTHORIZATION_FAILED with Errors.message()),
    as KafkaApis. TOPIC: INVALID_TOPIC_EXCEPTION / UNKNOWN_TOPIC_OR_PARTITION, else every topic config from
    Broker.effective_topic_configs with its synonyms; BROKER: "" or this node id (INVALID_REQUEST otherwise);
    BROKER_LOGGER: this node's loggers; any other type INVALID_REQUEST.
    """
    broker = ctx.broker
    v = ctx.api_version
    include_synonyms = bool(req.include_synonyms) and v >= 1
    include_doc = bool(req.include_documentation) and v >= 3
    results = []
    for res in req.resources:
        r = DC.DescribeConfigsResult(error_code=0, error_message=None, resource_type=res.resource_type,
                                     resource_name=res.resource_name, configs=[])
        denied = acl.config_resource_error(ctx, acl.DESCRIBE_CONFIGS, res.resource_type, res.resource_name)
        if denied:
            r.error_code, r.error_message = denied, acl.ERROR_MESSAGES[denied]   # Errors.message()
            results.append(r)
            continue
        try:
            if res.resource_type == TOPIC:
                r.configs = describe_topic(broker, res, include_synonyms, include_doc, v)
            elif res.resource_type == BROKER:
                r.configs = describe_broker(broker, res, include_synonyms, include_doc, v)
            elif res.resource_type == BROKER_LOGGER:
                r.configs = describe_broker_logger(broker, res)
            else:
                raise ResourceError(ErrorCode.INVALID_REQUEST,
                                    f"Unsupported resource type: {_TYPE_NAMES.get(res.resource_type, 'UNKNOWN')}")
        except ResourceError as e:
            r.error_code = int(e.code)
            r.error_message = e.message
            r.configs = []
        results.append(r)
    return DC.DescribeConfigsResponse(throttle_time_ms=0, results=results)


# ------------------------------------------------------------------------------------------------ alter


def _check_broker_resource(broker, name: str) -> None:
    if name:
        _broker_id(name, f"Unexpected broker id, expected {broker.node_id}, but received {name}", broker.node_id,
                   what="Node id")


def _validate_broker_configs(new: dict[str, str]) -> dict[str, str]:
    """DynamicBrokerConfig.validateConfigs: only dynamic configs; known ones must parse. Raises ResourceError
    INVALID_REQUEST (Kafka wraps the ConfigException, KAFKA-13609)."""
    static = sorted(n for n in new if n in BROKER_CONFIGS and n not in DYNAMIC_BROKER_CONFIGS)
    if static:
        raise ResourceError(ErrorCode.INVALID_REQUEST,
                            f"Cannot update these configs dynamically: Set({', '.join(static)})")
    out = {}
    for n, value in new.items():
        d = BROKER_CONFIGS.get(n)
        if d is None:
            out[n] = value
            continue
        try:
            out[n] = d.check(value)
        except ConfigError as e:
            raise ResourceError(ErrorCode.INVALID_REQUEST,
                                f"Invalid value {value} for configuration {n}: {e}") from None
    return out


def _set_broker_configs(broker, resource_name: str, configs: dict[str, str]) -> None:
    """Store (and persist) the new dynamic configs of a BROKER resource and apply them to the open logs."""
    broker.config.set_dynamic(resource_name and str(broker.node_id), configs)
    broker.broker_configs_changed()
    log.info("dynamic %s configs now %s", f"broker {broker.node_id}" if resource_name else "default cluster",
             {k: ("[hidden]" if BROKER_CONFIGS.get(k) is not None and _is_sensitive(BROKER_CONFIGS[k].config_type)
                  else v) for k, v in configs.items()})


def _topic_for_alter(broker, name: str):
    if not name:
        raise ResourceError(ErrorCode.INVALID_REQUEST, "Default topic resources are not allowed.")
    try:
        validate_topic_name(name)
    except TopicError as e:
        raise ResourceError(e.code, e.message) from None


def _validate_topic(configs: dict[str, str | None]) -> dict[str, str]:
    nulls = [k for k, val in configs.items() if val is None]
    if nulls:
        raise ResourceError(ErrorCode.INVALID_CONFIG, "Null value not supported for topic configs: " + ",".join(nulls))
    try:
        return validate_topic_configs(configs)
    except ConfigError as e:
        raise ResourceError(ErrorCode.INVALID_CONFIG, str(e)) from None


def _existing_topic(broker, name: str):
    t = broker.topics.get(name)
    if t is None:
        raise ResourceError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist.")
    return t


async def _alter_topic(broker, name: str, update) -> dict[str, str]:
    """Broker.alter_topic_configs (this broker, or the cluster's metadata store), its TopicError as a ResourceError."""
    try:
        return await broker.alter_topic_configs(name, update)
    except TopicError as e:
        raise ResourceError(e.code, e.message) from None


def _duplicates(resources) -> set[int]:
    seen: dict[tuple[int, str], int] = {}
    dup = set()
    for i, r in enumerate(resources):
        key = (r.resource_type, r.resource_name)
        if key in seen:
            dup.add(seen[key])
            dup.add(i)
        seen[key] = i
    return dup


def _unsupported(resource_type: int) -> ResourceError:
    if resource_type == BROKER_LOGGER:
        return ResourceError(ErrorCode.INVALID_REQUEST, "AlterConfigs v1 and below does not support BROKER_LOGGER "
                                                        "resources")
    return ResourceError(ErrorCode.INVALID_REQUEST,
                         f"Unknown resource type {_TYPE_NAMES.get(resource_type, 'UNKNOWN')}")


def _check_alter(ctx, res, duplicate: bool) -> None:
    """What AlterConfigs and IncrementalAlterConfigs check first, per resource: it appears once, ALTER_CONFIGS on
    the topic or the cluster (KafkaApis.configsAuthorizationApiError: no message), no config key twice."""
    if duplicate:
        raise ResourceError(ErrorCode.INVALID_REQUEST, "Each resource must appear at most once.")
    denied = acl.config_resource_error(ctx, acl.ALTER_CONFIGS, res.resource_type, res.resource_name)
    if denied:
        raise ResourceError(ErrorCode(denied), None)
    names = [c.name for c in res.configs]
    if len(set(names)) != len(names):
        raise ResourceError(ErrorCode.INVALID_REQUEST, "Error due to duplicate config keys")


@api("AlterConfigs", 0, 2)
async def alter_configs(ctx: RequestContext, req: alter_configs_request.AlterConfigsRequest) -> alter_configs_response.AlterConfigsResponse:
    """Version notes: none; v2 is flexible.

    Behaviour: per resource, _check_alter (INVALID_REQUEST for a repeated resource or key, ALTER_CONFIGS on the topic or
    cluster); TOPIC: the whole override set is replaced (INVALID_CONFIG for bad or null values,
    UNKNOWN_TOPIC_OR_PARTITION) through Broker.alter_topic_configs (a cluster: the metadata store); BROKER ("" or this node): the dynamic set is replaced,
    static configs and nulls get INVALID_REQUEST; BROKER_LOGGER and other types INVALID_REQUEST. validate_only checks
    without changing.
    """
    broker = ctx.broker
    dup = _duplicates(req.resources)
    out = []
    for i, res in enumerate(req.resources):
        r = AC.AlterConfigsResourceResponse(error_code=0, error_message=None, resource_type=res.resource_type,
                                            resource_name=res.resource_name)
        out.append(r)
        try:
            _check_alter(ctx, res, i in dup)
            new = {c.name: c.value for c in res.configs}
            if res.resource_type == TOPIC:
                _topic_for_alter(broker, res.resource_name)
                configs = _validate_topic(new)
                _existing_topic(broker, res.resource_name)
                if not req.validate_only:
                    await _alter_topic(broker, res.resource_name, lambda _current, c=configs: c)
                    log.info("configs of topic %s replaced by %s", res.resource_name, configs)
            elif res.resource_type == BROKER:
                nulls = [n for n, val in new.items() if val is None]
                if nulls:
                    raise ResourceError(ErrorCode.INVALID_REQUEST, "Null value not supported for : " + ", ".join(nulls))
                _check_broker_resource(broker, res.resource_name)
                configs = _validate_broker_configs(new)
                if not req.validate_only:
                    _set_broker_configs(broker, res.resource_name, configs)
            else:
                raise _unsupported(res.resource_type)
        except ResourceError as e:
            r.error_code = int(e.code)
            r.error_message = e.message
    return AC.AlterConfigsResponse(throttle_time_ms=0, responses=out)


def _list_parts(value: str | None) -> list[str]:
    return [p for p in (value or "").split(",") if p]


def apply_incremental(current: dict[str, str], ops, list_type, default_of) -> dict[str, str | None]:
    """ConfigurationControlManager.incrementalAlterConfigResource: SET/DELETE/APPEND/SUBTRACT on a copy."""
    new: dict[str, str | None] = dict(current)
    for c in ops:
        op, key, value = c.config_operation, c.name, c.value
        if op == SET:
            new[key] = value
        elif op == DELETE:
            new.pop(key, None)
        elif op in (APPEND, SUBTRACT):
            if not list_type(key):
                raise ResourceError(ErrorCode.INVALID_CONFIG,
                                    f"Can't {_OP_NAMES[op]} to key {key} because its type is not LIST.")
            parts = _list_parts(new[key] if key in new else default_of(key))
            for p in (value or "").split(","):
                if op == APPEND:
                    if p not in parts:
                        parts.append(p)
                else:
                    while p in parts:
                        parts.remove(p)
            new[key] = ",".join(parts)
        else:
            raise ResourceError(ErrorCode.INVALID_REQUEST, f"Unknown alter config operation type {op}")
    return new


# LogLevelConfig.VALID_LOG_LEVELS (case-sensitive, as Kafka checks them); Python has no TRACE, so it is DEBUG
_LEVEL_BY_NAME = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
                  "ERROR": logging.ERROR, "FATAL": logging.CRITICAL}


def alter_loggers(broker, res, validate_only: bool) -> None:
    """BROKER_LOGGER resources: log levels of the broker's own Python loggers (Kafka's RuntimeLoggerManager on
    log4j loggers). Validates every operation before changing any."""
    nulls = [c.name for c in res.configs if c.config_operation != DELETE and c.value is None]
    if nulls:
        raise ResourceError(ErrorCode.INVALID_REQUEST, "Null value not supported for : " + ", ".join(nulls))
    try:
        node = int(res.resource_name)
    except ValueError:
        raise ResourceError(ErrorCode.INVALID_REQUEST,
                            f"Node id must be an integer, but it is: {res.resource_name}") from None
    if node != broker.node_id:
        # sic: Kafka's RuntimeLoggerManager.validateResourceNameIsNodeId prints its own id twice
        raise ResourceError(ErrorCode.INVALID_REQUEST,
                            f"Unexpected node id. Expected {broker.node_id}, but received {broker.node_id}")
    existing = broker_loggers()
    changes = []
    for c in res.configs:
        op = c.config_operation
        if op in (SET, DELETE) and c.name not in existing:
            raise ResourceError(ErrorCode.INVALID_CONFIG, f"Logger {c.name} does not exist!")
        if op == SET:
            level = _LEVEL_BY_NAME.get(c.value)
            if level is None:
                raise ResourceError(ErrorCode.INVALID_CONFIG, f"Cannot set the log level of {c.name} to {c.value} as "
                                                              f"it is not a supported log level. Valid log levels are "
                                                              f"{', '.join(sorted(_LEVEL_BY_NAME))}")
        elif op == DELETE:
            level = logging.NOTSET      # inherit, as Log4jController.unsetLogLevel
        elif op in (APPEND, SUBTRACT):
            raise ResourceError(ErrorCode.INVALID_REQUEST, f"{_OP_NAMES[op]} operation is not "
                                                           f"allowed for the BROKER_LOGGER resource")
        else:
            raise ResourceError(ErrorCode.INVALID_REQUEST, f"Unknown operation type {op} is not allowed for the "
                                                           f"BROKER_LOGGER resource")
        changes.append((existing[c.name], level))
    if not validate_only:
        for lg, level in changes:
            lg.setLevel(level)
            log.warning("Updated the log level of %s to %s", lg.name, logging.getLevelName(level))


@api("IncrementalAlterConfigs", 0, 1)
async def incremental_alter_configs(ctx: RequestContext, req: incremental_alter_configs_request.IncrementalAlterConfigsRequest) -> incremental_alter_configs_response.IncrementalAlterConfigsResponse:
    """Version notes: none; v1 is flexible.

    Behaviour: as AlterConfigs for the checks, but applies SET/DELETE/APPEND/SUBTRACT to the current values
    (apply_incremental: APPEND/SUBTRACT only on LIST configs, else INVALID_CONFIG; an unknown operation
    INVALID_REQUEST); TOPIC through Broker.alter_topic_configs (a cluster: applied to the store's current overrides
    with a compare-and-set), BROKER to the dynamic configs, BROKER_LOGGER to the levels
    of this broker's own loggers (alter_loggers). validate_only checks without changing.
    """
    broker = ctx.broker
    dup = _duplicates(req.resources)
    out = []
    for i, res in enumerate(req.resources):
        r = IAC.AlterConfigsResourceResponse(error_code=0, error_message=None, resource_type=res.resource_type,
                                             resource_name=res.resource_name)
        out.append(r)
        try:
            _check_alter(ctx, res, i in dup)
            for c in res.configs:
                if c.config_operation not in _OP_NAMES:
                    raise ResourceError(ErrorCode.INVALID_REQUEST, f"Unknown operations type {c.config_operation}")
            if res.resource_type == TOPIC:
                _topic_for_alter(broker, res.resource_name)
                t = broker.topics.get(res.resource_name)

                def update(current, ops=res.configs):
                    return _validate_topic(apply_incremental(
                        current, ops,
                        lambda k: k in TOPIC_CONFIGS and TOPIC_CONFIGS[k].config_type == TYPE_LIST,
                        lambda k: TOPIC_CONFIGS[k].default))
                configs = update(dict(t.configs) if t is not None else {})
                _existing_topic(broker, res.resource_name)
                if not req.validate_only:
                    # in a cluster, applied again to the overrides the metadata store holds (compare-and-set)
                    configs = await _alter_topic(broker, res.resource_name, update)
                    log.info("configs of topic %s now %s", res.resource_name, configs)
            elif res.resource_type == BROKER:
                _check_broker_resource(broker, res.resource_name)
                current = dict(_dynamic(broker, res.resource_name))
                new = apply_incremental(
                    current, res.configs,
                    lambda k: k in BROKER_CONFIGS and BROKER_CONFIGS[k].config_type == TYPE_LIST,
                    _static_default)
                if any(val is None for val in new.values()):
                    nulls = [n for n, val in new.items() if val is None]
                    raise ResourceError(ErrorCode.INVALID_REQUEST, "Null value not supported for : " + ", ".join(nulls))
                configs = _validate_broker_configs(new)
                if not req.validate_only:
                    _set_broker_configs(broker, res.resource_name, configs)
            elif res.resource_type == BROKER_LOGGER:
                alter_loggers(broker, res, req.validate_only)
            else:
                raise _unsupported(res.resource_type)
        except ResourceError as e:
            r.error_code = int(e.code)
            r.error_message = e.message
    return IAC.IncrementalAlterConfigsResponse(throttle_time_ms=0, responses=out)
