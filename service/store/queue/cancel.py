"""Cancelling: a queued job at once, a running one through its worker.

A cancel accepted for a job that has not ended always ends it `cancelled` (DESIGN.md
section 2): the worker may be training, evaluating or publishing its results when the
request comes, and whatever it then records instead (success, a retry, a release on
shutdown, a failure) is recorded through `settle_unless_cancelled`, which ends the job
`cancelled` if the flag is set. Both take the job's row lock, so they run one after the
other: a cancel that commits first wins, and one that comes after the job's success
committed finds it ended (a conflict).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from counterweight.service.errors import JobNotFound, JobStateConflict
from counterweight.service.store.clock import db_now
from counterweight.service.store.models import Job, JobStatus
from counterweight.service.store.queue.events import record_status
from counterweight.service.store.queue.lease import Lease, mark_cancelled


def request_cancel(session: Session, job_id: str, tenant: str | None = None) -> Job:
    """Cancel a queued job now, or flag a running one; its worker sees the flag at its
    next heartbeat and ends the job `cancelled`. A finished job is a conflict. With
    `tenant`, another tenant's job is JobNotFound (service.store.queue.inspect.get_job)."""
    # Locked (Postgres row lock; SQLite's write lock is held already), so the state
    # read here is still the state when the update lands.
    job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one_or_none()
    if job is None or job.deleted_at is not None or (tenant is not None and job.tenant != tenant):
        raise JobNotFound(job_id)
    if job.status.is_terminal:
        raise JobStateConflict(f"job {job_id} already ended with status {job.status.value!r}")
    job.cancel_requested = True
    if job.status == JobStatus.queued:
        job.status = JobStatus.cancelled
        job.finished_at = db_now()  # evaluated by the database at flush
    session.flush()
    session.refresh(job)
    if job.status == JobStatus.cancelled:
        record_status(session, job)  # a running job's end is recorded by its worker
    return job


def settle_unless_cancelled(
    session: Session, lease: Lease, action: Callable[..., Job], **kwargs: Any
) -> Job:
    """Record a worker's outcome for its job (`action`: lease.finish, fail, release ...),
    unless a cancel was requested: then the job ends `cancelled` instead. The flag is read
    under the row lock that request_cancel takes, so no cancel slips in between."""
    requested = session.scalar(
        select(Job.cancel_requested).where(Job.id == lease.job_id).with_for_update()
    )
    if requested:
        return mark_cancelled(session, lease)
    return action(session, lease, **kwargs)
