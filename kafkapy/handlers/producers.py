"""Idempotent and transactional producers: InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn,
TxnOffsetCommit, DescribeProducers, DescribeTransactions, ListTransactions.

The transaction logic lives in kafkapy.producers (the transaction coordinator and the per-partition producer
state); these functions translate requests and responses, make KafkaApis' ACL checks, check TxnOffsetCommit's
producer and group member before the commit, and map version quirks: like Kafka (KIP-588), clients too old to
know PRODUCER_FENCED get INVALID_PRODUCER_EPOCH instead.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from kafkapy import acl
from kafkapy.handlers import api
from kafkapy.producers.coordinator import STATE_NAMES, TxnState
from wire.messages import add_offsets_to_txn_response as AddOffsetsR
from wire.messages import add_partitions_to_txn_response as AddPartsR
from wire.messages import describe_producers_response as DescProdR
from wire.messages import describe_transactions_response as DescTxnR
from wire.messages import end_txn_response as EndTxnR
from wire.messages import init_producer_id_response as InitR
from wire.messages import list_transactions_response as ListTxnR
from wire.messages import txn_offset_commit_response as TxnOffR
from wire.messages.error_codes import ErrorCode

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import add_offsets_to_txn_request
    from wire.messages import add_offsets_to_txn_response
    from wire.messages import add_partitions_to_txn_request
    from wire.messages import add_partitions_to_txn_response
    from wire.messages import describe_producers_request
    from wire.messages import describe_producers_response
    from wire.messages import describe_transactions_request
    from wire.messages import describe_transactions_response
    from wire.messages import end_txn_request
    from wire.messages import end_txn_response
    from wire.messages import init_producer_id_request
    from wire.messages import init_producer_id_response
    from wire.messages import list_transactions_request
    from wire.messages import list_transactions_response
    from wire.messages import txn_offset_commit_request
    from wire.messages import txn_offset_commit_response


REPLICATION_TIMEOUT = 5.0   # seconds a transaction state write waits for the ISR of its __transaction_state partition


async def _replicated(ctx, tid: str | None, code: ErrorCode) -> ErrorCode:
    """A coordinator answer that wrote transaction state is given only once that state is replicated (Kafka appends
    it with acks=all); the error instead when it is not (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE)."""
    if not tid:
        return code
    failed = await ctx.broker.transactions.wait_replicated(tid, REPLICATION_TIMEOUT)
    return code if failed is None else failed


def _fenced(code: ErrorCode, version: int, first_version_with_fenced: int) -> int:
    if code == ErrorCode.PRODUCER_FENCED and version < first_version_with_fenced:
        return int(ErrorCode.INVALID_PRODUCER_EPOCH)
    return int(code)


@api("InitProducerId", 0, 5)
async def init_producer_id(ctx: RequestContext, req: init_producer_id_request.InitProducerIdRequest) -> init_producer_id_response.InitProducerIdResponse:
    """Version notes: v3+ producer_id/producer_epoch, so a producer can resume its id after an error; v4+ may answer
    PRODUCER_FENCED, older versions get INVALID_PRODUCER_EPOCH instead (as KafkaApis).

    Behaviour: with a transactional id, WRITE on it (TRANSACTIONAL_ID_AUTHORIZATION_FAILED); without one,
    IDEMPOTENT_WRITE on the cluster or WRITE on some topic (KIP-679), else CLUSTER_AUTHORIZATION_FAILED, as KafkaApis.
    Then, with a transactional id, NOT_COORDINATOR unless this broker coordinates it (a cluster:
    TransactionCoordinator.coordinator_error); TransactionCoordinator.init_producer_id, whose code, id and epoch are
    answered once the state it wrote is replicated (TransactionCoordinator.wait_replicated).
    """
    v = ctx.api_version
    pid, epoch = (req.producer_id, req.producer_epoch) if v >= 3 else (-1, -1)
    denied = 0
    if req.transactional_id is not None:
        if not acl.transactional_id_allowed(ctx, acl.WRITE, req.transactional_id):
            denied = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    elif not (acl.allowed_quietly(ctx, acl.IDEMPOTENT_WRITE, acl.R_CLUSTER, acl.CLUSTER_NAME)
              or acl.allowed_on_any(ctx, acl.WRITE, acl.R_TOPIC)):     # KIP-679
        denied = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    if denied:
        return InitR.InitProducerIdResponse(throttle_time_ms=0, error_code=int(denied), producer_id=-1,
                                            producer_epoch=-1)
    coord = ctx.broker.transactions
    if (err := coord.coordinator_error(req.transactional_id)) is not None:
        return InitR.InitProducerIdResponse(throttle_time_ms=0, error_code=int(err), producer_id=-1, producer_epoch=-1)
    await coord.ids.ensure()       # a cluster: a block of ids from the metadata store
    code, pid, epoch = coord.init_producer_id(req.transactional_id, req.transaction_timeout_ms, pid, epoch)
    if req.transactional_id is not None and code in (ErrorCode.NONE, ErrorCode.CONCURRENT_TRANSACTIONS):
        replicated = await _replicated(ctx, req.transactional_id, code)
        if replicated != code:
            code, pid, epoch = replicated, -1, -1
    return InitR.InitProducerIdResponse(throttle_time_ms=0, error_code=_fenced(code, v, 4), producer_id=pid,
                                        producer_epoch=epoch)


async def _add_partitions(ctx, tid, pid, epoch, topics, verify_only: bool, v: int):
    """[AddPartitionsToTxnTopicResult] for one transaction."""
    broker = ctx.broker
    coord = ctx.broker.transactions
    wanted = [(t.name, p) for t in topics for p in t.partitions]
    denied = {n for n in {tp[0] for tp in wanted} if not acl.topic_allowed(ctx, acl.WRITE, n)}
    unknown = {tp for tp in wanted if tp[0] not in denied and broker.partition_log(*tp) is None}
    if not acl.transactional_id_allowed(ctx, acl.WRITE, tid):
        errors = {tp: ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED for tp in wanted}
    elif (err := coord.coordinator_error(tid)) is not None:
        errors = {tp: err for tp in wanted}
    elif unknown or denied:
        errors = {tp: (ErrorCode.TOPIC_AUTHORIZATION_FAILED if tp[0] in denied else
                       ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if tp in unknown else ErrorCode.OPERATION_NOT_ATTEMPTED)
                  for tp in wanted}
    elif verify_only:
        errors = coord.verify_partitions(tid, pid, epoch, set(wanted))
    else:
        code = coord.add_partitions(tid, pid, epoch, set(wanted))
        if code == ErrorCode.NONE:
            code = await _replicated(ctx, tid, code)
        errors = {tp: code for tp in wanted}
    out: dict[str, list] = {}
    for name, p in wanted:
        out.setdefault(name, []).append(AddPartsR.AddPartitionsToTxnPartitionResult(
            partition_index=p, partition_error_code=_fenced(errors[(name, p)], v, 2)))
    return [AddPartsR.AddPartitionsToTxnTopicResult(name=n, results_by_partition=r) for n, r in out.items()]


@api("AddPartitionsToTxn", 0, 5)
async def add_partitions_to_txn(ctx: RequestContext, req: add_partitions_to_txn_request.AddPartitionsToTxnRequest) -> add_partitions_to_txn_response.AddPartitionsToTxnResponse:
    """Version notes: v0-3 come from clients, one transaction; v4+ come from brokers (CLUSTER_ACTION on the cluster,
    else a top-level CLUSTER_AUTHORIZATION_FAILED, as KafkaApis), several transactions and verify_only. PRODUCER_FENCED
    is answered from v2, INVALID_PRODUCER_EPOCH before.

    Behaviour: per transaction, WRITE on the transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED everywhere) and on
    each topic; a denied (TOPIC_AUTHORIZATION_FAILED) or unknown (UNKNOWN_TOPIC_OR_PARTITION) partition fails the others
    with OPERATION_NOT_ATTEMPTED; NOT_COORDINATOR for an id this broker does not coordinate. Then
    TransactionCoordinator.add_partitions, answered once replicated, or verify_partitions for verify_only.
    """
    v = ctx.api_version
    if v < 4:
        results = await _add_partitions(ctx, req.v3_and_below_transactional_id, req.v3_and_below_producer_id,
                                  req.v3_and_below_producer_epoch, req.v3_and_below_topics, False, v)
        return AddPartsR.AddPartitionsToTxnResponse(throttle_time_ms=0, results_by_topic_v3_and_below=results)
    if not acl.cluster_allowed(ctx, acl.CLUSTER_ACTION):   # v4+ comes from brokers only
        return AddPartsR.AddPartitionsToTxnResponse(throttle_time_ms=0,
                                                    error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                                                    results_by_transaction=[])
    out = []
    for txn in req.transactions:
        out.append(AddPartsR.AddPartitionsToTxnResult(
            transactional_id=txn.transactional_id,
            topic_results=await _add_partitions(ctx, txn.transactional_id, txn.producer_id, txn.producer_epoch, txn.topics,
                                          txn.verify_only, v)))
    return AddPartsR.AddPartitionsToTxnResponse(throttle_time_ms=0, error_code=0, results_by_transaction=out)


@api("AddOffsetsToTxn", 0, 4)
async def add_offsets_to_txn(ctx: RequestContext, req: add_offsets_to_txn_request.AddOffsetsToTxnRequest) -> add_offsets_to_txn_response.AddOffsetsToTxnResponse:
    """Version notes: PRODUCER_FENCED is answered from v2, INVALID_PRODUCER_EPOCH before; v4's TRANSACTION_ABORTABLE
    only if the coordinator returns it.

    Behaviour: WRITE on the transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED) and READ on the group
    (GROUP_AUTHORIZATION_FAILED), as KafkaApis; NOT_COORDINATOR for an id this broker does not coordinate; then
    TransactionCoordinator.add_partitions with the group's __consumer_offsets partition, answered once replicated.
    """
    coord = ctx.broker.transactions
    if not acl.transactional_id_allowed(ctx, acl.WRITE, req.transactional_id):
        code = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    elif not acl.group_allowed(ctx, acl.READ, req.group_id):
        code = ErrorCode.GROUP_AUTHORIZATION_FAILED
    elif (err := coord.coordinator_error(req.transactional_id)) is not None:
        code = err
    else:
        code = coord.add_partitions(req.transactional_id, req.producer_id, req.producer_epoch,
                                    {coord.group_partition(req.group_id)})
        if code == ErrorCode.NONE:
            code = await _replicated(ctx, req.transactional_id, code)
    return AddOffsetsR.AddOffsetsToTxnResponse(throttle_time_ms=0, error_code=_fenced(code, ctx.api_version, 2))


@api("EndTxn", 0, 4)
async def end_txn(ctx: RequestContext, req: end_txn_request.EndTxnRequest) -> end_txn_response.EndTxnResponse:
    """Version notes: PRODUCER_FENCED is answered from v2, INVALID_PRODUCER_EPOCH before. v5 (an epoch bump on every
    transaction, KIP-890 part 2) is not implemented.

    Behaviour: WRITE on the transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED), NOT_COORDINATOR for an id this
    broker does not coordinate, then TransactionCoordinator.end_transaction (commit or abort), whose code is answered
    once PrepareCommit/PrepareAbort is replicated; in a cluster the markers are written in the background after that,
    as Kafka.
    """
    if not acl.transactional_id_allowed(ctx, acl.WRITE, req.transactional_id):
        return EndTxnR.EndTxnResponse(throttle_time_ms=0, error_code=int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
    coord = ctx.broker.transactions
    code = coord.coordinator_error(req.transactional_id)
    if code is None:
        code = coord.end_transaction(req.transactional_id, req.producer_id, req.producer_epoch, bool(req.committed))
        if code == ErrorCode.NONE:      # PrepareCommit/PrepareAbort replicated; a cluster's markers follow
            code = await _replicated(ctx, req.transactional_id, code)
    return EndTxnR.EndTxnResponse(throttle_time_ms=0, error_code=_fenced(code, ctx.api_version, 2))


def _txn_offset_error(ctx, req) -> ErrorCode | None:
    """Kafka's checks before a transactional offset commit: the producer, then the group member (KIP-447)."""
    from kafkapy.groups.group import DEAD

    coord = ctx.broker.transactions
    tid = coord.by_producer.get(req.producer_id)
    m = coord.txns.get(tid) if tid is not None else None
    if not coord.coordinates(req.transactional_id):
        pass    # a cluster: the transaction coordinator is another broker; no check (Kafka before KIP-890)
    elif m is not None and m.transactional_id == req.transactional_id:
        if req.producer_epoch < m.producer_epoch:
            return ErrorCode.PRODUCER_FENCED
        if not coord.partition_in_transaction(req.producer_id, req.producer_epoch,
                                              *coord.group_partition(req.group_id)):
            return ErrorCode.INVALID_TXN_STATE
    elif m is None or m.transactional_id != req.transactional_id:
        return ErrorCode.INVALID_PRODUCER_ID_MAPPING
    g = ctx.broker.groups.groups.get(req.group_id)
    if g is None or ctx.api_version < 3:
        return None
    if g.is_(DEAD):
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    if g.is_static_member_fenced(req.member_id, req.group_instance_id):
        return ErrorCode.FENCED_INSTANCE_ID
    if req.member_id and not g.has(req.member_id):
        return ErrorCode.UNKNOWN_MEMBER_ID
    if req.generation_id >= 0 and req.generation_id != g.generation_id:
        return ErrorCode.ILLEGAL_GENERATION
    return None


