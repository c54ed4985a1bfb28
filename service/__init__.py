"""Counterweight's service: the job spec and everything but training.

Folders are concerns, and imports point down this list (import-linter enforces it,
see .importlinter): cli -> api -> store, storage -> rebalance -> data -> spec,
settings, errors and the other leaves. The worker (workers/) builds on store,
storage, data and rebalance; nothing here imports it but the predict path.
"""
