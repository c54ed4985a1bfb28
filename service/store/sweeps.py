"""Sweeps (`sweeps`): a grid over a base spec, stored as the client sent it, and its
jobs, queued in one transaction. The grid's expansion and the comparison table are
the API's (service.api.sweeps)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from counterweight.service.errors import SweepNotFound
from counterweight.service.spec import JobSpec
from counterweight.service.store.models import DEFAULT_TENANT, Job, Sweep
from counterweight.service.store.queue.enqueue import check_queue, enqueue


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
    jobs = list(session.scalars(select(Job).where(Job.sweep_id == sweep_id)))
    return sweep, jobs
