"""Cancelling: a queued job at once, a running one through its worker."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from counterweight.service.errors import JobNotFound, JobStateConflict
from counterweight.service.store.clock import db_now
from counterweight.service.store.models import Job, JobStatus
from counterweight.service.store.queue.events import record_status


def request_cancel(session: Session, job_id: str, tenant: str | None = None) -> Job:
    """Cancel a queued job now, or flag a running one; its worker sees the flag at its
    next heartbeat and ends the job `cancelled`. A finished job is a conflict. With
    `tenant`, another tenant's job is JobNotFound (service.store.queue.inspect.get_job)."""
    # Locked (Postgres row lock; SQLite's write lock is held already), so the state
    # read here is still the state when the update lands.
    job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one_or_none()
    if job is None or (tenant is not None and job.tenant != tenant):
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
