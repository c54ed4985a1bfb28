"""Counterweight's service: the job spec and everything but training.

Installed as counterweight.service. Folders are concerns, and imports point down
this list (import-linter holds them to it: pyproject.toml, [tool.importlinter]):
cli -> api -> store, storage -> rebalance -> data, architectures -> spec, settings,
errors, artifacts, logs. The worker (workers/) builds on store, storage, data and
rebalance; nothing here imports it but the predict path (service/api/predict.py).
"""
