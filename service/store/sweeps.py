"""Sweeps (`sweeps`): a grid over a base spec, stored as the client sent it, and its
jobs, queued in one transaction. The grid's expansion and the comparison table are
the API's (service.api.sweeps)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from counterweight.service.errors import JobStateConflict, SweepNotFound
from counterweight.service.spec import JobSpec
from counterweight.service.store.models import DEFAULT_TENANT, Job, JobStatus, Sweep
from counterweight.service.store.queue.cancel import request_cancel
from counterweight.service.store.queue.enqueue import check_queue, enqueue
from counterweight.service.store.queue.inspect import decode_cursor, encode_cursor


def create_sweep(
    session: Session,
    base: dict[str, Any],
    grid: dict[str, list[Any]],
    specs: Sequence[JobSpec],
    *,
    labels: dict[str, str] | None = None,
    tenant: str = DEFAULT_TENANT,
    max_queued: int | None = None,
) -> tuple[Sweep, list[Job]]:
    """Store the sweep and queue its (validated) specs for `tenant` in the session's
    transaction; QueueFull if they would take the tenant past `max_queued` queued jobs."""
    if max_queued is not None:
        check_queue(session, tenant, max_queued, adding=len(specs))
    sweep = Sweep(base=base, grid=grid, labels=labels or {}, tenant=tenant)
    session.add(sweep)
    session.flush()
    jobs = []
    for spec in specs:
        job, _ = enqueue(session, spec, tenant=tenant)
        job.sweep_id = sweep.id
        jobs.append(job)
    session.flush()
    session.refresh(sweep)  # created_at
    return sweep, jobs


def get_sweep(
    session: Session, sweep_id: str, tenant: str | None = None
) -> tuple[Sweep, list[Job]]:
    """The sweep and its jobs; with `tenant`, another tenant's sweep is SweepNotFound."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or (tenant is not None and sweep.tenant != tenant):
        raise SweepNotFound(sweep_id)
    jobs = list(
        session.scalars(select(Job).where(Job.sweep_id == sweep_id, Job.deleted_at.is_(None)))
    )
    return sweep, jobs


def list_sweeps(
    session: Session, *, limit: int, cursor: str | None, tenant: str | None
) -> tuple[list[tuple[Sweep, list[JobStatus]]], str | None]:
    """A page of sweeps, newest first, each with its (not deleted) jobs' statuses, and
    the cursor of the next page (None at the end); only `tenant`'s, or all for None."""
    query = select(Sweep).order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(limit + 1)
    if tenant is not None:
        query = query.where(Sweep.tenant == tenant)
    if cursor is not None:
        created_at, sweep_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Sweep.created_at < created_at,
                and_(Sweep.created_at == created_at, Sweep.id < sweep_id),
            )
        )
    sweeps = list(session.scalars(query))
    next_cursor = None
    if len(sweeps) > limit:
        sweeps = sweeps[:limit]
        next_cursor = encode_cursor(sweeps[-1].created_at, sweeps[-1].id)
    statuses: dict[str, list[JobStatus]] = {sweep.id: [] for sweep in sweeps}
    counts = session.execute(
        select(Job.sweep_id, Job.status, func.count())
        .where(Job.sweep_id.in_(list(statuses)), Job.deleted_at.is_(None))
        .group_by(Job.sweep_id, Job.status)
    )
    for owner, status, count in counts:
        assert owner is not None  # only the page's sweeps' jobs were counted
        statuses[owner] += [JobStatus(status)] * count
    return [(sweep, statuses[sweep.id]) for sweep in sweeps], next_cursor


def cancel_sweep(session: Session, sweep_id: str, tenant: str | None) -> tuple[Sweep, list[Job]]:
    """Cancel every job of the sweep that has not ended (service.store.queue.cancel: a
    queued one at once, a running one through its worker); a sweep whose jobs have all
    ended is a JobStateConflict."""
    sweep, jobs = get_sweep(session, sweep_id, tenant)
    going = [job for job in jobs if not job.status.is_terminal]
    if not going:
        raise JobStateConflict(f"sweep {sweep_id} has ended: every one of its jobs has ended")
    for job in going:
        request_cancel(session, job.id, tenant)
    return sweep, jobs
