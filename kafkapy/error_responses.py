"""The error response to any request, built from the request itself (Kafka's ``AbstractRequest.getErrorResponse``).

When a handler raises, Kafka's ``KafkaApis.handle`` answers the request with ``request.getErrorResponse(e)``
(UNKNOWN_SERVER_ERROR for an unexpected exception) and keeps the connection; kafkapy does the same through
``error_response``, which takes any error code (a control hook's injected error, ``kafkapy.control``). Rules, as Kafka's per-request ``getErrorResponse`` methods apply them:

- A response with a top-level ``error_code`` (at the request's version) carries the error there; everything
  else keeps the schema's defaults (empty lists, -1 ids and offsets).
- A response without one mirrors what the request names, down to the first level that has an error code, and
  sets that code: Produce and Fetch v4-6 per partition, Metadata and CreateTopics per topic, DescribeConfigs
  per resource, DescribeGroups per group, and so on. A response list is mirrored from the request list of
  the same name, else from the one list the request has at that level (tagged response lists, such as
  node endpoints, stay empty); a request list of strings or ints
  (group ids, partition indexes) becomes entries whose first field of that type holds the value.
- Only identity fields are copied from the request (topic names and ids, partition indexes, group ids,
  resource types and names, coordinator keys); other fields keep the response schema's defaults, except
  offsets, watermarks and producer ids/epochs, which are -1 (Kafka's INVALID_OFFSET, NO_PRODUCER_ID), record
  sets, which are empty (Kafka's ``MemoryRecords.EMPTY``), and error messages, null where the version allows.
  Tagged error codes (CreateTopics' topic config error) are left alone.
- Exceptions to the walk are listed in ``_SPECIAL``: AlterUserScramCredentials (one result per user named by
  deletions and upsertions), DescribeLogDirs before v3 (no error field: empty results, as Kafka sends).
- Produce with acks=0 has no response: ``None``, and the caller closes the connection (Kafka's
  ``sendErrorOrCloseConnection``), so the client does not take the lost batch for written.

Pure functions over generated messages: no broker, no I/O.
"""

from __future__ import annotations

from wire import protocol
from wire.messages.error_codes import ErrorCode

# FIELDS tuples of generated messages: (attr, kafka name, type, versions lo/hi, nullable lo/hi, tag,
# tagged lo/hi, struct, flexible-override lo)
_ATTR, _TYPE, _VLO, _VHI, _NLO, _NHI, _TAG, _STRUCT = 0, 2, 3, 4, 5, 6, 7, 10

# request field -> response fields it is copied to (identity fields only)
_IDENTITY = {
    "name": ("name", "topic", "topic_name", "user"),
    "topic": ("topic", "name"),
    "topic_name": ("topic_name", "name"),
    "topic_id": ("topic_id",),
    "partition": ("partition", "partition_index"),
    "partition_index": ("partition_index", "partition"),
    "index": ("index", "partition_index"),
    "group_id": ("group_id",),
    "resource_type": ("resource_type",),
    "resource_name": ("resource_name",),
    "key": ("key",),
    "transactional_id": ("transactional_id",),
}
# "unknown" values Kafka's error responses carry where the schema's default is 0 (INVALID_OFFSET, NO_PRODUCER_ID, ...)
_INVALID = {"base_offset", "committed_offset", "high_watermark", "last_stable_offset", "log_start_offset", "low_watermark",
            "producer_id", "producer_epoch"}
_SCALAR_TYPES = {"string", "int32", "int64", "int16", "int8", "uuid"}


def _valid(field, version: int) -> bool:
    return field[_VLO] <= version <= field[_VHI]


def _is_error_field(field) -> bool:
    return field[_TYPE] == "int16" and field[_TAG] is None and (field[_ATTR] == "error_code"
                                                                or field[_ATTR].endswith("_error_code"))


def _struct_list(field) -> bool:
    return field[_TYPE].startswith("[]") and field[_STRUCT] is not None


