"""Every error a client can cause, or a job can meet, under one base class.

A domain error's message is written for the person who sent the request: it names
the field or the object at fault and says what was expected. The API maps each
class to an HTTP status in one place (service.api.app.ERROR_STATUS); the worker
reads DatasetError as "retrying will not help". Errors that are also ValueError or
LookupError stay so, for callers that catch those.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class: carries a message fit to show a client."""


# --- the data a job names (service.data) ------------------------------------------------


class DatasetError(DomainError, ValueError):
    """The data the client asked for is wrong or missing; retrying will not help (422).
    Messages start with the spec field they concern ("dataset.path: ...")."""


class DatasetNotFound(DomainError, LookupError):
    """No uploaded dataset with this id (404)."""


class DatasetInUse(DomainError):
    """An upload that queued or running jobs need cannot be deleted (409)."""


class UploadTooLarge(DomainError):
    """An upload, or its arrays once decompressed, exceed a configured cap (413)."""


# --- what one request may ask (service.api.admission, service.store.queue) --------------


class LimitExceeded(DomainError, ValueError):
    """A job asks for more than a configured cap allows (422)."""


class QueueFull(DomainError):
    """The tenant has as many jobs queued as it may (429)."""


# --- jobs and the queue (service.store.queue) -------------------------------------------


class JobNotFound(DomainError, LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class JobStateConflict(DomainError):
    """The request does not fit the job's current state (cancelling a finished job) (409)."""


class IdempotencyConflict(DomainError):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different job spec; "
            "use a new key for a new job"
        )


class BadCursor(DomainError, ValueError):
    """A `cursor` this API did not return (422)."""


class LeaseLost(DomainError):
    """The worker no longer owns the job: its lease expired or the job was re-queued."""

    def __init__(self, job_id: str, owner: str, attempt: int) -> None:
        super().__init__(f"worker {owner} no longer holds job {job_id} (attempt {attempt})")


class DatabaseUnavailable(DomainError):
    """The database cannot be written or reached: read-only, its file deleted, the disk
    full or failing, the server down (503); at start-up, a SQLite file missing from a
    home that has held one (service.store.sqlite_file). The message says which."""


# --- sweeps, keys -----------------------------------------------------------------------


class SweepError(DomainError, ValueError):
    """A sweep that cannot be queued as asked (422)."""


class SweepNotFound(DomainError, LookupError):
    def __init__(self, sweep_id: str) -> None:
        super().__init__(f"no sweep with id {sweep_id!r}")


class KeyNotFound(DomainError, LookupError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id!r}")


# --- webhooks (service.webhooks, service.store.webhooks) ---------------------------------


class WebhookError(DomainError, ValueError):
    """A webhook that cannot be set up as asked (422); the message names the field."""


class WebhookAddressRefused(WebhookError):
    """A webhook URL whose host is, or resolves to, an address deliveries may not reach
    (loopback, link-local, private ...) outside COUNTERWEIGHT_WEBHOOK_ALLOWED_NETWORKS."""


class WebhookNotFound(DomainError, LookupError):
    def __init__(self, subscription_id: str) -> None:
        super().__init__(f"no webhook subscription with id {subscription_id!r}")


# --- results: the artifact store and predict --------------------------------------------


class StorageError(DomainError, RuntimeError):
    """The artifact store could not be read or written (server down, no permission) (503)."""


class StoreUnavailable(StorageError):
    """The artifact store did not answer: connection refused, a timeout, a server error
    (5xx), its directory unreadable (503). An outage, not the job's fault: a worker
    waits for the store rather than fail the job (DESIGN.md section 2). Anything else
    (no such bucket, no permission) stays a plain StorageError."""


class StorageRetryLater(StorageError):
    """The API does not wait for the artifact store now: as many calls to it are in flight
    as COUNTERWEIGHT_STORAGE_MAX_CALLS allows, one did not answer within
    COUNTERWEIGHT_STORAGE_WAIT_SECONDS, or it failed (503 with Retry-After). The message
    says what was asked; where the store is (endpoint, bucket) stays in the server's log."""

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class ArtifactMissing(DomainError, LookupError):
    """A finished job's file is not in the artifact store (deleted, or never uploaded) (404)."""


class PredictInputError(DomainError, ValueError):
    """An input cannot be used with the job's model: shape, values, encoding (422)."""


class TooManyInputs(DomainError, ValueError):
    """More inputs in one request than COUNTERWEIGHT_MAX_PREDICT_INPUTS (413)."""


class NotAClassifier(DomainError, ValueError):
    """A model card of a tagger where a classifier is needed: predict (422)."""
