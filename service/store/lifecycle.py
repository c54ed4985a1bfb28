"""The end of a job's and an upload's life in the database: deleting a job (cancelled
first, then hidden), the jobs whose files the janitor removes (deleted ones, and by
COUNTERWEIGHT_RETENTION_DAYS), refusing to delete an upload that jobs still need, and
the store usage per tenant it measures. The files themselves are the API's to remove
(service.api.janitor): this module never touches the artifact store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from counterweight.service.errors import DatasetInUse, DatasetNotFound, JobNotFound
from counterweight.service.store.clock import db_now
from counterweight.service.store.models import Dataset, Job, JobStatus, StoreUsage
from counterweight.service.store.queue.cancel import request_cancel

TERMINAL = [status for status in JobStatus if status.is_terminal]


def delete_job(session: Session, job_id: str, tenant: str | None) -> Job:
    """Hide the job from every read, cancelling it first if it has not ended. A job
    deleted already is returned as it is (a DELETE repeated is the same success);
    another tenant's, or a missing one, is JobNotFound."""
    job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one_or_none()
    if job is None or (tenant is not None and job.tenant != tenant):
        raise JobNotFound(job_id)
    if job.deleted_at is not None:
        return job
    if not job.status.is_terminal:
        request_cancel(session, job_id, tenant)  # queued: ends now; running: at its worker
    job.deleted_at = db_now()
    session.flush()
    session.refresh(job)
    return job


def jobs_to_clear(
    session: Session,
    *,
    retention_days: float | None,
    settle_seconds: float,
    limit: int,
    job_id: str | None = None,
) -> Sequence[str]:
    """Ended jobs whose files are still kept and should not be: deleted ones, and with
    `retention_days` every job that ended longer ago (only `job_id`, if given). A job a
    worker ran only once it has been ended `settle_seconds`, so that the worker's last
    copies (its final log) are in the store first. Never a queued or running job: its
    checkpoint is how it resumes."""
    due: list[ColumnElement[bool]] = [Job.deleted_at.is_not(None)]
    if retention_days is not None:
        due.append(Job.finished_at < db_now(-retention_days * 86400.0))
    query = select(Job.id).where(
        Job.artifacts_removed_at.is_(None),
        Job.status.in_(TERMINAL),
        or_(Job.attempt == 0, Job.finished_at < db_now(-settle_seconds)),
        or_(*due),
    )
    if job_id is not None:
        query = query.where(Job.id == job_id)
    return session.scalars(query.order_by(Job.finished_at).limit(limit)).all()


def mark_cleared(session: Session, job_ids: Iterable[str]) -> None:
    """Record that these jobs' files are gone (a job still running is left as it is)."""
    ids = list(job_ids)
    if ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(ids), Job.status.in_(TERMINAL))
            .values(artifacts_removed_at=db_now())
        )


def check_dataset_unused(session: Session, dataset_id: str, tenant: str | None) -> Dataset:
    """The caller's upload, if no queued or running job uses it: DatasetInUse (409)
    names those jobs. Another tenant's upload is DatasetNotFound."""
    dataset = session.get(Dataset, dataset_id, with_for_update=True)
    if dataset is None or (tenant is not None and dataset.tenant != tenant):
        raise DatasetNotFound(f"no uploaded dataset with id {dataset_id!r}")
    users = session.scalars(
        select(Job.id)
        .where(Job.dataset == dataset_id, Job.status.in_([JobStatus.queued, JobStatus.running]))
        .order_by(Job.created_at)
        .limit(6)
    ).all()
    if users:
        shown = ", ".join(users[:5]) + (" and more" if len(users) > 5 else "")
        raise DatasetInUse(
            f"dataset {dataset_id} is used by queued or running jobs ({shown}); cancel them "
            "or wait for them to end, then delete it"
        )
    return dataset


def delete_dataset_row(session: Session, dataset: Dataset) -> None:
    session.delete(dataset)
    session.flush()


def owners(session: Session, job_ids: set[str], dataset_ids: set[str]) -> dict[str, str]:
    """Tenant of each of these jobs and uploads that exists, by id."""
    found: dict[str, str] = {}
    for model, ids in ((Job, job_ids), (Dataset, dataset_ids)):
        listed = sorted(ids)
        for at in range(0, len(listed), 500):
            chunk = listed[at : at + 500]
            rows = session.execute(select(model.id, model.tenant).where(model.id.in_(chunk)))
            found.update((object_id, tenant) for object_id, tenant in rows)
    return found


def record_usage(session: Session, usage: dict[str, tuple[int, int]]) -> None:
    """Replace the measured (bytes, files) of every tenant; tenants not in `usage` keep
    nothing any more. An upsert, so that API processes measuring at once never clash."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for tenant, (size, files) in usage.items():
        statement = insert(StoreUsage).values(tenant=tenant, bytes=size, files=files)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[StoreUsage.tenant],
                set_={"bytes": size, "files": files, "measured_at": db_now()},
            )
        )
    session.execute(delete(StoreUsage).where(StoreUsage.tenant.not_in(list(usage) or [""])))


def usage_by_tenant(session: Session) -> Sequence[tuple[str, int, int, datetime]]:
    query = select(StoreUsage.tenant, StoreUsage.bytes, StoreUsage.files, StoreUsage.measured_at)
    return [
        (tenant, size, files, measured_at)
        for tenant, size, files, measured_at in session.execute(query.order_by(StoreUsage.tenant))
    ]