def _mirror(cls, mod, req, version: int, code: int):
    """An instance of response struct ``cls`` that answers request struct (or scalar) ``req`` with ``code``."""
    out = cls()
    fields = [f for f in cls.FIELDS if _valid(f, version)]
    if req is not None and not hasattr(req, "FIELDS"):
        # a request list of names or indexes: the value goes to the first response field of its type
        want = "string" if isinstance(req, str) else "int32"
        for f in fields:
            if f[_TYPE] == want:
                setattr(out, f[_ATTR], req)
                break
    elif req is not None:
        names = {f[_ATTR] for f in fields}
        for f in req.FIELDS:
            if _valid(f, version) and f[_ATTR] in _IDENTITY:
                for target in _IDENTITY[f[_ATTR]]:
                    if target in names:
                        setattr(out, target, getattr(req, f[_ATTR]))
                        break
    for f in fields:
        if f[_TYPE] == "records":
            setattr(out, f[_ATTR], b"")
        elif f[_ATTR] in _INVALID and f[_TYPE] in ("int64", "int16"):
            setattr(out, f[_ATTR], -1)
        elif f[_ATTR] == "error_message" and f[_NLO] <= version <= f[_NHI]:
            setattr(out, f[_ATTR], None)
    errors = [f for f in fields if _is_error_field(f)]
    if errors:
        for f in errors:
            setattr(out, f[_ATTR], int(code))
        return out
    _mirror_lists(out, fields, mod, req if req is not None and hasattr(req, "FIELDS") else None, version, code)
    return out


def _mirror_lists(out, fields, mod, req, version: int, code: int) -> None:
    lists = [f for f in fields if _struct_list(f)]
    if req is None or not lists:
        return
    sources = {f[_ATTR]: f for f in req.FIELDS if _valid(f, version) and f[_TYPE].startswith("[]")
               and (f[_STRUCT] is not None or f[_TYPE][2:] in _SCALAR_TYPES)}
    pairs = [(f, f[_ATTR]) for f in lists if f[_ATTR] in sources]
    used = {src for _f, src in pairs}
    rest_out = [f for f in lists if f[_ATTR] not in sources and f[_TAG] is None]   # tagged: extras
    rest_in = [a for a in sources if a not in used]
    if len(rest_out) == 1 and len(rest_in) == 1:
        pairs.append((rest_out[0], rest_in[0]))
    for f, src in pairs:
        items = getattr(req, src)
        elem = getattr(mod, f[_STRUCT])
        setattr(out, f[_ATTR], [_mirror(elem, mod, item, version, code) for item in items or ()])


def _alter_user_scram_credentials(mod, req, version: int, code: int):
    users = []
    for item in list(req.deletions or ()) + list(req.upsertions or ()):
        if item.name not in users:
            users.append(item.name)
    return mod.MESSAGE(results=[mod.AlterUserScramCredentialsResult(user=u, error_code=int(code), error_message=None)
                                for u in users])


def _describe_log_dirs(mod, req, version: int, code: int):
    if version < 3:
        return mod.MESSAGE(results=[])   # no error field before v3: Kafka answers an empty list too
    return mod.MESSAGE(error_code=int(code), results=[])


_SPECIAL = {
    protocol.API_BY_NAME["AlterUserScramCredentials"].key: _alter_user_scram_credentials,
    protocol.API_BY_NAME["DescribeLogDirs"].key: _describe_log_dirs,
}
PRODUCE_KEY = protocol.API_BY_NAME["Produce"].key


def error_code_of(code: int | str) -> int:
    """An error code given as a number, an ``ErrorCode`` or its name ("NOT_LEADER_OR_FOLLOWER")."""
    if isinstance(code, str):
        try:
            return int(ErrorCode[code.strip().upper()])
        except KeyError:
            raise ValueError(f"unknown error code name {code!r}") from None
    if isinstance(code, bool) or not isinstance(code, int) or not -32768 <= code <= 32767:
        raise ValueError(f"an error code is an int16 or an ErrorCode name, got {code!r}")
    return int(code)


def error_response(api_key: int, version: int, request, code: int | str = ErrorCode.UNKNOWN_SERVER_ERROR):
    """The response that answers ``request`` (api ``api_key`` at ``version``) with ``code`` (any error code: a
    number, an ``ErrorCode`` or its name); None when the request takes no response (Produce with acks=0)."""
    code = error_code_of(code)
    if api_key == PRODUCE_KEY and request.acks == 0:
        return None
    mod = protocol.API[api_key].response
    special = _SPECIAL.get(api_key)
    if special is not None:
        return special(mod, request, version, code)
    return _mirror(mod.MESSAGE, mod, request, version, code)
