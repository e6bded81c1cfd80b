"""kafkapy: a Kafka-compatible broker in Python."""