@api("TxnOffsetCommit", 0, 4)
async def txn_offset_commit(ctx: RequestContext, req: txn_offset_commit_request.TxnOffsetCommitRequest) -> txn_offset_commit_response.TxnOffsetCommitResponse:
    """Version notes: v2+ committed_leader_epoch; v3+ member_id, generation_id and group_instance_id checked against the
    group (KIP-447: COORDINATOR_NOT_AVAILABLE for a dead group, FENCED_INSTANCE_ID, UNKNOWN_MEMBER_ID,
    ILLEGAL_GENERATION); PRODUCER_FENCED is answered from v3, INVALID_PRODUCER_EPOCH before.

    Behaviour: WRITE on the transactional id, READ on the group, then as KafkaApis READ on each topic (denied partitions
    TOPIC_AUTHORIZATION_FAILED and left out). The producer must own the transactional id (INVALID_PRODUCER_ID_MAPPING),
    not be fenced, and have the group's offsets partition in its transaction (INVALID_TXN_STATE), checked only when
    this broker also coordinates the transactional id (a cluster: no check otherwise, as Kafka before KIP-890); then
    GroupCoordinator.txn_offset_commit, answered once replicated to the ISR of the group's __consumer_offsets partition
    (GroupCoordinator.wait_replicated), whose offsets OffsetFetch sees only once the transaction commits.
    """
    from kafkapy.groups.group import OffsetAndMetadata, now_ms

    v = ctx.api_version
    results: dict[tuple[str, int], int] = {}
    denied = set()
    if not acl.transactional_id_allowed(ctx, acl.WRITE, req.transactional_id):
        err = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    elif not acl.group_allowed(ctx, acl.READ, req.group_id):
        err = ErrorCode.GROUP_AUTHORIZATION_FAILED
    else:   # KafkaApis: READ on each topic, unauthorized partitions are left out of the commit
        denied = {t.name for t in req.topics if not acl.topic_allowed(ctx, acl.READ, t.name)}
        err = ctx.broker.groups.coordinator_error(req.group_id) or _txn_offset_error(ctx, req)
    if err is not None:
        results = {(t.name, p.partition_index): _fenced(err, v, 3) for t in req.topics for p in t.partitions}
    else:
        now = now_ms()
        offsets = {(t.name, p.partition_index): OffsetAndMetadata(
            p.committed_offset, p.committed_leader_epoch if v >= 2 else -1, p.committed_metadata or "", now)
            for t in req.topics if t.name not in denied for p in t.partitions}
        if offsets:
            results = ctx.broker.groups.txn_offset_commit(req.group_id, req.producer_id,
                                                                   req.producer_epoch, offsets)
            if any(code == 0 for code in results.values()):     # Kafka appends them with acks=all as well
                failed = await ctx.broker.groups.wait_replicated(req.group_id, REPLICATION_TIMEOUT)
                if failed is not None:
                    results = {tp: int(failed) if code == 0 else code for tp, code in results.items()}
        results.update({(t.name, p.partition_index): int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
                        for t in req.topics if t.name in denied for p in t.partitions})
    topics: dict[str, list] = {}
    for t in req.topics:
        for p in t.partitions:
            topics.setdefault(t.name, []).append(TxnOffR.TxnOffsetCommitResponsePartition(
                partition_index=p.partition_index, error_code=int(results.get((t.name, p.partition_index), 0))))
    return TxnOffR.TxnOffsetCommitResponse(throttle_time_ms=0, topics=[
        TxnOffR.TxnOffsetCommitResponseTopic(name=n, partitions=ps) for n, ps in topics.items()])


