"""The ACL matrix through raw requests: for each API the checks KafkaApis makes (resource, operation, error code),
a principal without the ACL gets the *_AUTHORIZATION_FAILED code, with it the request goes through.

One in-process broker with a SASL_PLAINTEXT listener (PLAIN users from a JAAS config), the standard authorizer and
``User:admin`` as super user; each test uses its own user and resource names, and grants bindings on the broker's
authorizer directly (CreateAcls itself is covered by compat_tests/test_security.py).
"""

from __future__ import annotations

import itertools

import pytest

from compat_tests.inprocess import InProcessBroker, connect, request
from kafkapy import acl
from wire.messages import add_offsets_to_txn_request as AddOffQ
from wire.messages import add_partitions_to_txn_request as AddPartQ
from wire.messages import alter_configs_request as ACQ
from wire.messages import create_partitions_request as CPQ
from wire.messages import delete_groups_request as DelGQ
from wire.messages import delete_records_request as DRQ
from wire.messages import describe_cluster_request as DCLQ
from wire.messages import describe_configs_request as DCQ
from wire.messages import describe_groups_request as DGQ
from wire.messages import describe_log_dirs_request as DLDQ
from wire.messages import describe_producers_request as DPQ
from wire.messages import describe_transactions_request as DTQ
from wire.messages import end_txn_request as EndQ
from wire.messages import heartbeat_request as HQ
from wire.messages import incremental_alter_configs_request as IACQ
from wire.messages import init_producer_id_request as IPQ
from wire.messages import join_group_request as JQ
from wire.messages import leave_group_request as LQ
from wire.messages import list_groups_request as LGQ
from wire.messages import list_offsets_request as LOQ
from wire.messages import list_transactions_request as LTQ
from wire.messages import metadata_request as MQ
from wire.messages import offset_commit_request as OCQ
from wire.messages import offset_delete_request as ODQ
from wire.messages import offset_fetch_request as OFQ
from wire.messages import offset_for_leader_epoch_request as OLEQ
from wire.messages import sasl_authenticate_request as SAQ
from wire.messages import sasl_handshake_request as SHQ
from wire.messages import sync_group_request as SQ
from wire.messages import txn_offset_commit_request as TOCQ
from wire.messages.error_codes import ErrorCode

USERS = ["admin"] + [f"u{i}" for i in range(1, 20)]
JAAS = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
        + " ".join(f'user_{u}="{u}-pw"' for u in USERS) + ";")

TOPIC_DENIED = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
GROUP_DENIED = int(ErrorCode.GROUP_AUTHORIZATION_FAILED)
CLUSTER_DENIED = int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
TXN_DENIED = int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
CFG_TOPIC, CFG_BROKER = 2, 4
_corr = itertools.count(1)


@pytest.fixture(scope="module")
def broker():
    b = InProcessBroker(properties={
        "listeners": "SASL_PLAINTEXT://127.0.0.1:0",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": JAAS,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:admin",
        "transaction.state.log.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
    })
    b.start()
    try:
        yield b
    finally:
        b.stop()


class Session:
    """An authenticated connection of one user."""

    def __init__(self, b, user):
        self.sock = connect(b.bootstrap)
        r = request(self.sock, 17, 1, SHQ.SaslHandshakeRequest(mechanism="PLAIN"), next(_corr))
        assert r.error_code == 0
        r = request(self.sock, 36, 2, SAQ.SaslAuthenticateRequest(
            auth_bytes=b"\0" + user.encode() + b"\0" + f"{user}-pw".encode()), next(_corr))
        assert r.error_code == 0, r.error_message

    def __call__(self, key, version, body):
        return request(self.sock, key, version, body, next(_corr))

    def close(self):
        self.sock.close()


@pytest.fixture()
def session(broker):
    opened = []

    def open_(user):
        s = Session(broker, user)
        opened.append(s)
        return s
    yield open_
    for s in opened:
        s.close()


