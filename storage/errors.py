"""Exceptions the storage layer raises; each carries the Kafka error code (the generated ``ErrorCode`` member) the
broker answers with."""

from __future__ import annotations

from wire.messages.error_codes import ErrorCode


class StorageError(Exception):
    """Base class. ``error_code`` is Kafka's error for it; ``error_name`` its name."""

    error_code: ErrorCode = ErrorCode.UNKNOWN_SERVER_ERROR
    # KIP-467: [(index of the record in its batch, message)] when particular records made the batch fail; the
    # Produce handler sends them as record_errors and str(error) as error_message (Kafka's RecordValidationException)
    record_errors: list[tuple[int, str | None]] = []

    @property
    def error_name(self) -> str:
        return self.error_code.name


class CorruptRecordError(StorageError):
    """A batch whose length does not fit the bytes given or whose CRC32C does not match."""

    error_code = ErrorCode.CORRUPT_MESSAGE


class InvalidRecordError(StorageError):
    """A well-formed batch Kafka would still refuse: magic != 2, inconsistent offsets/count, control batch from a
    client, producer id without a sequence; or, with ``record_errors``, some of its records (no key on a compacted
    topic)."""

    error_code = ErrorCode.INVALID_RECORD

    def __init__(self, message: str, record_errors: list[tuple[int, str | None]] | None = None):
        super().__init__(message)
        if record_errors:
            self.record_errors = list(record_errors)


class InvalidTimestampError(StorageError):
    """Records of a batch whose CreateTime timestamp is outside message.timestamp.before/after.max.ms, or a batch a
    producer marked LogAppendTime (``record_errors`` says which)."""

    error_code = ErrorCode.INVALID_TIMESTAMP

    def __init__(self, message: str, record_errors: list[tuple[int, str | None]] | None = None):
        super().__init__(message)
        if record_errors:
            self.record_errors = list(record_errors)


class RecordTooLargeError(StorageError):
    """One batch larger than ``max.message.bytes``."""

    error_code = ErrorCode.MESSAGE_TOO_LARGE


class RecordBatchTooLargeError(StorageError):
    """The whole append is larger than ``segment.bytes`` (it could never fit in a segment)."""

    error_code = ErrorCode.RECORD_LIST_TOO_LARGE


class OffsetOutOfRangeError(StorageError):
    """A read below the log start offset or above the log end offset."""

    error_code = ErrorCode.OFFSET_OUT_OF_RANGE

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int):
        super().__init__(f"offset {offset} is outside [{log_start_offset}, {log_end_offset}]")
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class KafkaStorageError(StorageError):
    """An OSError while writing or reading the log (disk full, I/O error, closed log)."""

    error_code = ErrorCode.KAFKA_STORAGE_ERROR


class UnexpectedAppendOffsetError(StorageError):
    """A replicated batch whose offset is below the follower's log end offset (Kafka's
    UnexpectedAppendOffsetException)."""

    error_code = ErrorCode.UNKNOWN_SERVER_ERROR


# the producer-state checks of a client append (storage/producer_state.py)

class OutOfOrderSequenceError(StorageError):
    error_code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class InvalidProducerEpochError(StorageError):
    error_code = ErrorCode.INVALID_PRODUCER_EPOCH


class InvalidTxnStateError(StorageError):
    error_code = ErrorCode.INVALID_TXN_STATE


class TransactionCoordinatorFencedError(StorageError):
    error_code = ErrorCode.TRANSACTION_COORDINATOR_FENCED
