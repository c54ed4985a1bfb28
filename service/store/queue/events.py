"""A job's event stream: what GET /v1/jobs/{id}/events replays and follows.

Events are rows of `job_events`, numbered per job 1, 2, 3 ... by `seq`. Every
event is written in the same transaction as an UPDATE of its job's row, and that
is what keeps `seq` gapless and in commit order: the UPDATE takes the job's row
lock (Postgres) or the database's write lock (SQLite, BEGIN IMMEDIATE), so two
writers of one job's events run one after the other, and the second computes
max(seq) + 1 only after the first committed. A client that has seen seq n has
seen exactly the events 1..n, which is what makes Last-Event-ID resumption exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import JSON, Boolean, String, bindparam, func, insert, select
from sqlalchemy.orm import Session

from counterweight.service.store.models import Job, JobEvent, JobStatus

EventType = Literal["status", "progress", "epoch"]
# The largest seq there can be: job_events.seq is an INTEGER, 32 bits on Postgres. A
# cursor beyond it is refused where a client gives one (a 422), not bound into a query,
# where Postgres would fail on it (and SQLite past 64 bits) after the stream had begun.
MAX_SEQ = 2**31 - 1
TERMINAL_STATUSES = frozenset(s.value for s in JobStatus if s.is_terminal)

_NEXT_SEQ = (
    select(func.coalesce(func.max(JobEvent.seq), 0) + 1)
    .where(JobEvent.job_id == bindparam("event_job_id", type_=String()))
    .scalar_subquery()
)
# Built once: heartbeats run this for every running job every few seconds. One
# statement, so the max(seq) it reads and the row it writes cannot drift apart.
_APPEND = insert(JobEvent).values(
    job_id=bindparam("event_job_id", type_=String()),
    seq=_NEXT_SEQ,
    type=bindparam("event_type", type_=String()),
    data=bindparam("event_data", type_=JSON()),
    webhook_pending=bindparam("event_webhook", type_=Boolean()),
)
# The events a webhook may ask for (service.store.webhooks.outbox): these enter the outbox.
WEBHOOK_EVENT_TYPES = frozenset({"status", "epoch"})


def record_event(session: Session, job_id: str, type: EventType, data: dict[str, Any]) -> None:
    """Append an event to a job's stream, numbered max(seq) + 1.

    Call it only inside the transaction that also UPDATEs the job's row (after that
    UPDATE): its lock is what serialises writers per job (see the module docstring).
    A status or epoch event enters the webhook outbox in the same insert, so that an
    event committed is an event some dispatcher will deliver, whatever crashes next.
    """
    params = {
        "event_job_id": job_id,
        "event_type": type,
        "event_data": data,
        "event_webhook": type in WEBHOOK_EVENT_TYPES,
    }
    session.execute(_APPEND, params)


def record_status(session: Session, job: Job) -> None:
    """A "status" event for the state `job` (as just written) is in."""
    record_status_of(session, job.id, job.status, attempt=job.attempt, error=job.error)


def record_status_of(
    session: Session, job_id: str, status: JobStatus, *, attempt: int, error: str | None
) -> None:
    data = {"status": status.value, "attempt": attempt, "error": error}
    record_event(session, job_id, "status", data)


def events_after(session: Session, job_id: str, seq: int, limit: int) -> Sequence[JobEvent]:
    """Up to `limit` events of a job with seq > `seq`, oldest first."""
    statement = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.seq > seq)
        .order_by(JobEvent.seq)
        .limit(limit)
    )
    return session.scalars(statement).all()


def events_since_id(session: Session, event_id: int, limit: int) -> Sequence[JobEvent]:
    """Up to `limit` events of any job with id > `event_id`, in id order (the API's poller)."""
    statement = select(JobEvent).where(JobEvent.id > event_id).order_by(JobEvent.id).limit(limit)
    return session.scalars(statement).all()


def newest_event_id(session: Session) -> int:
    """The highest event id so far (0 if none): where a new poller starts."""
    return session.scalar(select(func.coalesce(func.max(JobEvent.id), 0))) or 0


def is_terminal(event_type: str, data: dict[str, Any]) -> bool:
    """Whether this event ends its job's stream."""
    return event_type == "status" and data.get("status") in TERMINAL_STATUSES
