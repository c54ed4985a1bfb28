"""Response bodies of the HTTP API (DESIGN.md sections 3 and 5)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from service.db.models import Job, JobStatus


def _utc(moment: datetime | None) -> datetime | None:
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
    def of(cls, job: Job) -> JobOut:
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
            created_at=_utc(job.created_at) or job.created_at,
            started_at=_utc(job.started_at),
            finished_at=_utc(job.finished_at),
        )


class JobPage(BaseModel):
    data: list[JobOut]
    next_cursor: str | None


class ValidationReport(BaseModel):
    valid: bool = True
    spec: dict[str, Any]
    class_names: list[str]
    counts: dict[str, list[int]] = Field(description="Per-class sample counts: train, val, test.")
    class_weight: list[float] = Field(description="Effective weight of each class in the loss.")
    warnings: list[str]


class Health(BaseModel):
    status: str