def grant(broker, user, rt, name, op, pattern=acl.P_LITERAL, perm=acl.ALLOW):
    b = acl.AclBinding(rt, name, pattern, f"User:{user}", "*", op, perm)
    broker.run(lambda: broker.broker.authorizer.add(b))


def create_topic(broker, name, partitions=1):
    broker.run(lambda: broker.broker.create_topic(name, partitions, 1, {}))


def commit(s, group, topic, offset=5, partition=0):
    r = s(8, 8, OCQ.OffsetCommitRequest(group_id=group, generation_id_or_member_epoch=-1, member_id="", topics=[
        OCQ.OffsetCommitRequestTopic(name=topic, partitions=[OCQ.OffsetCommitRequestPartition(
            partition_index=partition, committed_offset=offset, committed_metadata="")])]))
    return r.topics[0].partitions[0].error_code


# ---------------------------------------------------------------- groups

def test_join_sync_heartbeat_leave_need_read_on_group(broker, session):
    s = session("u1")
    join = JQ.JoinGroupRequest(group_id="g-u1", session_timeout_ms=10000, rebalance_timeout_ms=10000, member_id="",
                               protocol_type="consumer",
                               protocols=[JQ.JoinGroupRequestProtocol(name="range", metadata=b"")])
    assert s(11, 3, join).error_code == GROUP_DENIED
    assert s(14, 3, SQ.SyncGroupRequest(group_id="g-u1", generation_id=1, member_id="m", assignments=[])
             ).error_code == GROUP_DENIED
    assert s(12, 3, HQ.HeartbeatRequest(group_id="g-u1", generation_id=1, member_id="m")).error_code == GROUP_DENIED
    r = s(13, 4, LQ.LeaveGroupRequest(group_id="g-u1", members=[LQ.MemberIdentity(member_id="m")]))
    assert r.error_code == GROUP_DENIED and r.members == []
    grant(broker, "u1", acl.R_GROUP, "g-", acl.READ, pattern=acl.P_PREFIXED)
    j = s(11, 3, join)
    assert j.error_code == 0 and j.leader == j.member_id
    r = s(14, 3, SQ.SyncGroupRequest(group_id="g-u1", generation_id=j.generation_id, member_id=j.member_id,
                                     assignments=[SQ.SyncGroupRequestAssignment(member_id=j.member_id,
                                                                                assignment=b"a")]))
    assert r.error_code == 0 and bytes(r.assignment) == b"a"
    assert s(12, 3, HQ.HeartbeatRequest(group_id="g-u1", generation_id=j.generation_id,
                                        member_id=j.member_id)).error_code == 0
    r = s(13, 4, LQ.LeaveGroupRequest(group_id="g-u1", members=[LQ.MemberIdentity(member_id=j.member_id)]))
    assert r.error_code == 0 and r.members[0].error_code == 0
    # deny overrides the prefixed allow
    grant(broker, "u1", acl.R_GROUP, "g-u1", acl.READ, perm=acl.DENY)
    assert s(11, 3, join).error_code == GROUP_DENIED


def test_offset_fetch_group_describe_and_topic_filtering(broker, session):
    admin, s = session("admin"), session("u2")
    create_topic(broker, "of-visible")
    create_topic(broker, "of-secret")
    assert commit(admin, "of-g", "of-visible", 7) == 0
    assert commit(admin, "of-g", "of-secret", 9) == 0
    asked = [OFQ.OffsetFetchRequestTopic(name="of-visible", partition_indexes=[0]),
             OFQ.OffsetFetchRequestTopic(name="of-secret", partition_indexes=[0])]
    r = s(9, 7, OFQ.OffsetFetchRequest(group_id="of-g", topics=asked))
    assert r.error_code == GROUP_DENIED and r.topics == []
    r = s(9, 1, OFQ.OffsetFetchRequest(group_id="of-g", topics=asked))   # v0-1: the error on each partition
    assert [p.error_code for t in r.topics for p in t.partitions] == [GROUP_DENIED] * 2
    r = s(9, 8, OFQ.OffsetFetchRequest(groups=[OFQ.OffsetFetchRequestGroup(group_id="of-g", topics=None)]))
    assert r.groups[0].error_code == GROUP_DENIED
    grant(broker, "u2", acl.R_GROUP, "of-g", acl.DESCRIBE)
    grant(broker, "u2", acl.R_TOPIC, "of-visible", acl.DESCRIBE)
    r = s(9, 7, OFQ.OffsetFetchRequest(group_id="of-g", topics=asked))
    assert r.error_code == 0
    got = {t.name: (t.partitions[0].committed_offset, t.partitions[0].error_code) for t in r.topics}
    assert got == {"of-visible": (7, 0), "of-secret": (-1, TOPIC_DENIED)}
    r = s(9, 7, OFQ.OffsetFetchRequest(group_id="of-g", topics=None))          # all: the secret topic left out
    assert [(t.name, t.partitions[0].committed_offset) for t in r.topics] == [("of-visible", 7)]
    r = s(9, 8, OFQ.OffsetFetchRequest(groups=[OFQ.OffsetFetchRequestGroup(group_id="of-g", topics=None)]))
    assert r.groups[0].error_code == 0 and [t.name for t in r.groups[0].topics] == ["of-visible"]


