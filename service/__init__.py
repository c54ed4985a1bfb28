"""Counterweight: training as a service for class-imbalanced learning.

`service.spec`, `service.db`, `service.queue` and `service.datasets` are shared
by the API (`service.api`) and the worker (`workers`); the worker never imports
`service.api`.
"""
