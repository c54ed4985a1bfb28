"""The worker registry: who is working, on which host and device, on which job.

A worker registers at start with a fresh id (also the `owner` of the jobs it
leases) and the CUDA devices it has (what it may claim: service.store.queue.devices),
renews `heartbeat_at` while it runs, and sets `stopped_at` when it exits
cleanly. One that dies without a word (SIGKILL, a lost host) goes stale: it is
live only while its heartbeat is younger than the bound the caller gives, the
lease length, since a worker silent that long has lost its job anyway.

Every tenant sees every worker, but a worker's current job id only when the job is
the tenant's own (an admin sees all): another tenant's ids stay as unseen as their jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, case, null, select, update
from sqlalchemy.orm import Session

from counterweight.service.store.clock import db_now
from counterweight.service.store.models import Job, WorkerRecord


def register(
    session: Session,
    worker_id: str,
    *,
    hostname: str,
    pid: int,
    device: str,
    cuda_devices: int = 0,
) -> WorkerRecord:
    worker = WorkerRecord(
        id=worker_id,
        hostname=hostname[:255],
        pid=pid,
        device=device[:128],
        cuda_devices=cuda_devices,
    )
    session.add(worker)
    session.flush()
    session.refresh(worker)  # started_at and heartbeat_at are the database's
    return worker


def beat(session: Session, worker_id: str, current_job_id: str | None) -> None:
    """The worker is alive and running `current_job_id` (None: idle)."""
    session.execute(
        update(WorkerRecord)
        .where(WorkerRecord.id == worker_id)
        .values(heartbeat_at=db_now(), current_job_id=current_job_id)
    )


def mark_stopped(session: Session, worker_id: str) -> None:
    session.execute(
        update(WorkerRecord)
        .where(WorkerRecord.id == worker_id)
        .values(stopped_at=db_now(), current_job_id=None)
    )


def is_live(stale_after_seconds: float | ColumnElement[float]) -> ColumnElement[bool]:
    """What makes a worker live: not stopped, last heartbeat younger than the bound
    (a number, or a bound parameter for a statement built once)."""
    return and_(
        WorkerRecord.stopped_at.is_(None),
        WorkerRecord.heartbeat_at > db_now(-stale_after_seconds),
    )


def live_workers(
    session: Session, *, stale_after_seconds: float, tenant: str | None
) -> Sequence[Row[*tuple[Any, ...]]]:
    """Live workers (is_live), by host name, then start time: rows of id, hostname,
    pid, device, cuda_devices, current_job_id, started_at, heartbeat_at.
    `current_job_id` is null unless the job is `tenant`'s (None: an admin, who sees
    every job)."""
    current_job_id: ColumnElement[str | None] = WorkerRecord.current_job_id.expression
    if tenant is not None:
        mine = and_(Job.id == WorkerRecord.current_job_id, Job.tenant == tenant)
        # EXISTS on the job's primary key: the job's tenant decides, and nothing of
        # the job but its id (already the worker's) is read into the answer.
        owned = select(Job.id).where(mine).exists()
        current_job_id = case((owned, WorkerRecord.current_job_id), else_=null())
    query = (
        select(
            WorkerRecord.id,
            WorkerRecord.hostname,
            WorkerRecord.pid,
            WorkerRecord.device,
            WorkerRecord.cuda_devices,
            current_job_id.label("current_job_id"),
            WorkerRecord.started_at,
            WorkerRecord.heartbeat_at,
        )
        .where(is_live(stale_after_seconds))
        .order_by(WorkerRecord.hostname, WorkerRecord.started_at, WorkerRecord.id)
    )
    return session.execute(query).all()
