"""Sans-io Kafka wire codec: bytes in, objects out. Imports nothing of kafkapy's."""

from wire.errors import DecodeError

__all__ = ["DecodeError"]
