"""Idempotent and transactional producers: per-partition producer state (state.py), producer ids (ids.py), the
transaction coordinator (coordinator.py) and their wiring into the broker's hooks (manager.py, an on_start hook
that kafkapy.handlers.producers imports)."""