def test_describe_list_delete_groups(broker, session):
    admin, s, ops_user = session("admin"), session("u3"), session("u4")
    create_topic(broker, "dg-t")
    for g in ("dg-a", "dg-b", "dg-c"):
        assert commit(admin, g, "dg-t") == 0
    r = s(15, 5, DGQ.DescribeGroupsRequest(groups=["dg-a"], include_authorized_operations=True))
    g = r.groups[0]
    assert (g.error_code, g.group_state, g.authorized_operations) == (GROUP_DENIED, "", -2147483648)
    grant(broker, "u3", acl.R_GROUP, "dg-a", acl.DESCRIBE)
    grant(broker, "u3", acl.R_GROUP, "dg-b", acl.READ)
    r = s(15, 5, DGQ.DescribeGroupsRequest(groups=["dg-a", "dg-b"], include_authorized_operations=True))
    assert [(g.error_code, g.group_state) for g in r.groups] == [(0, "Empty"), (0, "Empty")]
    assert r.groups[0].authorized_operations == 1 << acl.DESCRIBE
    assert r.groups[1].authorized_operations == (1 << acl.READ) | (1 << acl.DESCRIBE)
    r = admin(15, 5, DGQ.DescribeGroupsRequest(groups=["dg-a"], include_authorized_operations=True))
    assert r.groups[0].authorized_operations == sum(1 << op for op in (acl.READ, acl.DELETE, acl.DESCRIBE))
    listed = {g.group_id for g in s(16, 4, LGQ.ListGroupsRequest(states_filter=[])).groups}
    assert {"dg-a", "dg-b"} <= listed and "dg-c" not in listed
    grant(broker, "u4", acl.R_CLUSTER, acl.CLUSTER_NAME, acl.DESCRIBE)     # DESCRIBE on the cluster: every group
    listed = {g.group_id for g in ops_user(16, 4, LGQ.ListGroupsRequest(states_filter=[])).groups}
    assert {"dg-a", "dg-b", "dg-c"} <= listed
    r = s(42, 2, DelGQ.DeleteGroupsRequest(groups_names=["dg-a", "dg-b"]))
    assert [x.error_code for x in r.results] == [GROUP_DENIED, GROUP_DENIED]
    grant(broker, "u3", acl.R_GROUP, "dg-b", acl.DELETE)
    r = s(42, 2, DelGQ.DeleteGroupsRequest(groups_names=["dg-a", "dg-b"]))
    assert [x.error_code for x in r.results] == [GROUP_DENIED, 0]


