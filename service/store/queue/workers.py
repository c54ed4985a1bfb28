"""The worker registry: who is working, on which host and device, on which job.

A worker registers at start with a fresh id (also the `owner` of the jobs it
leases), renews `heartbeat_at` while it runs, and sets `stopped_at` when it exits
cleanly. One that dies without a word (SIGKILL, a lost host) goes stale: it is
live only while its heartbeat is younger than the bound the caller gives, the
lease length, since a worker silent that long has lost its job anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.orm import Session

from counterweight.service.store.clock import db_now
from counterweight.service.store.models import WorkerRecord


def register(
    session: Session, worker_id: str, *, hostname: str, pid: int, device: str
) -> WorkerRecord:
    worker = WorkerRecord(id=worker_id, hostname=hostname[:255], pid=pid, device=device[:128])
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


def is_live(stale_after_seconds: float) -> ColumnElement[bool]:
    """What makes a worker live: not stopped, last heartbeat younger than the bound."""
    return and_(
        WorkerRecord.stopped_at.is_(None),
        WorkerRecord.heartbeat_at > db_now(-stale_after_seconds),
    )


def live_workers(session: Session, *, stale_after_seconds: float) -> Sequence[WorkerRecord]:
    """Live workers (is_live), by host name, then start time."""
    return session.scalars(
        select(WorkerRecord)
        .where(is_live(stale_after_seconds))
        .order_by(WorkerRecord.hostname, WorkerRecord.started_at, WorkerRecord.id)
    ).all()
