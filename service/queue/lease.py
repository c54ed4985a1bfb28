"""What a worker does with a job it holds: heartbeat, finish, fail, release.

Each update matches on (id, owner, attempt, status=running) and on a lease that
has not yet expired by the database's clock; zero rows updated means the worker
lost the job, and it is told so with LeaseLost instead of overwriting someone
else's run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, update
from sqlalchemy.orm import Session

from service.db.clock import db_now
from service.db.models import Job, JobStatus
from service.queue.errors import LeaseLost

MAX_BACKOFF_SECONDS = 300.0


@dataclass(frozen=True)
class Lease:
    """A worker's hold on one attempt of one job."""

    job_id: str
    owner: str
    attempt: int
    max_attempts: int

    @classmethod
    def of(cls, job: Job) -> Lease:
        assert job.owner is not None, "only a claimed job has a lease"
        return cls(job.id, job.owner, job.attempt, job.max_attempts)


def _held(lease: Lease) -> ColumnElement[bool]:
    return and_(
        Job.id == lease.job_id,
        Job.owner == lease.owner,
        Job.attempt == lease.attempt,
        Job.status == JobStatus.running,
        Job.lease_expires_at > db_now(),
    )


def _update_held(session: Session, lease: Lease, **values: Any) -> Job:
    statement = (
        update(Job)
        .where(_held(lease))
        .values(**values)
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    job = session.scalars(statement).one_or_none()
    if job is None:
        raise LeaseLost(lease.job_id, lease.owner, lease.attempt)
    return job


def heartbeat(
    session: Session, lease: Lease, *, lease_seconds: float, progress: dict[str, Any] | None
) -> bool:
    """Renew the lease and store progress; returns whether cancellation was requested."""
    values: dict[str, Any] = {"lease_expires_at": db_now(lease_seconds), "heartbeat_at": db_now()}
    if progress is not None:
        values["progress"] = progress
    return _update_held(session, lease, **values).cancel_requested


def finish(session: Session, lease: Lease, *, result: dict[str, Any]) -> Job:
    return _update_held(
        session,
        lease,
        status=JobStatus.succeeded,
        result=result,
        error=None,
        lease_expires_at=None,
        finished_at=db_now(),
    )


def mark_cancelled(session: Session, lease: Lease) -> Job:
    """The worker stopped a job whose cancellation was requested."""
    return _update_held(
        session,
        lease,
        status=JobStatus.cancelled,
        lease_expires_at=None,
        finished_at=db_now(),
    )


def fail(
    session: Session, lease: Lease, *, error: str, retryable: bool, backoff_seconds: float
) -> Job:
    """Fail this attempt: retry after a backoff while attempts remain, else fail the job."""
    if retryable and lease.attempt < lease.max_attempts:
        delay = min(backoff_seconds * 2 ** (lease.attempt - 1), MAX_BACKOFF_SECONDS)
        return _update_held(
            session,
            lease,
            status=JobStatus.queued,
            error=error,
            owner=None,
            lease_expires_at=None,
            run_after=db_now(delay),
        )
    if retryable:
        error = f"{error} (attempt {lease.attempt} of {lease.max_attempts}; no retries left)"
    return _update_held(
        session,
        lease,
        status=JobStatus.failed,
        error=error,
        lease_expires_at=None,
        finished_at=db_now(),
    )


def release(session: Session, lease: Lease) -> Job:
    """Give a job back to the queue untouched (worker shutting down): it resumes elsewhere."""
    return _update_held(session, lease, status=JobStatus.queued, owner=None, lease_expires_at=None)