def test_offset_delete_needs_delete_group_and_read_topic(broker, session):
    admin, s = session("admin"), session("u5")
    create_topic(broker, "od-t")
    assert commit(admin, "od-g", "od-t") == 0
    body = ODQ.OffsetDeleteRequest(group_id="od-g", topics=[
        ODQ.OffsetDeleteRequestTopic(name="od-t", partitions=[ODQ.OffsetDeleteRequestPartition(partition_index=0)])])
    assert s(47, 0, body).error_code == GROUP_DENIED
    grant(broker, "u5", acl.R_GROUP, "od-g", acl.DELETE)
    r = s(47, 0, body)
    assert r.error_code == 0 and r.topics[0].partitions[0].error_code == TOPIC_DENIED
    grant(broker, "u5", acl.R_TOPIC, "od-t", acl.READ)
    r = s(47, 0, body)
    assert r.error_code == 0 and r.topics[0].partitions[0].error_code == 0


# ---------------------------------------------------------------- topics

def test_list_offsets_create_partitions_delete_records(broker, session):
    s = session("u6")
    create_topic(broker, "tp-x")
    lo = LOQ.ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[LOQ.ListOffsetsTopic(
        name="tp-x", partitions=[LOQ.ListOffsetsPartition(partition_index=0, current_leader_epoch=-1, timestamp=-1)])])
    assert s(2, 7, lo).topics[0].partitions[0].error_code == TOPIC_DENIED
    cp = CPQ.CreatePartitionsRequest(topics=[CPQ.CreatePartitionsTopic(name="tp-x", count=2, assignments=None)],
                                     timeout_ms=5000, validate_only=False)
    assert s(37, 3, cp).results[0].error_code == TOPIC_DENIED
    dr = DRQ.DeleteRecordsRequest(timeout_ms=5000, topics=[DRQ.DeleteRecordsTopic(
        name="tp-x", partitions=[DRQ.DeleteRecordsPartition(partition_index=0, offset=0)])])
    r = s(21, 2, dr).topics[0].partitions[0]
    assert (r.error_code, r.low_watermark) == (TOPIC_DENIED, -1)
    grant(broker, "u6", acl.R_TOPIC, "tp-x", acl.DESCRIBE)
    assert s(2, 7, lo).topics[0].partitions[0].error_code == 0
    assert s(37, 3, cp).results[0].error_code == TOPIC_DENIED       # DESCRIBE does not imply ALTER
    grant(broker, "u6", acl.R_TOPIC, "tp-", acl.ALTER, pattern=acl.P_PREFIXED)
    assert s(37, 3, cp).results[0].error_code == 0
    grant(broker, "u6", acl.R_TOPIC, "tp-x", acl.DELETE)
    r = s(21, 2, dr).topics[0].partitions[0]
    assert (r.error_code, r.low_watermark) == (0, 0)


def test_configs_need_describe_configs_and_alter_configs(broker, session):
    s = session("u7")
    create_topic(broker, "cfg-t")
    desc = DCQ.DescribeConfigsRequest(resources=[
        DCQ.DescribeConfigsResource(resource_type=CFG_TOPIC, resource_name="cfg-t", configuration_keys=None),
        DCQ.DescribeConfigsResource(resource_type=CFG_BROKER, resource_name=str(broker.broker.node_id),
                                    configuration_keys=None)],
        include_synonyms=False, include_documentation=False)
    r = s(32, 4, desc)
    assert [(x.error_code, x.error_message, x.configs) for x in r.results] == [
        (TOPIC_DENIED, "Topic authorization failed.", []), (CLUSTER_DENIED, "Cluster authorization failed.", [])]
    alter = ACQ.AlterConfigsRequest(validate_only=False, resources=[ACQ.AlterConfigsResource(
        resource_type=CFG_TOPIC, resource_name="cfg-t",
        configs=[ACQ.AlterableConfig(name="retention.ms", value="100000")])])
    assert s(33, 2, alter).responses[0].error_code == TOPIC_DENIED
    inc = IACQ.IncrementalAlterConfigsRequest(validate_only=False, resources=[IACQ.AlterConfigsResource(
        resource_type=CFG_BROKER, resource_name="", configs=[IACQ.AlterableConfig(
            name="log.retention.ms", config_operation=0, value="100000")])])
    assert s(44, 1, inc).responses[0].error_code == CLUSTER_DENIED
    grant(broker, "u7", acl.R_TOPIC, "cfg-t", acl.ALTER_CONFIGS)       # implies DESCRIBE_CONFIGS
    grant(broker, "u7", acl.R_CLUSTER, acl.CLUSTER_NAME, acl.DESCRIBE_CONFIGS)
    r = s(32, 4, desc)
    assert [x.error_code for x in r.results] == [0, 0] and all(x.configs for x in r.results)
    assert s(33, 2, alter).responses[0].error_code == 0
    assert s(44, 1, inc).responses[0].error_code == CLUSTER_DENIED      # DESCRIBE_CONFIGS does not imply ALTER_
    grant(broker, "u7", acl.R_CLUSTER, acl.CLUSTER_NAME, acl.ALTER_CONFIGS)
    assert s(44, 1, inc).responses[0].error_code == 0