@api("DescribeProducers", 0, 0)
async def describe_producers(ctx: RequestContext, req: describe_producers_request.DescribeProducersRequest) -> describe_producers_response.DescribeProducersResponse:
    """Version notes: only v0 exists.

    Behaviour: READ on the topic (TOPIC_AUTHORIZATION_FAILED with its message), as KafkaApis;
    UNKNOWN_TOPIC_OR_PARTITION; else the active producers of the partition's ProducerStateManager
    (current_txn_start_offset -1 outside a transaction).
    """
    broker = ctx.broker
    topics = []
    for t in req.topics:
        parts = []
        may = acl.topic_allowed(ctx, acl.READ, t.name)
        for p in t.partition_indexes:
            if not may:
                parts.append(DescProdR.PartitionResponse(partition_index=p,
                                                         error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                                                         error_message=acl.ERROR_MESSAGES[29], active_producers=[]))
                continue
            plog = broker.partition_log(t.name, p)
            if plog is None:
                parts.append(DescProdR.PartitionResponse(partition_index=p,
                                                         error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                                         error_message=None, active_producers=[]))
                continue
            active = []
            for e in plog.producer_state.producers.values():
                active.append(DescProdR.ProducerState(
                    producer_id=e.producer_id, producer_epoch=e.producer_epoch, last_sequence=e.last_seq,
                    last_timestamp=e.last_timestamp, coordinator_epoch=e.coordinator_epoch,
                    current_txn_start_offset=e.current_txn_first_offset if e.current_txn_first_offset is not None
                    else -1))
            parts.append(DescProdR.PartitionResponse(partition_index=p, error_code=0, error_message=None,
                                                     active_producers=active))
        topics.append(DescProdR.TopicResponse(name=t.name, partitions=parts))
    return DescProdR.DescribeProducersResponse(throttle_time_ms=0, topics=topics)


