"""Claiming the next job: one statement, safe with any number of workers.

Postgres: the sub-select locks the chosen row with FOR UPDATE SKIP LOCKED, so
concurrent workers pick different rows without waiting on each other. SQLite
ignores FOR UPDATE; there the transaction is BEGIN IMMEDIATE (see
service.store.engine), which serialises claimers on the database's write lock.
"""

from __future__ import annotations

from sqlalchemy import Float, String, bindparam, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase

from counterweight.service.store.clock import db_now
from counterweight.service.store.models import Job, JobStatus
from counterweight.service.store.queue.events import record_status


def _claim_statement() -> UpdateBase:
    next_id = (
        select(Job.id)
        .where(
            Job.status == JobStatus.queued,
            Job.run_after <= db_now(),
            Job.cancel_requested.is_(False),
        )
        .order_by(Job.priority.desc(), Job.created_at, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return (
        update(Job)
        .where(Job.id == next_id, Job.status == JobStatus.queued)
        .values(
            status=JobStatus.running,
            owner=bindparam("worker_id", type_=String()),
            attempt=Job.attempt + 1,
            lease_expires_at=db_now(bindparam("lease_seconds", type_=Float())),
            heartbeat_at=db_now(),
            started_at=func.coalesce(Job.started_at, db_now()),
        )
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


# Built once: this runs in every idle worker's polling loop, and building the
# statement costs more than executing it.
CLAIM = _claim_statement()


def claim(session: Session, *, worker_id: str, lease_seconds: float) -> Job | None:
    """Take the most urgent runnable job and lease it to `worker_id`, or None."""
    params = {"worker_id": worker_id, "lease_seconds": lease_seconds}
    job = session.scalars(CLAIM, params).one_or_none()
    if job is not None:
        record_status(session, job)  # "running", with the attempt
    return job