def test_describe_log_dirs_and_describe_cluster(broker, session):
    admin, s = session("admin"), session("u8")
    r = s(35, 4, DLDQ.DescribeLogDirsRequest(topics=None))
    assert (r.error_code, r.results) == (CLUSTER_DENIED, [])
    dc = DCLQ.DescribeClusterRequest(include_cluster_authorized_operations=True, endpoint_type=1)
    assert s(60, 1, dc).cluster_authorized_operations == 0
    create_topic(broker, "md-t")
    md = MQ.MetadataRequest(topics=[MQ.MetadataRequestTopic(name="md-t")], allow_auto_topic_creation=False,
                            include_cluster_authorized_operations=True, include_topic_authorized_operations=True)
    r = s(3, 10, md)
    assert r.cluster_authorized_operations == 0 and r.topics[0].error_code == TOPIC_DENIED
    grant(broker, "u8", acl.R_TOPIC, "md-t", acl.READ)
    r = s(3, 10, md)
    assert r.topics[0].error_code == 0
    assert r.topics[0].topic_authorized_operations == (1 << acl.READ) | (1 << acl.DESCRIBE)
    grant(broker, "u8", acl.R_CLUSTER, acl.CLUSTER_NAME, acl.DESCRIBE)
    assert s(3, 10, md).cluster_authorized_operations == 1 << acl.DESCRIBE
    r = s(35, 4, DLDQ.DescribeLogDirsRequest(topics=None))
    assert r.error_code == 0 and len(r.results) == 1
    assert s(60, 1, dc).cluster_authorized_operations == 1 << acl.DESCRIBE
    grant(broker, "u8", acl.R_CLUSTER, acl.CLUSTER_NAME, acl.ALTER)
    assert s(60, 1, dc).cluster_authorized_operations == (1 << acl.DESCRIBE) | (1 << acl.ALTER)
    from kafkapy.handlers.metadata import CLUSTER_OPS
    assert admin(60, 1, dc).cluster_authorized_operations == CLUSTER_OPS


# ---------------------------------------------------------------- producers and transactions

def _init(s, tid=None):
    return s(22, 4, IPQ.InitProducerIdRequest(transactional_id=tid, transaction_timeout_ms=60000, producer_id=-1,
                                               producer_epoch=-1))


def test_init_producer_id_idempotent_kip679(broker, session):
    s9, s10, s11 = session("u9"), session("u10"), session("u11")
    r = _init(s9)
    assert (r.error_code, r.producer_id) == (CLUSTER_DENIED, -1)
    grant(broker, "u9", acl.R_TOPIC, "some-", acl.WRITE, pattern=acl.P_PREFIXED)    # WRITE on any topic (KIP-679)
    r = _init(s9)
    assert r.error_code == 0 and r.producer_id >= 0
    grant(broker, "u10", acl.R_TOPIC, "w-", acl.WRITE, pattern=acl.P_PREFIXED)
    grant(broker, "u10", acl.R_TOPIC, "w", acl.WRITE, pattern=acl.P_PREFIXED, perm=acl.DENY)   # covers the allow
    assert _init(s10).error_code == CLUSTER_DENIED
    grant(broker, "u10", acl.R_CLUSTER, acl.CLUSTER_NAME, acl.IDEMPOTENT_WRITE)
    assert _init(s10).error_code == 0
    grant(broker, "u11", acl.R_TOPIC, "x", acl.WRITE)
    grant(broker, "u11", acl.R_TOPIC, "*", acl.WRITE, perm=acl.DENY)
    assert _init(s11).error_code == CLUSTER_DENIED