@api("DescribeTransactions", 0, 0)
async def describe_transactions(ctx: RequestContext, req: describe_transactions_request.DescribeTransactionsRequest) -> describe_transactions_response.DescribeTransactionsResponse:
    """Version notes: only v0 exists.

    Behaviour: as KafkaApis, DESCRIBE on each transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED), then the
    TransactionCoordinator's metadata: NOT_COORDINATOR for an id this broker does not coordinate,
    TRANSACTIONAL_ID_NOT_FOUND when unknown or Dead, else its state, timeout, start
    time, producer id and epoch, and the partitions of topics the principal may DESCRIBE.
    """
    coord = ctx.broker.transactions
    out = []
    for tid in req.transactional_ids:
        m = coord.txns.get(tid)
        if not acl.transactional_id_allowed(ctx, acl.DESCRIBE, tid):
            out.append(DescTxnR.TransactionState(error_code=ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                                                 transactional_id=tid, transaction_state="", transaction_timeout_ms=0,
                                                 transaction_start_time_ms=-1, producer_id=-1, producer_epoch=-1,
                                                 topics=[]))
            continue
        if (err := coord.coordinator_error(tid)) is not None:
            out.append(DescTxnR.TransactionState(error_code=int(err), transactional_id=tid, transaction_state="",
                                                 transaction_timeout_ms=0, transaction_start_time_ms=-1,
                                                 producer_id=-1, producer_epoch=-1, topics=[]))
            continue
        if m is None or m.state == TxnState.DEAD:
            out.append(DescTxnR.TransactionState(error_code=ErrorCode.TRANSACTIONAL_ID_NOT_FOUND, transactional_id=tid,
                                                 transaction_state="", transaction_timeout_ms=0,
                                                 transaction_start_time_ms=-1, producer_id=-1, producer_epoch=-1,
                                                 topics=[]))
            continue
        by_topic: dict[str, list[int]] = {}
        for topic, p in sorted(m.partitions):
            if acl.allowed_quietly(ctx, acl.DESCRIBE, acl.R_TOPIC, topic):   # only topics the principal may see
                by_topic.setdefault(topic, []).append(p)
        out.append(DescTxnR.TransactionState(
            error_code=0, transactional_id=tid, transaction_state=STATE_NAMES[m.state],
            transaction_timeout_ms=m.timeout_ms, transaction_start_time_ms=m.start_ms, producer_id=m.producer_id,
            producer_epoch=m.producer_epoch,
            topics=[DescTxnR.TopicData(topic=k, partitions=v) for k, v in by_topic.items()]))
    return DescTxnR.DescribeTransactionsResponse(throttle_time_ms=0, transaction_states=out)


