"""One handler per api key, registered with the versions it implements.

ApiVersions' answer is computed from this registry, so the broker never advertises what it does not
handle. A handler is named after its API in snake case and typed with its generated classes, e.g.
``async def end_txn(ctx: RequestContext, req: end_txn_request.EndTxnRequest) -> end_txn_response.EndTxnResponse``;
``None`` means "send nothing" (Produce with acks=0). It translates the request, checks ACLs and version quirks,
and delegates to the owner of the state (a partition, a coordinator, the broker); API_TABLE below says which, and
tests/test_handler_table.py keeps that table true.

A handler that may hold its request for a while (a long poll) says so with ``max_wait``: a function of the
request giving the longest it may wait in ms (Fetch: ``max_wait_ms``). The server watches the client of such a
request and gives up on it when the client goes away, without knowing the api.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Awaitable, Callable

from wire import protocol


@dataclass(frozen=True)
class Handler:
    api_key: int
    min_version: int
    max_version: int
    fn: Callable[..., Awaitable[object]]
    max_wait: Callable[[object], int] | None = None    # request -> ms the handler may wait (long polls)

    @property
    def name(self) -> str:
        return protocol.API[self.api_key].name


HANDLERS: dict[int, Handler] = {}


def api(name: str, min_version: int, max_version: int, max_wait: Callable[[object], int] | None = None):
    """Register ``fn`` as the handler of the api called ``name`` (Kafka's name, e.g. "Produce"); ``max_wait`` for
    a handler that long-polls (see the module's docstring)."""
    spec = protocol.API_BY_NAME[name]
    if not spec.min_version <= min_version <= max_version <= spec.max_version:
        raise ValueError(f"{name}: versions {min_version}-{max_version} outside the schema's range")

    def register(fn):
        expected = spec.request_module[:-len("_request")]
        if fn.__name__ != expected:
            raise ValueError(f"the handler of {name} must be called {expected}, not {fn.__name__}")
        if spec.key in HANDLERS:
            raise ValueError(f"two handlers for {name}")
        HANDLERS[spec.key] = Handler(spec.key, min_version, max_version, fn, max_wait)
        return fn
    return register


# every module in this package that defines handlers
MODULES = [
    "api_versions", "metadata", "produce", "fetch", "list_offsets", "topics", "configs", "cluster",
    "records_admin", "groups", "offsets", "producers", "txn_markers", "sasl", "scram", "acls",
]


class HandlerImportError(RuntimeError):
    """A handler module failed to import: the broker must not start without its APIs."""


def load_all() -> dict[int, Handler]:
    for m in MODULES:
        try:
            importlib.import_module(f"kafkapy.handlers.{m}")
        except Exception as e:
            raise HandlerImportError(f"handler module kafkapy.handlers.{m} failed to import ({e.__class__.__name__}: "
                                     f"{e}); the broker would lack its APIs, so it does not start") from e
    return HANDLERS


# API -> handler (module.function in kafkapy/handlers) -> what it delegates to -> tests that exercise it through a
# client or raw requests. Checked by tests/test_handler_table.py: every registered API has exactly one row, the
# handler is the registered function, every owner resolves to a real attribute, every test exists.
API_TABLE = """
| api                          | handler                                | delegates to                                          | tests |
|------------------------------|----------------------------------------|-------------------------------------------------------|-------|
| Produce                      | produce.produce                        | kafkapy.partition.Partition.append                    | compat_tests/test_python_clients.py::test_confluent_produce_consume, compat_tests/test_record_errors.py |
| Fetch                        | fetch.fetch                            | storage.log.PartitionLog.read                         | compat_tests/test_python_clients.py::test_confluent_produce_consume, compat_tests/test_limits.py |
| ListOffsets                  | list_offsets.list_offsets              | storage.log.PartitionLog.offset_for_timestamp         | compat_tests/test_java_client.py::test_list_offsets, compat_tests/test_kcat.py::test_query_offset_by_timestamp |
| Metadata                     | metadata.metadata                      | kafkapy.broker.Broker.create_topic_in_cluster         | compat_tests/test_kcat.py::test_metadata, compat_tests/test_bad_input.py::test_bad_topic_names |
| OffsetCommit                 | offsets.offset_commit                  | kafkapy.groups.coordinator.GroupCoordinator.commit_offsets | compat_tests/test_consumer_groups.py::test_confluent_consume_commit_resume_after_broker_restart, tests/test_group_coordinator.py::test_commit_fencing_rules |
| OffsetFetch                  | offsets.offset_fetch                   | kafkapy.groups.coordinator.GroupCoordinator.fetch_offsets | compat_tests/test_consumer_groups.py::test_confluent_consume_commit_resume_after_broker_restart |
| FindCoordinator              | groups.find_coordinator                | kafkapy.groups.coordinator.GroupCoordinator.ensure_offsets_topic | compat_tests/test_consumer_groups.py::test_confluent_two_consumers_split_then_one_leaves |
| JoinGroup                    | groups.join_group                      | kafkapy.groups.coordinator.GroupCoordinator.join_group | tests/test_group_coordinator.py::test_join_sync_heartbeat_and_second_member_rebalance, compat_tests/test_consumer_groups.py::test_confluent_three_consumers_split_six_partitions |
| Heartbeat                    | groups.heartbeat                       | kafkapy.groups.coordinator.GroupCoordinator.heartbeat | tests/test_group_coordinator.py::test_heartbeats_keep_member_alive |
| LeaveGroup                   | groups.leave_group                     | kafkapy.groups.coordinator.GroupCoordinator.leave_group | compat_tests/test_consumer_groups.py::test_confluent_two_consumers_split_then_one_leaves |
| SyncGroup                    | groups.sync_group                      | kafkapy.groups.coordinator.GroupCoordinator.sync_group | tests/test_group_coordinator.py::test_join_sync_heartbeat_and_second_member_rebalance |
| DescribeGroups               | groups.describe_groups                 | kafkapy.groups.coordinator.GroupCoordinator.describe_group | compat_tests/test_consumer_groups.py::test_kafka_python_group_and_admin |
| ListGroups                   | groups.list_groups                     | kafkapy.groups.coordinator.GroupCoordinator.list_groups | compat_tests/test_consumer_groups.py::test_kafka_python_group_and_admin |
| SaslHandshake                | sasl.sasl_handshake                    | kafkapy.sasl.new_exchange                              | compat_tests/test_security.py::test_sasl_plain_confluent, compat_tests/test_security.py::test_legacy_v0_handshake_framing |
| ApiVersions                  | api_versions.api_versions              | kafkapy.broker.Broker.api_versions_response           | compat_tests/test_bad_input.py::test_api_versions_unknown_version_gets_v0_answer_with_our_versions |
| CreateTopics                 | topics.create_topics                   | kafkapy.broker.Broker.create_topic_in_cluster         | compat_tests/test_java_client.py::test_admin_create_describe_delete, compat_tests/test_bad_input.py::test_topic_collision_and_replication_factor |
| DeleteTopics                 | topics.delete_topics                   | kafkapy.broker.Broker.delete_topic                    | compat_tests/test_java_client.py::test_delete_topic_then_recreate |
| DeleteRecords                | records_admin.delete_records           | storage.log.PartitionLog.delete_records_before        | tests/test_admin_handlers.py::test_delete_records, compat_tests/test_admin_clients.py::test_confluent_delete_records_partitions_describe_topics |
| InitProducerId               | producers.init_producer_id             | kafkapy.producers.coordinator.TransactionCoordinator.init_producer_id | compat_tests/test_idempotent_transactional.py::test_confluent_idempotent_producer_stores_each_record_once |
| OffsetForLeaderEpoch         | cluster.offset_for_leader_epoch        | storage.log.PartitionLog.end_offset_for_epoch         | tests/test_admin_handlers.py::test_offset_for_leader_epoch |
| AddPartitionsToTxn           | producers.add_partitions_to_txn        | kafkapy.producers.coordinator.TransactionCoordinator.add_partitions | compat_tests/test_idempotent_transactional.py::test_confluent_transactions_commit_abort_and_isolation |
| AddOffsetsToTxn              | producers.add_offsets_to_txn           | kafkapy.producers.coordinator.TransactionCoordinator.add_partitions | compat_tests/test_idempotent_transactional.py::test_confluent_consume_transform_produce_with_send_offsets |
| EndTxn                       | producers.end_txn                      | kafkapy.producers.coordinator.TransactionCoordinator.end_transaction | compat_tests/test_idempotent_transactional.py::test_confluent_transactions_commit_abort_and_isolation |
| WriteTxnMarkers              | txn_markers.write_txn_markers          | kafkapy.producers.coordinator.append_marker           | compat_tests/test_replication_txn.py::test_write_txn_markers_raw, compat_tests/test_replication_txn.py::test_commit_and_abort_across_partitions_led_by_different_brokers |
| TxnOffsetCommit              | producers.txn_offset_commit            | kafkapy.groups.coordinator.GroupCoordinator.txn_offset_commit | compat_tests/test_idempotent_transactional.py::test_confluent_consume_transform_produce_with_send_offsets, tests/test_append_path.py::test_txn_offset_commit_holds_back_the_offsets_partition_until_the_marker |
| DescribeAcls                 | acls.describe_acls                     | kafkapy.acl.Authorizer.bindings                       | compat_tests/test_security.py::test_acl_matrix |
| CreateAcls                   | acls.create_acls                       | kafkapy.acl.Authorizer.add                            | compat_tests/test_security.py::test_acl_matrix |
| DeleteAcls                   | acls.delete_acls                       | kafkapy.acl.Authorizer.remove                         | compat_tests/test_security.py::test_acl_matrix |
| DescribeConfigs              | configs.describe_configs               | kafkapy.broker.Broker.effective_topic_configs         | tests/test_admin_handlers.py::test_describe_topic_configs_every_version, compat_tests/test_admin_clients.py::test_confluent_describe_and_alter_configs |
| AlterConfigs                 | configs.alter_configs                  | kafkapy.broker.Broker.set_topic_configs               | tests/test_admin_handlers.py::test_alter_configs_replaces_the_set, compat_tests/test_admin_clients.py::test_confluent_describe_and_alter_configs |
| DescribeLogDirs              | cluster.describe_log_dirs              | storage.manager.LogManager.get                        | tests/test_admin_handlers.py::test_describe_log_dirs_disk |
| SaslAuthenticate             | sasl.sasl_authenticate                 | kafkapy.sasl.new_exchange                              | compat_tests/test_security.py::test_sasl_ssl_scram_sha512_confluent, compat_tests/test_security.py::test_reauthentication |
| CreatePartitions             | topics.create_partitions               | kafkapy.broker.Broker.add_partitions                  | compat_tests/test_admin_clients.py::test_confluent_delete_records_partitions_describe_topics |
| DeleteGroups                 | groups.delete_groups                   | kafkapy.groups.coordinator.GroupCoordinator.delete_groups | compat_tests/test_consumer_groups.py::test_kafka_python_group_and_admin |
| IncrementalAlterConfigs      | configs.incremental_alter_configs      | kafkapy.broker.Broker.set_topic_configs               | tests/test_admin_handlers.py::test_incremental_alter_configs, compat_tests/test_admin_clients.py::test_confluent_incremental_alter_and_effect |
| OffsetDelete                 | offsets.offset_delete                  | kafkapy.groups.coordinator.GroupCoordinator.delete_offsets | tests/test_group_coordinator.py |
| DescribeUserScramCredentials | scram.describe_user_scram_credentials  | kafkapy.sasl.ScramStore.get                           | compat_tests/test_security.py::test_scram_credentials_admin |
| AlterUserScramCredentials    | scram.alter_user_scram_credentials     | kafkapy.sasl.ScramStore.put                           | compat_tests/test_security.py::test_scram_credentials_admin |
| DescribeCluster              | cluster.describe_cluster               | kafkapy.broker.Broker.advertised_for                  | tests/test_admin_handlers.py::test_describe_cluster |
| DescribeProducers            | producers.describe_producers           | storage.producer_state.ProducerStateManager.producers | compat_tests/test_idempotent_transactional.py::test_java_admin_lists_and_describes_transactions_and_producers |
| DescribeTransactions         | producers.describe_transactions        | kafkapy.producers.coordinator.TransactionCoordinator.txns | compat_tests/test_idempotent_transactional.py::test_java_admin_lists_and_describes_transactions_and_producers |
| ListTransactions             | producers.list_transactions            | kafkapy.producers.coordinator.TransactionCoordinator.txns | compat_tests/test_idempotent_transactional.py::test_java_admin_lists_and_describes_transactions_and_producers |
"""
