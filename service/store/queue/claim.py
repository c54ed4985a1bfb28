"""Claiming the next job: one statement, safe with any number of workers.

Postgres: the sub-select locks the chosen row with FOR UPDATE SKIP LOCKED, so
concurrent workers pick different rows without waiting on each other. SQLite
ignores FOR UPDATE; there the transaction is BEGIN IMMEDIATE (see
service.store.engine), which serialises claimers on the database's write lock.

A worker claims only jobs it can run: those that need no more CUDA devices than it
has (service.store.queue.devices). A job it skips stays queued for another worker.
"""

from __future__ import annotations

from sqlalchemy import Float, Integer, String, bindparam, func, select, update
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
            Job.cuda_devices_needed <= bindparam("cuda_devices", type_=Integer()),
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
            # Where this attempt starts from: the sweeper forgives a lost attempt that
            # got further (service.store.queue.sweeper).
            attempt_start_epoch=Job.progress_epoch,
            waiting=None,  # its worker says again what it waits for, if anything
        )
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


# Built once: this runs in every idle worker's polling loop, and building the
# statement costs more than executing it.
CLAIM = _claim_statement()


def claim(
    session: Session, *, worker_id: str, lease_seconds: float, cuda_devices: int = 0
) -> Job | None:
    """Take the most urgent job that a worker with `cuda_devices` CUDA devices (0: a CPU
    worker) can run, and lease it to `worker_id`; None if there is none."""
    params = {"worker_id": worker_id, "lease_seconds": lease_seconds, "cuda_devices": cuda_devices}
    job = session.scalars(CLAIM, params).one_or_none()
    if job is not None:
        record_status(session, job)  # "running", with the attempt
    return job