def test_transactional_apis(broker, session):
    s = session("u12")
    create_topic(broker, "tx-a")
    create_topic(broker, "tx-b")
    assert _init(s, "tx-1").error_code == TXN_DENIED
    grant(broker, "u12", acl.R_TRANSACTIONAL_ID, "tx-", acl.WRITE, pattern=acl.P_PREFIXED)
    r = _init(s, "tx-1")
    assert r.error_code == 0
    pid, epoch = r.producer_id, r.producer_epoch

    def add(tid, *topics):
        r = s(24, 3, AddPartQ.AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=tid, v3_and_below_producer_id=pid, v3_and_below_producer_epoch=epoch,
            v3_and_below_topics=[AddPartQ.AddPartitionsToTxnTopic(name=t, partitions=[0]) for t in topics]))
        return {t.name: t.results_by_partition[0].partition_error_code for t in r.results_by_topic_v3_and_below}

    assert add("other-id", "tx-a") == {"tx-a": TXN_DENIED}
    assert add("tx-1", "tx-a", "tx-b") == {"tx-a": TOPIC_DENIED, "tx-b": TOPIC_DENIED}
    grant(broker, "u12", acl.R_TOPIC, "tx-a", acl.WRITE)
    assert add("tx-1", "tx-a", "tx-b") == {"tx-a": int(ErrorCode.OPERATION_NOT_ATTEMPTED), "tx-b": TOPIC_DENIED}
    assert add("tx-1", "tx-a") == {"tx-a": 0}

    def add_offsets(tid, group):
        return s(25, 3, AddOffQ.AddOffsetsToTxnRequest(transactional_id=tid, producer_id=pid, producer_epoch=epoch,
                                                        group_id=group)).error_code

    assert add_offsets("other-id", "tx-g") == TXN_DENIED
    assert add_offsets("tx-1", "tx-g") == GROUP_DENIED
    grant(broker, "u12", acl.R_GROUP, "tx-g", acl.READ)
    assert add_offsets("tx-1", "tx-g") == 0

    def txn_commit(tid, group):
        r = s(28, 3, TOCQ.TxnOffsetCommitRequest(
            transactional_id=tid, group_id=group, producer_id=pid, producer_epoch=epoch, generation_id=-1,
            member_id="", group_instance_id=None, topics=[TOCQ.TxnOffsetCommitRequestTopic(name=t, partitions=[
                TOCQ.TxnOffsetCommitRequestPartition(partition_index=0, committed_offset=1, committed_leader_epoch=-1,
                                                     committed_metadata="")]) for t in ("tx-a", "tx-b")]))
        return {t.name: t.partitions[0].error_code for t in r.topics}

    assert txn_commit("other-id", "tx-g") == {"tx-a": TXN_DENIED, "tx-b": TXN_DENIED}
    assert txn_commit("tx-1", "tx-h") == {"tx-a": GROUP_DENIED, "tx-b": GROUP_DENIED}
    # READ on each topic (WRITE on tx-a is not READ)
    assert txn_commit("tx-1", "tx-g") == {"tx-a": TOPIC_DENIED, "tx-b": TOPIC_DENIED}
    grant(broker, "u12", acl.R_TOPIC, "tx-a", acl.READ)
    assert txn_commit("tx-1", "tx-g") == {"tx-a": 0, "tx-b": TOPIC_DENIED}

    def end(tid):
        return s(26, 3, EndQ.EndTxnRequest(transactional_id=tid, producer_id=pid, producer_epoch=epoch,
                                           committed=True)).error_code

    assert end("other-id") == TXN_DENIED
    assert end("tx-1") == 0


