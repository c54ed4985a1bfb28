"""Training: a resolved spec and its data in, metrics and model files out.

Imports only the job spec, the data, the re-balancing maths and the leaves beneath
them (service.spec, service.data, service.rebalance, service.architectures,
service.artifacts, service.errors): never the database, the artifact store or the
API (import-linter holds it to that, see .importlinter).
"""
