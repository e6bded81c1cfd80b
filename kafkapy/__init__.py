"""kafkapy: a Kafka-compatible broker in Python.

``kafkapy.Broker`` is the embedding API (:class:`kafkapy.embedded.EmbeddedBroker`); the asyncio core it runs
is :class:`kafkapy.broker.Broker`. ``kafkapy.Cluster`` runs several brokers with replication in one process
(:mod:`kafkapy.cluster.embedded`). ``kafkapy.Tracer`` is the protocol tracer (:mod:`kafkapy.trace`).
"""

__all__ = ["Broker", "Cluster", "EmbeddedBroker", "Tracer"]


def __getattr__(name):   # imported on first use, so ``python -m kafkapy`` and the pytest plugin stay light
    if name in ("Broker", "EmbeddedBroker"):
        from kafkapy.embedded import EmbeddedBroker

        return EmbeddedBroker
    if name == "Cluster":
        from kafkapy.cluster.embedded import Cluster

        return Cluster
    if name == "Tracer":
        from kafkapy.trace import Tracer

        return Tracer
    raise AttributeError(f"module 'kafkapy' has no attribute {name!r}")
