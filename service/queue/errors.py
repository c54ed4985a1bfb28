"""Domain errors of the queue; the API maps them to HTTP statuses in one place."""

from __future__ import annotations


class QueueError(Exception):
    """Base class: carries a message fit to show a client."""


class JobNotFound(QueueError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class JobStateConflict(QueueError):
    """The request does not fit the job's current state (e.g. cancelling a finished job)."""


class IdempotencyConflict(QueueError):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different job spec; "
            "use a new key for a new job"
        )


class LeaseLost(QueueError):
    """The worker no longer owns the job: its lease expired or the job was re-queued."""

    def __init__(self, job_id: str, owner: str, attempt: int) -> None:
        super().__init__(f"worker {owner} no longer holds job {job_id} (attempt {attempt})")
