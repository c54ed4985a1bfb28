"""Exceptions of the client: one base class, one subclass per kind of failure.

Every error carries the HTTP status (None when no response came) and the server's
`detail` message (a problem details body's `detail`), so that a caller can show the
server's own words, and `retry_after`, the seconds the server asked to wait (429, 503).
"""

from __future__ import annotations


class CounterweightError(Exception):
    """Base class: `status` is the HTTP status or None, `detail` the server's message."""

    def __init__(
        self, detail: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status}: {detail}" if status is not None else detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class ConnectionFailed(CounterweightError):
    """No usable response after the bounded retries (refused, reset, timed out)."""


class WaitTimeout(CounterweightError):
    """`wait` gave up before the job ended; the job itself goes on."""


class ApiError(CounterweightError):
    """The server answered with an error status."""


class InvalidRequest(ApiError):
    """400 or 422: the request (a spec, inputs, a file) is not valid; `detail` says why."""


class Unauthorized(ApiError):
    """401 or 403: a missing or wrong API key (COUNTERWEIGHT_API_KEY)."""


class NotFound(ApiError):
    """404: no such job, sweep, dataset or artifact (or the server lacks the endpoint)."""


class Conflict(ApiError):
    """409: the job is not in a state that allows this, or an Idempotency-Key was reused."""


class TooLarge(ApiError):
    """413: an upload over the server's limits."""


class QueueFull(ApiError):
    """429: the tenant already has as many jobs queued as the server allows; retried
    only while its Retry-After fits in the retry policy's `max_wait`."""


class ServerError(ApiError):
    """5xx: still failing after the retries."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: InvalidRequest,
    429: QueueFull,
}


def error_for(status: int, detail: str, retry_after: float | None = None) -> ApiError:
    """The exception for an error response."""
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return kind(detail, status, retry_after)
