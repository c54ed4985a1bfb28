"""Putting jobs on the queue, with Idempotency-Key replay and the per-tenant cap on
queued jobs (COUNTERWEIGHT_MAX_QUEUED_JOBS_PER_TENANT)."""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from counterweight.service.errors import IdempotencyConflict, QueueFull
from counterweight.service.spec import JobSpec
from counterweight.service.store.models import DEFAULT_TENANT, Job, JobLabel, JobStatus
from counterweight.service.store.queue.devices import cuda_devices_needed
from counterweight.service.store.queue.events import record_status

NEW_JOB_CHANNEL = "counterweight_jobs"


def enqueue(
    session: Session,
    spec: JobSpec,
    *,
    tenant: str = DEFAULT_TENANT,
    idempotency_key: str | None = None,
    max_queued: int | None = None,
) -> tuple[Job, bool]:
    """Queue a job for `tenant`; returns (job, created). A replayed key (keys are per
    tenant) returns the first job, even when the tenant's queue is full; otherwise a
    tenant with `max_queued` jobs queued gets QueueFull."""
    fingerprint = spec.fingerprint()
    if idempotency_key is not None:
        existing = _by_key(session, tenant, idempotency_key)
        if existing is not None:
            return _replay(existing, idempotency_key, fingerprint), False
    if max_queued is not None:
        check_queue(session, tenant, max_queued)
    job = Job(
        tenant=tenant,
        spec=spec.model_dump(mode="json"),
        status=JobStatus.queued,
        priority=spec.priority,
        max_attempts=spec.max_attempts,
        cuda_devices_needed=cuda_devices_needed(spec.train.device),
        attempt=0,
        cancel_requested=False,
        idempotency_key=idempotency_key,
        spec_fingerprint=fingerprint,
        dataset=spec.dataset.id if spec.dataset.name == "uploaded" else spec.dataset.name,
        loss_type=spec.loss.type,
    )
    try:
        # A savepoint, so that losing a race on the key leaves the transaction usable.
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:
        if idempotency_key is None:
            raise
        winner = _by_key(session, tenant, idempotency_key)
        if winner is None:
            raise
        return _replay(winner, idempotency_key, fingerprint), False
    session.add_all(JobLabel(job_id=job.id, key=k, value=v) for k, v in spec.labels.items())
    record_status(session, job)  # seq 1 of the job's event stream: "queued"
    if session.get_bind().dialect.name == "postgresql":
        # Delivered at commit: idle workers wake at once instead of at their next poll.
        session.execute(
            text("SELECT pg_notify(:channel, :id)"), {"channel": NEW_JOB_CHANNEL, "id": job.id}
        )
    session.refresh(job)  # server-side defaults (created_at, run_after)
    return job, True


def _by_key(session: Session, tenant: str, key: str) -> Job | None:
    query = select(Job).where(Job.tenant == tenant, Job.idempotency_key == key)
    return session.scalars(query).one_or_none()


def _replay(job: Job, key: str, fingerprint: str) -> Job:
    if job.spec_fingerprint != fingerprint:
        raise IdempotencyConflict(key)
    return job


def check_queue(session: Session, tenant: str, cap: int, adding: int = 1) -> None:
    """Refuse `adding` more jobs if the tenant's queued jobs would exceed `cap`. Checked
    in the submitting transaction; two submissions racing may each pass (a soft cap)."""
    queued = session.scalar(
        select(func.count()).where(Job.tenant == tenant, Job.status == JobStatus.queued)
    )
    queued = queued or 0
    if queued + adding > cap:
        asked = "a job" if adding == 1 else f"{adding} jobs"
        raise QueueFull(
            f"too many queued jobs: tenant {tenant!r} has {queued} queued and asked for "
            f"{asked}; at most {cap} may be queued at once "
            "(COUNTERWEIGHT_MAX_QUEUED_JOBS_PER_TENANT). Wait for some to start, or cancel some"
        )
