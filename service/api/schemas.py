"""Response bodies of the HTTP API (DESIGN.md sections 3 and 5)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from service.db.models import Job, JobStatus


def as_utc(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every stored time is UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class ProgressOut(BaseModel):
    epoch: int
    epochs: int
    fraction: float
    eta_seconds: float | None
    metrics: dict[str, float] = Field(default_factory=dict)


class JobOut(BaseModel):
    id: str
    status: JobStatus
    attempt: int
    max_attempts: int
    priority: int
    cancel_requested: bool
    progress: ProgressOut | None
    error: str | None
    spec: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job | Any) -> JobOut:
        """From an ORM job, or a row of service.queue.inspect.JOB_STATUS (any driver's:
        columns as attributes, a status as the enum or its value)."""
        return cls(
            id=job.id,
            status=job.status,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            priority=job.priority,
            cancel_requested=job.cancel_requested,
            progress=ProgressOut.model_validate(job.progress) if job.progress else None,
            error=job.error,
            spec=job.spec,
            created_at=as_utc(job.created_at) or job.created_at,
            started_at=as_utc(job.started_at),
            finished_at=as_utc(job.finished_at),
        )


class JobPage(BaseModel):
    data: list[JobOut]
    next_cursor: str | None


class ValidationReport(BaseModel):
    valid: bool = True
    spec: dict[str, Any] = Field(description="The spec with every default filled in.")
    class_names: list[str] = Field(description="The job's classes, in label order 0..k-1.")
    counts: dict[str, list[int]] = Field(description="Per-class sample counts: train, val, test.")
    class_weight: list[float] = Field(
        description="Effective weight of one training sample of each class in the loss as "
        "training starts: the class_weight rule or object (1 where null or left out), times "
        "the loss's own class weights (class_balanced's effective-number weights; ldam's "
        "before deferred re-weighting, i.e. 1), times focal's alpha, times the mean "
        "sample_weight of the class's training rows. balanced_softmax and logit_adjusted "
        "re-balance through logit offsets, not weights: 1 here. Samplers are not included."
    )
    warnings: list[str] = Field(
        description="Legal but likely wrong: weights that grow with class frequency, "
        "re-weighting twice, classes with few samples, classes a class_weight object leaves "
        "out, loss options that do not apply."
    )
    notes: list[str] = Field(
        description="How the spec will run where that is easy to miss, e.g. when ldam's "
        "deferred re-weighting switches on."
    )


class Health(BaseModel):
    status: str
