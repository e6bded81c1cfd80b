"""``__consumer_offsets`` records: keys and values with Kafka's internal schemas.

A key is an int16 key version followed by the key struct: 0 or 1 an offset commit (group, topic, partition),
2 group metadata (group). A value is an int16 value version followed by the value struct; a null value is a
tombstone. Versions written are the ones Kafka 3.x writes: OffsetCommitValue v3 (v1 when an explicit expire
timestamp is set), GroupMetadataValue v3.
"""

from __future__ import annotations

import struct

from kafkapy.groups.group import Group, OffsetAndMetadata
from wire import protocol

_I16 = struct.Struct(">h")

OFFSET_COMMIT_KEY_VERSION = 1
GROUP_METADATA_KEY_VERSION = 2
GROUP_METADATA_VALUE_VERSION = 3


def _mod(name: str):
    return protocol.data_module(name)


def offset_commit_key(group: str, topic: str, partition: int) -> bytes:
    m = _mod("OffsetCommitKey")
    return _I16.pack(OFFSET_COMMIT_KEY_VERSION) + protocol.encode(
        m, OFFSET_COMMIT_KEY_VERSION, m.MESSAGE(group=group, topic=topic, partition=partition))


def offset_commit_value(o: OffsetAndMetadata) -> bytes:
    m = _mod("OffsetCommitValue")
    version = 1 if o.expire_timestamp is not None else 3
    msg = m.MESSAGE(offset=o.offset, leader_epoch=o.leader_epoch, metadata=o.metadata or "",
                    commit_timestamp=o.commit_timestamp,
                    expire_timestamp=o.expire_timestamp if o.expire_timestamp is not None else -1)
    return _I16.pack(version) + protocol.encode(m, version, msg)


def group_metadata_key(group: str) -> bytes:
    m = _mod("GroupMetadataKey")
    return _I16.pack(GROUP_METADATA_KEY_VERSION) + protocol.encode(m, GROUP_METADATA_KEY_VERSION, m.MESSAGE(group=group))


def group_metadata_value(g: Group, assignments: dict[str, bytes] | None = None) -> bytes:
    m = _mod("GroupMetadataValue")
    members = []
    for mem in g.members.values():
        sub = mem.metadata(g.protocol_name) if g.protocol_name is not None else b""
        assignment = (assignments or {}).get(mem.member_id, mem.assignment)
        members.append(m.MemberMetadata(
            member_id=mem.member_id, group_instance_id=mem.group_instance_id, client_id=mem.client_id or "",
            client_host=mem.client_host, rebalance_timeout=mem.rebalance_timeout_ms,
            session_timeout=mem.session_timeout_ms, subscription=bytes(sub), assignment=bytes(assignment or b"")))
    msg = m.MESSAGE(protocol_type=g.protocol_type or "", generation=g.generation_id, protocol=g.protocol_name,
                    leader=g.leader_id, current_state_timestamp=g.current_state_timestamp or -1, members=members)
    return _I16.pack(GROUP_METADATA_VALUE_VERSION) + protocol.encode(m, GROUP_METADATA_VALUE_VERSION, msg)


def decode_key(key: bytes):
    """("offset", (group, topic, partition)) or ("group", group) or (None, None) for keys we do not know."""
    version = _I16.unpack_from(key, 0)[0]
    if version in (0, 1):
        msg, _ = protocol.decode(_mod("OffsetCommitKey"), version, key, 2)
        return "offset", (msg.group, msg.topic, msg.partition)
    if version == 2:
        msg, _ = protocol.decode(_mod("GroupMetadataKey"), version, key, 2)
        return "group", msg.group
    return None, None


def decode_offset_value(value: bytes) -> OffsetAndMetadata:
    version = _I16.unpack_from(value, 0)[0]
    m = _mod("OffsetCommitValue")
    msg, _ = protocol.decode(m, min(version, max(m.DECODERS)), value, 2)
    expire = msg.expire_timestamp if version == 1 and msg.expire_timestamp != -1 else None
    return OffsetAndMetadata(msg.offset, msg.leader_epoch if version >= 3 else -1, msg.metadata or "",
                             msg.commit_timestamp, expire)


def decode_group_value(value: bytes):
    version = _I16.unpack_from(value, 0)[0]
    m = _mod("GroupMetadataValue")
    msg, _ = protocol.decode(m, min(version, max(m.DECODERS)), value, 2)
    return msg
