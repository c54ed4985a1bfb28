"""Reading jobs: one by id, and pages of the newest first.

A page shows each job's spec without its inline sample_weight values: they are summarised
as {"shape": [N]} or {"shape": [N, T]} by the database (ListedSpec), so that the arrays,
up to COUNTERWEIGHT_MAX_INLINE_WEIGHTS values a job, never travel to the API for a
listing, let alone to the client. A job's own read (JOB_STATUS) keeps its spec whole.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import JSON, Row, and_, bindparam, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from counterweight.service.errors import BadCursor, JobNotFound
from counterweight.service.store.models import Job, JobLabel, JobStatus


def get_job(session: Session, job_id: str, tenant: str | None = None) -> Job:
    """The job; with `tenant`, only if it is that tenant's: another tenant's job is the
    same JobNotFound as a missing one, so that its id reveals nothing. None: any job."""
    return visible(session.get(Job, job_id), job_id, tenant)


# What a status poll shows (service.api.schemas.JobOut), by Core rather than the ORM:
# polls are the API's busiest read, and an ORM load (identity map, instance state, the
# result column) costs about three times this statement. Built once; only the id varies.
JOB_STATUS = select(
    Job.id,
    Job.tenant,
    Job.status,
    Job.attempt,
    Job.max_attempts,
    Job.forgiven_attempts,
    Job.cuda_devices_needed,
    Job.priority,
    Job.cancel_requested,
    Job.progress,
    Job.error,
    Job.waiting,
    Job.spec,
    Job.created_at,
    Job.started_at,
    Job.finished_at,
    Job.deleted_at,
).where(Job.id == bindparam("job_id"))


class ListedSpec(FunctionElement[dict[str, Any]]):
    """ListedSpec(Job.spec): the spec with an inline sample_weight array replaced by
    {"shape": [N]}, or {"shape": [N, T]} for per-step weights; a spec without one (null,
    "from_dataset") as stored. Computed in SQL, one expression a dialect, below."""

    type = JSON()
    inherit_cache = True
    name = "listed_spec"


@compiles(ListedSpec, "sqlite")
def _listed_spec_sqlite(element: ListedSpec, compiler: SQLCompiler, **kw: Any) -> str:
    spec = compiler.process(element.clauses, **kw)
    weights, first = f"{spec}, '$.sample_weight'", f"{spec}, '$.sample_weight[0]'"
    # json(): json_object takes the shape as JSON only straight from a JSON function.
    shape = (
        f"json(CASE WHEN json_type({first}) = 'array' THEN json_array(json_array_length("
        f"{weights}), json_array_length({first})) ELSE json_array(json_array_length("
        f"{weights})) END)"
    )
    return (
        f"CASE WHEN json_type({weights}) = 'array' THEN json_set({weights}, "
        f"json_object('shape', {shape})) ELSE {spec} END"
    )


@compiles(ListedSpec, "postgresql")
def _listed_spec_postgres(element: ListedSpec, compiler: SQLCompiler, **kw: Any) -> str:
    spec = compiler.process(element.clauses, **kw)  # a json column: jsonb has the setter
    weights, first = f"({spec} -> 'sample_weight')", f"({spec} -> 'sample_weight' -> 0)"
    shape = (
        f"CASE WHEN json_typeof({first}) = 'array' THEN jsonb_build_array(json_array_length("
        f"{weights}), json_array_length({first})) ELSE jsonb_build_array(json_array_length("
        f"{weights})) END"
    )
    return (
        f"CASE WHEN json_typeof({weights}) = 'array' THEN CAST(jsonb_set(CAST({spec} AS "
        f"jsonb), '{{sample_weight}}', jsonb_build_object('shape', {shape})) AS json) "
        f"ELSE {spec} END"
    )


# A page of jobs: JOB_STATUS's columns, the spec as ListedSpec.
JOB_LISTING = select(
    *(
        ListedSpec(column).label("spec") if column.key == "spec" else column
        for column in JOB_STATUS.selected_columns
    )
)


class Owned(Protocol):
    """A job as any read returns it: an ORM Job, a JOB_STATUS row of any driver."""

    @property
    def tenant(self) -> str: ...

    @property
    def deleted_at(self) -> datetime | None: ...


T = TypeVar("T", bound=Owned)


def visible(row: T | None, job_id: str, tenant: str | None) -> T:
    """A job or a row of JOB_STATUS, if `tenant` may see it: a missing job, a deleted
    one and another tenant's are the same JobNotFound, so that an id reveals nothing."""
    if row is None or row.deleted_at is not None or (tenant is not None and row.tenant != tenant):
        raise JobNotFound(job_id)
    return row


@dataclass(frozen=True)
class JobFilter:
    """What GET /v1/jobs narrows a listing to; every condition given must hold."""

    status: JobStatus | None = None
    labels: tuple[tuple[str, str], ...] = ()  # (key, value): the job has each
    dataset: str | None = None  # a built-in's name or an upload's id
    loss_type: str | None = None
    created_after: datetime | None = None  # exclusive
    created_before: datetime | None = None  # exclusive


def list_jobs(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    tenant: str | None = None,
    where: JobFilter = JobFilter(),
) -> tuple[Sequence[Row[Any]], str | None]:
    """A page of jobs (rows of JOB_LISTING) that match `where`, newest first, and the
    cursor of the next page (None at the end); only `tenant`'s jobs, or every tenant's
    when it is None."""
    query = JOB_LISTING.where(Job.deleted_at.is_(None))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    if tenant is not None:
        query = query.where(Job.tenant == tenant)
    if where.status is not None:
        query = query.where(Job.status == where.status)
    for key, value in where.labels:
        # Served by the (key, value, job_id) index of job_labels on both backends.
        labelled = select(JobLabel.job_id).where(JobLabel.key == key, JobLabel.value == value)
        query = query.where(Job.id.in_(labelled))
    if where.dataset is not None:
        query = query.where(Job.dataset == where.dataset)
    if where.loss_type is not None:
        query = query.where(Job.loss_type == where.loss_type)
    if where.created_after is not None:
        query = query.where(Job.created_at > where.created_after)
    if where.created_before is not None:
        query = query.where(Job.created_at < where.created_before)
    if cursor is not None:
        created_at, job_id = decode_cursor(cursor)
        query = query.where(
            or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < job_id))
        )
    jobs = session.execute(query).all()
    if len(jobs) <= limit:
        return jobs, None
    last = jobs[limit - 1]
    return jobs[:limit], encode_cursor(last.created_at, last.id)


def encode_cursor(created_at: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{job_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadCursor("cursor is not one this API returned; pass next_cursor as given") from exc


def final_scores(session: Session, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """For the succeeded jobs among `job_ids`: the test split's balanced accuracy and
    per-class recall, and the training class counts (DESIGN.md section 5), picked out of
    each result by the database so that a page of jobs never loads their histories."""
    if not job_ids:
        return {}
    query = select(
        Job.id,
        Job.result["final"]["balanced_accuracy"].label("balanced_accuracy"),
        Job.result["final"]["per_class_recall"].label("per_class_recall"),
        Job.result["train_class_counts"].label("train_class_counts"),
    ).where(Job.id.in_(job_ids), Job.status == JobStatus.succeeded)
    return {row.id: row._asdict() for row in session.execute(query)}
