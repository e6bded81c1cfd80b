"""Idempotent and transactional producers: producer ids (ids.py) and the transaction coordinator (coordinator.py),
which the broker builds as ``broker.transactions``. Per-partition producer state (sequences, epochs, open and
aborted transactions) belongs to each partition log: storage/producer_state.py, checked and updated inside the
log's one append."""
