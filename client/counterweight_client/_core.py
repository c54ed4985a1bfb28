"""What the sync and async clients share: configuration, the retry rules, error
mapping and the server-sent events parser. No I/O here."""

from __future__ import annotations

import json
import math
import os
import random
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from counterweight_client.errors import ConnectionFailed, error_for
from counterweight_client.models import Job, JobEvent

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL_EVENT_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
# A gateway's 502/504 may come after the server did the work, so they are retried
# only for idempotent calls; a 503, and a 429 that says when to come back
# (Retry-After), mean the request was turned away unprocessed.
RETRY_STATUSES_ALWAYS = frozenset({429, 503})
RETRY_STATUSES_IDEMPOTENT = frozenset({502, 504})
# The events endpoint sends a keep-alive comment every 15 s; silence this long is a
# dead connection, which `wait` then resumes with Last-Event-ID.
EVENTS_READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: attempt n (from 1) waits backoff * 2^(n-1), capped, with
    up to 10% jitter so that many clients do not retry in step. A 429 or 503 with
    Retry-After waits what the server says instead (plus the jitter). One call sleeps
    at most `max_wait` seconds over all its retries: a Retry-After that would take it
    past that is not waited for, and the error is raised at once, carrying
    `retry_after` for the caller to decide."""

    attempts: int = 4  # total tries, the first included
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_wait: float = 20.0

    def delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return base * (1 + random.random() / 10)

    def wait_for(self, response: httpx.Response, attempt: int, waited: float) -> float | None:
        """Seconds to sleep before retrying after `response`, a retryable status, or None
        when it is not worth retrying: a 429 that gives no Retry-After, or a wait that
        would take the call past `max_wait`."""
        told = retry_after(response)
        if told is None and response.status_code == 429:
            return None
        wait = self.delay(attempt) if told is None else told * (1 + random.random() / 10)
        return wait if waited + wait <= self.max_wait else None


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (RFC 9110: a number of seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, math.ceil(moment.timestamp() - time.time()))


def resolve_base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("COUNTERWEIGHT_URL") or DEFAULT_URL).rstrip("/")


def default_headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get("COUNTERWEIGHT_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def new_idempotency_key() -> str:
    """One per submit call: its retries carry the same key, so the server answers a
    retried submission with the job it already created instead of queueing another."""
    return uuid.uuid4().hex


def retry_transport_error(error: httpx.TransportError, idempotent: bool) -> bool:
    # A refused or timed-out connect never reached the server: always safe to retry.
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return True
    return idempotent


def retry_status(status: int, idempotent: bool) -> bool:
    return status in RETRY_STATUSES_ALWAYS or (idempotent and status in RETRY_STATUSES_IDEMPOTENT)


def connection_failed(url: str, error: httpx.TransportError, attempts: int) -> ConnectionFailed:
    kind = type(error).__name__
    return ConnectionFailed(f"cannot reach {url} after {attempts} attempt(s): {kind}: {error}")


def detail_of(body: bytes) -> str:
    """The server's `detail` message, or the body itself when it is not our JSON."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip() or "(empty response)"
    detail = parsed.get("detail", parsed) if isinstance(parsed, dict) else parsed
    return detail if isinstance(detail, str) else json.dumps(detail)


def raise_for_status(response: httpx.Response) -> None:
    """Raise the error class of an error response; the body must have been read."""
    if response.is_error:
        raise error_for(response.status_code, detail_of(response.content), retry_after(response))


def json_object(response: httpx.Response) -> dict[str, Any]:
    raise_for_status(response)
    body = response.json()
    if not isinstance(body, dict):
        raise error_for(response.status_code, f"expected a JSON object, got {body!r:.200}")
    return body


def as_inputs(inputs: Iterable[Any]) -> list[Any]:
    """Inputs as JSON-ready lists; arrays (numpy, torch) are converted by their own
    `tolist`, so that this package needs neither."""
    return [item.tolist() if hasattr(item, "tolist") else item for item in inputs]


def sweep_body(base: dict[str, Any], grid: dict[str, Sequence[Any]]) -> dict[str, Any]:
    return {"base": base, "grid": {path: list(values) for path, values in grid.items()}}


class EventParser:
    """Incremental text/event-stream parser (the WHATWG rules we need): `field: value`
    lines, `data` lines joined by newlines, a blank line ends an event, `:` comments
    (keep-alives) are skipped. `last_id` is what to send back as Last-Event-ID."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._type = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> Iterator[JobEvent]:
        if not line:
            if self._data:
                yield self._dispatch()
            self._type, self._data = "message", []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id" and "\0" not in value:
            self.last_id = value

    def _dispatch(self) -> JobEvent:
        data = json.loads("\n".join(self._data))
        seq = self.last_id
        return JobEvent(
            id=int(seq) if seq is not None and seq.isdigit() else None,
            type=self._type,
            data=data if isinstance(data, dict) else {"value": data},
        )


def ends_job(event: JobEvent) -> bool:
    return event.type == "status" and event.data.get("status") in TERMINAL_EVENT_STATUSES


def poll_events(previous: Job | None, job: Job) -> list[JobEvent]:
    """While polling, the `status` and `progress` events that the job's change implies."""
    events = []
    if previous is None or previous.status != job.status:
        events.append(JobEvent(None, "status", {"status": job.status, "error": job.error}))
    progress = job.raw.get("progress")
    if progress and (previous is None or previous.raw.get("progress") != progress):
        events.append(JobEvent(None, "progress", progress))
    return events