@api("ListTransactions", 0, 1)
async def list_transactions(ctx: RequestContext, req: list_transactions_request.ListTransactionsRequest) -> list_transactions_response.ListTransactionsResponse:
    """Version notes: v1+ duration_filter (transactions running at least that long); v0 has none.

    Behaviour: the TransactionCoordinator's transactions (in a cluster, those of the ids this broker coordinates)
    filtered by state (unknown filters echoed in
    unknown_state_filters), producer id and duration, keeping silently only the transactional ids the principal may
    DESCRIBE, as KafkaApis. Never answers an error.
    """
    coord = ctx.broker.transactions
    known = set(STATE_NAMES.values())
    wanted = set(req.state_filters or [])
    unknown = sorted(wanted - known)
    pids = set(req.producer_id_filters or [])
    duration = req.duration_filter if ctx.api_version >= 1 else -1
    now = int(time.time() * 1000)
    out = []
    for m in coord.txns.values():
        name = STATE_NAMES[m.state]
        if wanted and name not in wanted:
            continue
        if pids and m.producer_id not in pids:
            continue
        if duration >= 0 and (m.start_ms < 0 or now - m.start_ms < duration):
            continue
        if not acl.allowed_quietly(ctx, acl.DESCRIBE, acl.R_TRANSACTIONAL_ID, m.transactional_id):
            continue
        out.append(ListTxnR.TransactionState(transactional_id=m.transactional_id, producer_id=m.producer_id,
                                             transaction_state=name))
    return ListTxnR.ListTransactionsResponse(throttle_time_ms=0, error_code=0, unknown_state_filters=unknown,
                                             transaction_states=out)
