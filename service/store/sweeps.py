"""Sweeps (`sweeps`): a grid over a base spec, stored as the client sent it, and its
jobs, queued in one transaction. The grid's expansion and the comparison table are
the API's (service.api.sweeps)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from counterweight.service.errors import SweepNotFound
from counterweight.service.spec import JobSpec
from counterweight.service.store.models import DEFAULT_TENANT, Job, JobStatus, Sweep
from counterweight.service.store.queue.enqueue import check_queue, enqueue
from counterweight.service.store.queue.inspect import decode_cursor, encode_cursor


def create_sweep(
    session: Session,
    base: dict[str, Any],
    grid: dict[str, list[Any]],
    specs: Sequence[JobSpec],
    *,
    tenant: str = DEFAULT_TENANT,
    max_queued: int | None = None,
) -> tuple[Sweep, list[Job]]:
    """Store the sweep and queue its (validated) specs for `tenant` in the session's
    transaction; QueueFull if they would take the tenant past `max_queued` queued jobs."""
    if max_queued is not None:
        check_queue(session, tenant, max_queued, adding=len(specs))
    sweep = Sweep(base=base, grid=grid, tenant=tenant)
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
    jobs = list(session.scalars(select(Job).where(Job.sweep_id == sweep_id)))
    return sweep, jobs


def list_sweeps(
    session: Session, *, limit: int, cursor: str | None, tenant: str | None = None
) -> tuple[list[tuple[Sweep, list[JobStatus]]], str | None]:
    """A page of sweeps, newest first, each with its jobs' statuses (counted by the
    database: a page never loads the jobs), and the cursor of the next page (None at the
    end); only `tenant`'s, or every tenant's when it is None."""
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
    found = list(session.scalars(query))
    page, next_cursor = found[:limit], None
    if len(found) > limit:
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id)
    statuses: dict[str, list[JobStatus]] = {sweep.id: [] for sweep in page}
    counts = session.execute(
        select(Job.sweep_id, Job.status, func.count())
        .where(Job.sweep_id.in_(list(statuses)))
        .group_by(Job.sweep_id, Job.status)
    )
    for owner, status, count in counts:
        statuses[str(owner)].extend([status] * count)  # never None: filtered by in_()
    return [(sweep, statuses[sweep.id]) for sweep in page], next_cursor
