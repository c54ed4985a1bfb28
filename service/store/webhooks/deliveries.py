"""Deliveries: leased to one dispatcher at a time, each attempt recorded, retried with
exponential backoff for a bounded time.

A claim leases due deliveries to a dispatcher (owner, a claim count in `attempts`, an
expiry by the database's clock), as the job queue leases jobs: FOR UPDATE SKIP LOCKED
on Postgres, SQLite's write lock. A delivery whose dispatcher died is due again once
its lease expired. Recording an attempt matches on (id, owner, attempts): a dispatcher
whose delivery was taken over records nothing. A delivery is held back while an earlier
event of its job, for the same target, is still owed: each target gets a job's events
in order, one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Float, Integer, String, and_, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from counterweight.service.store.clock import db_now
from counterweight.service.store.models import (
    DeliveryState,
    Job,
    JobEvent,
    WebhookDelivery,
    WebhookSecret,
    WebhookSubscription,
)

MAX_BACKOFF_SECONDS = 3600.0
KEPT_ATTEMPTS = 20  # the attempt log keeps the newest, with the count of all in `attempts`
OWED = (DeliveryState.pending, DeliveryState.delivering)


def retry_delay(attempt: int, base_seconds: float) -> float:
    """Wait after failed attempt n (1, 2, ...): base, 2 x base, 4 x base ..., at most an hour."""
    return min(MAX_BACKOFF_SECONDS, base_seconds * 2.0 ** (attempt - 1))


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to this dispatcher, with what sending it needs."""

    id: str
    attempt: int  # the claim's number: with the owner, what names this attempt
    url: str
    body: str
    secret: str | None  # None: nothing to sign with (the tenant has no notify secret)


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a status code (2xx: delivered), or an error before one."""

    status_code: int | None
    error: str | None
    response: str
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _due() -> Any:
    """Pending and due, or leased to a dispatcher whose lease expired (it died)."""
    return or_(
        and_(
            WebhookDelivery.state == DeliveryState.pending,
            WebhookDelivery.next_attempt_at <= db_now(),
        ),
        and_(
            WebhookDelivery.state == DeliveryState.delivering,
            WebhookDelivery.lease_expires_at <= db_now(),
        ),
    )


def work_waiting(session: Session) -> bool:
    """Whether an event waits to be fanned out or a delivery is due: two indexed reads,
    so that an idle dispatcher takes no write lock (SQLite has one for everyone)."""
    pending = select(JobEvent.id).where(JobEvent.webhook_pending).limit(1)
    due = select(WebhookDelivery.id).where(_due()).limit(1)
    return session.scalar(pending) is not None or session.scalar(due) is not None


def _claim_statement() -> Any:
    earlier = aliased(WebhookDelivery)
    held_back = exists().where(
        earlier.job_id == WebhookDelivery.job_id,
        earlier.target == WebhookDelivery.target,
        earlier.seq < WebhookDelivery.seq,
        earlier.state.in_(OWED),
    )
    due = (
        select(WebhookDelivery.id)
        .where(_due(), ~held_back)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(bindparam("claim_limit", type_=Integer()))
        .with_for_update(skip_locked=True)
    )
    return (
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(due.scalar_subquery()))
        .values(
            state=DeliveryState.delivering,
            owner=bindparam("claim_owner", type_=String()),
            attempts=WebhookDelivery.attempts + 1,
            lease_expires_at=db_now(bindparam("lease_seconds", type_=Float())),
        )
        .returning(WebhookDelivery)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


CLAIM = _claim_statement()


def claim_due(session: Session, *, owner: str, lease_seconds: float, limit: int) -> list[Claimed]:
    """Lease up to `limit` due deliveries to `owner`, with the secrets that sign them."""
    params = {"claim_owner": owner, "lease_seconds": lease_seconds, "claim_limit": limit}
    rows = session.scalars(CLAIM, params).all()
    if not rows:
        return []
    secrets = _secrets(session, rows)
    return [Claimed(row.id, row.attempts, row.url, row.body, secrets.get(row.id)) for row in rows]


def _secrets(session: Session, rows: Sequence[WebhookDelivery]) -> dict[str, str]:
    """Each delivery's signing secret: its subscription's, or its job tenant's."""
    found: dict[str, str] = {}
    by_subscription = {row.subscription_id: row.id for row in rows if row.subscription_id}
    for sub_id, secret in session.execute(
        select(WebhookSubscription.id, WebhookSubscription.secret).where(
            WebhookSubscription.id.in_(by_subscription)
        )
    ):
        found[by_subscription[sub_id]] = secret
    notify = [row for row in rows if row.subscription_id is None]
    if notify:
        query = (
            select(Job.id, WebhookSecret.secret)
            .join(WebhookSecret, WebhookSecret.tenant == Job.tenant)
            .where(Job.id.in_({row.job_id for row in notify}))
        )
        by_job = {job_id: secret for job_id, secret in session.execute(query)}
        found.update({row.id: by_job[row.job_id] for row in notify if row.job_id in by_job})
    return found


def record_attempt(
    session: Session,
    delivery_id: str,
    *,
    owner: str,
    attempt: int,
    outcome: Outcome,
    backoff_seconds: float,
    retry_seconds: float,
) -> WebhookDelivery | None:
    """Record an attempt: delivered, due again after the backoff, or failed for good once
    the next try would come later than `retry_seconds` after the event. None: the
    delivery is no longer this owner's (taken over, or cancelled), nothing recorded."""
    row = session.scalars(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.owner == owner,
            WebhookDelivery.attempts == attempt,
            WebhookDelivery.state == DeliveryState.delivering,
        )
        .with_for_update()
    ).one_or_none()
    if row is None:
        return None
    now = _utc(session.scalar(select(db_now())))
    entry = {
        "attempt": attempt,
        "at": now.isoformat(),
        "status_code": outcome.status_code,
        "error": outcome.error,
        "response": outcome.response,
        "duration_ms": outcome.duration_ms,
    }
    row.attempt_log = [*row.attempt_log, entry][-KEPT_ATTEMPTS:]
    row.owner = None
    row.lease_expires_at = None
    delay = retry_delay(attempt, backoff_seconds)
    if outcome.delivered:
        row.state = DeliveryState.delivered
        row.finished_at = now
    elif now + timedelta(seconds=delay) > _utc(row.created_at) + timedelta(seconds=retry_seconds):
        row.state = DeliveryState.failed
        row.finished_at = now
    else:
        row.state = DeliveryState.pending
        row.next_attempt_at = now + timedelta(seconds=delay)
    session.flush()
    return row


def job_deliveries(session: Session, job_id: str) -> Sequence[WebhookDelivery]:
    """A job's deliveries, in event order, then by target."""
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job_id)
        .order_by(WebhookDelivery.seq, WebhookDelivery.target)
    )
    return session.scalars(query).all()


def _utc(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