def test_add_partitions_to_txn_v4_needs_cluster_action(broker, session):
    s = session("u13")
    r = s(24, 4, AddPartQ.AddPartitionsToTxnRequest(transactions=[AddPartQ.AddPartitionsToTxnTransaction(
        transactional_id="x", producer_id=1, producer_epoch=0, verify_only=True, topics=[])]))
    assert (r.error_code, r.results_by_transaction) == (CLUSTER_DENIED, [])


def test_offset_for_leader_epoch_needs_describe_topic(broker, session):
    s = session("u14")
    create_topic(broker, "ole-t")
    body = OLEQ.OffsetForLeaderEpochRequest(replica_id=-1, topics=[OLEQ.OffsetForLeaderTopic(
        topic="ole-t", partitions=[OLEQ.OffsetForLeaderPartition(partition=0, current_leader_epoch=-1,
                                                                 leader_epoch=0)])])
    r = s(23, 4, body).topics[0].partitions[0]
    assert (r.error_code, r.end_offset) == (TOPIC_DENIED, -1)
    grant(broker, "u14", acl.R_TOPIC, "ole-t", acl.DESCRIBE)
    assert s(23, 4, body).topics[0].partitions[0].error_code == 0


def test_describe_producers_and_transactions(broker, session):
    admin, s = session("admin"), session("u15")
    create_topic(broker, "dt-t")
    r = _init(admin, "dt-1")
    assert r.error_code == 0
    r = admin(24, 3, AddPartQ.AddPartitionsToTxnRequest(
        v3_and_below_transactional_id="dt-1", v3_and_below_producer_id=r.producer_id,
        v3_and_below_producer_epoch=r.producer_epoch,
        v3_and_below_topics=[AddPartQ.AddPartitionsToTxnTopic(name="dt-t", partitions=[0])]))
    assert r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code == 0
    dp = DPQ.DescribeProducersRequest(topics=[DPQ.TopicRequest(name="dt-t", partition_indexes=[0])])
    assert s(61, 0, dp).topics[0].partitions[0].error_code == TOPIC_DENIED
    dt = DTQ.DescribeTransactionsRequest(transactional_ids=["dt-1"])
    assert s(65, 0, dt).transaction_states[0].error_code == TXN_DENIED
    lt = LTQ.ListTransactionsRequest(state_filters=[], producer_id_filters=[], duration_filter=-1)
    assert "dt-1" not in {t.transactional_id for t in s(66, 1, lt).transaction_states}
    grant(broker, "u15", acl.R_TRANSACTIONAL_ID, "dt-1", acl.DESCRIBE)
    st = s(65, 0, dt).transaction_states[0]
    assert st.error_code == 0 and st.topics == []        # the topic is left out without DESCRIBE on it
    assert "dt-1" in {t.transactional_id for t in s(66, 1, lt).transaction_states}
    grant(broker, "u15", acl.R_TOPIC, "dt-t", acl.READ)
    assert s(61, 0, dp).topics[0].partitions[0].error_code == 0
    assert [(t.topic, t.partitions) for t in s(65, 0, dt).transaction_states[0].topics] == [("dt-t", [0])]


def test_metadata_checks_create_only_when_the_topic_would_be_auto_created(broker, session):
    """KafkaApis: an unknown topic asked by a principal that may DESCRIBE but not CREATE it is auto-created only with
    CREATE; with auto-creation off (broker setting) the answer is UNKNOWN_TOPIC_OR_PARTITION, not an ACL error."""
    s = session("u9")
    grant(broker, "u9", acl.R_TOPIC, "nocreate-", acl.DESCRIBE, pattern=acl.P_PREFIXED)
    md = MQ.MetadataRequest(topics=[MQ.MetadataRequestTopic(name="nocreate-a")], allow_auto_topic_creation=True)
    assert s(3, 10, md).topics[0].error_code == TOPIC_DENIED         # would be created: CREATE is needed
    broker.run(lambda: broker.broker.config.properties.__setitem__("auto.create.topics.enable", "false"))
    try:
        assert s(3, 10, md).topics[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    finally:
        broker.run(lambda: broker.broker.config.properties.__setitem__("auto.create.topics.enable", "true"))
