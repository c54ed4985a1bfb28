"""Request and response bodies of the HTTP API (DESIGN.md sections 3 and 5), except the
job spec itself (service.spec). Every route's body is one of these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from counterweight.service.api import sweeps
from counterweight.service.api.result_schemas import SweepProgress, SweepRow
from counterweight.service.data.npz import DatasetKind
from counterweight.service.errors import SweepError
from counterweight.service.labels import LABELS_HELP, Labels
from counterweight.service.notify_spec import NotifySpec
from counterweight.service.store.models import Dataset, Job, JobStatus, Sweep
from counterweight.service.store.queue.devices import Fleet


def as_utc(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every stored time is UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


UtcTime = Annotated[datetime, BeforeValidator(as_utc)]


class ProgressOut(BaseModel):
    epoch: int
    epochs: int
    fraction: float
    eta_seconds: float | None
    # null where a value was not finite (service.store.engine writes NaN and inf as null)
    metrics: dict[str, float | None] = Field(default_factory=dict)


class JobOut(BaseModel):
    id: str
    status: JobStatus
    attempt: int
    max_attempts: int
    forgiven_attempts: int = Field(
        description="Attempts lost to a worker that died while the job made progress: they "
        "do not count against max_attempts (DESIGN.md section 2)."
    )
    priority: int
    cancel_requested: bool
    progress: ProgressOut | None
    error: str | None
    waiting: str | None = Field(
        description="Why the job cannot go on now. Queued: no live worker can run it, e.g. "
        "'no live worker has a CUDA device (2 live workers, cpu)'. Queued or running: its "
        "worker waits for the artifact store, which is unreachable or does not answer; the "
        "wait uses none of the job's attempts (DESIGN.md section 2). Null otherwise."
    )
    spec: dict[str, Any] = Field(
        description="The job spec with its defaults. In listings (GET /v1/jobs), an inline "
        'sample_weight is shown by its shape alone, {"shape": [N]} or {"shape": [N, T]}.'
    )
    labels: dict[str, str] = Field(description="The client's labels (the spec's `labels`).")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job | Any, fleet: Fleet | None = None) -> JobOut:
        """From an ORM job, or a row of service.store.queue.inspect.JOB_STATUS (any driver's:
        columns as attributes, a status as the enum or its value). `fleet`, the live
        workers, is needed only for a queued job: it says whether one can run it."""
        # What the job's worker said it waits for (the store); stale once the job ended.
        waiting = None if JobStatus(job.status).is_terminal else job.waiting
        if fleet is not None and job.status == JobStatus.queued:
            waiting = fleet.why_waiting(job.cuda_devices_needed) or waiting
        return cls(
            id=job.id,
            status=job.status,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            forgiven_attempts=job.forgiven_attempts,
            waiting=waiting,
            priority=job.priority,
            cancel_requested=job.cancel_requested,
            progress=ProgressOut.model_validate(job.progress) if job.progress else None,
            error=job.error,
            spec=job.spec,
            labels=job.spec.get("labels") or {},  # a job from before labels has none
            created_at=as_utc(job.created_at) or job.created_at,
            started_at=as_utc(job.started_at),
            finished_at=as_utc(job.finished_at),
        )


class CancelOut(JobOut):
    """The answer to POST /v1/jobs/{id}/cancel: the job, and what the cancel does to it."""

    outcome: str = Field(
        description="What happens next, in one sentence starting with `cancelled:` (the job "
        "was queued and has ended) or `stopping:` (it is running: its worker sees the cancel "
        "within about COUNTERWEIGHT_HEARTBEAT_SECONDS and ends it `cancelled`). A cancel wins "
        "until the job's success is recorded, so a job whose training has already ended "
        "ends `cancelled` too, its model not served (DESIGN.md section 2)."
    )

    @classmethod
    def of_cancel(cls, job: Job, heartbeat_seconds: float) -> CancelOut:
        return cls(**JobOut.of(job).model_dump(), outcome=cancel_outcome(job, heartbeat_seconds))


def cancel_outcome(job: Job, heartbeat_seconds: float) -> str:
    if job.status == JobStatus.cancelled:
        return "cancelled: the job had not started; it ended at once"
    if job.progress and job.progress.get("fraction", 0.0) >= 1.0:
        return (
            "stopping: training has ended, but the job's success is not recorded yet; its "
            "worker records it as cancelled instead (once the evaluation or upload under way "
            "is done), and its model is not served"
        )
    return (
        f"stopping: the job's worker sees the cancel within about {heartbeat_seconds:g} s "
        "(its next heartbeat) and stops it; it ends cancelled, keeping its checkpoint. "
        "Should training end first, the job still ends cancelled, not succeeded"
    )


class AttemptLogOut(BaseModel):
    attempt: int
    lines: list[str] = Field(description="The worker's lines about the job, oldest first.")
    complete: bool = Field(
        description="The attempt ended and its log is whole; false while it runs, or when "
        "its worker died (the lines are those shipped before)."
    )


class JobLogsOut(BaseModel):
    job_id: str
    status: JobStatus
    attempts: list[AttemptLogOut] = Field(
        description="Every attempt that logged a line, in order (a retry is a new attempt)."
    )


class JobDeleted(BaseModel):
    """The answer to DELETE /v1/jobs/{id}, the same for a job deleted before."""

    id: str
    deleted: Literal[True] = True
    status: JobStatus = Field(
        description="Its status as deleted: a job deleted while running ends `cancelled` "
        "once its worker sees the cancel (within about COUNTERWEIGHT_HEARTBEAT_SECONDS)."
    )
    files: Literal["removed", "pending"] = Field(
        description="removed: its files are gone from the artifact store; pending: they go "
        "once the job has ended and its worker's last copies are in (about "
        "COUNTERWEIGHT_LEASE_SECONDS), at the next pass of COUNTERWEIGHT_JANITOR_SECONDS."
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


# --- results: predict --------------------------------------------------------------------


class PredictRequest(BaseModel):
    inputs: list[Any] = Field(
        description="Each input: nested lists in the model card's `input_shape` (float32; "
        "images in [0, 1]), or for image models a base64 string of PNG or JPEG bytes of "
        "exactly the card's height x width."
    )
    priors: list[float] | None = Field(
        None,
        description="The classes' shares where the model is used, one per class (> 0, any "
        "scale): the decision becomes the most probable class under them (the posterior "
        "re-weighted from the training prior), in place of the job's tuned decision.",
    )


class Prediction(BaseModel):
    # `class` is a Python keyword: the field is `class_` in code, `class` on the wire.
    class_: int = Field(alias="class", serialization_alias="class")
    name: str
    probabilities: list[float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


# --- datasets -----------------------------------------------------------------------------


class UploadedDatasetOut(BaseModel):
    id: str
    source: Literal["uploaded"] = "uploaded"
    kind: DatasetKind
    available: bool = True
    dataset: dict[str, str]  # how a job spec names it
    filename: str | None
    shapes: dict[str, list[int]]
    class_counts: dict[str, list[int]]
    num_classes: int
    class_names: list[str] | None  # null: the file has none
    has_sample_weight: bool
    size_bytes: int
    created_at: datetime

    @classmethod
    def of(cls, row: Dataset) -> UploadedDatasetOut:
        return cls(
            id=row.id,
            kind=row.kind,
            dataset={"name": "uploaded", "id": row.id},
            filename=row.filename,
            shapes=row.shapes,
            class_counts=row.class_counts,
            num_classes=row.num_classes,
            class_names=row.class_names,
            has_sample_weight=row.has_sample_weight,
            size_bytes=row.size_bytes,
            created_at=as_utc(row.created_at) or row.created_at,
        )


class BuiltinDatasetOut(BaseModel):
    id: str  # the name a job spec uses as dataset.name
    source: Literal["builtin"] = "builtin"
    kind: Literal["images", "image_folder"]
    available: bool
    dataset: dict[str, str]
    # Where its files are expected, relative to the data root; null: ships with the service.
    location: str | None
    expected: str


class DatasetPage(BaseModel):
    data: list[BuiltinDatasetOut | UploadedDatasetOut]
    next_cursor: str | None = None


# --- sweeps -------------------------------------------------------------------------------


class SweepIn(BaseModel):
    base: dict[str, Any] = Field(
        description="A job spec (POST /v1/jobs); the grid sets fields of it, so it may leave "
        "out what the grid fills in."
    )
    grid: dict[str, list[Any]] = Field(
        description='{"<dotted.path>": [values...]}, e.g. {"loss.type": ["cross_entropy", '
        f'"focal"], "train.seed": [0, 1]}}: one job per combination, at most {sweeps.MAX_JOBS}.'
    )
    labels: Labels = Field(
        default_factory=dict,
        description=f"The sweep's labels; each of its jobs gets them too, over the base "
        f"spec's. {LABELS_HELP}",
    )
    notify: NotifySpec | None = Field(
        None,
        description="Webhooks for every job of the sweep, as a job's notify (or give notify "
        "in base; not both).",
    )

    def base_with_notify(self) -> dict[str, Any]:
        """The base every job starts from, with the sweep's notify in it."""
        if self.notify is None:
            return self.base
        if "notify" in self.base:
            raise SweepError("notify: given both in base and at the top of the sweep; give it once")
        return {**self.base, "notify": self.notify.model_dump(mode="json")}


class SweepOut(BaseModel):
    id: str
    labels: dict[str, str]
    status: str = Field(
        description="queued, running, succeeded (every job did), or failed (every job ended "
        "and at least one failed or was cancelled)."
    )
    progress: SweepProgress = Field(
        description="ended, total and fraction of the jobs, and the count of each job status."
    )
    job_ids: list[str] = Field(description="In grid order, the last grid path varying fastest.")
    table: list[SweepRow] = Field(
        description="One row per grid cell (the grid values except train.seed): `cell`, `n` "
        "(succeeded jobs), `jobs`, and for balanced_accuracy, macro_f1 and minority_recall "
        "(test split) the `mean` and sample `std` (ddof=1; null with fewer than 2) over `n`."
    )

    @classmethod
    def of(cls, sweep: Sweep, jobs: list[Job]) -> SweepOut:
        rows, job_ids = sweeps.table(sweep, jobs)
        statuses = [job.status for job in jobs]
        return cls(
            id=sweep.id,
            labels=sweep.labels,
            status=sweeps.sweep_status(statuses),
            progress=sweeps.progress(statuses),
            job_ids=job_ids,
            table=rows,
        )


class SweepSummary(BaseModel):
    """A sweep in GET /v1/sweeps: GET /v1/sweeps/{id} has its jobs and table."""

    id: str
    labels: dict[str, str]
    status: str = Field(description="As a sweep's `status`.")
    progress: SweepProgress
    grid: dict[str, list[Any]] = Field(description="The grid as it was posted.")
    created_at: UtcTime

    @classmethod
    def of(cls, sweep: Sweep, statuses: list[JobStatus]) -> SweepSummary:
        return cls(
            id=sweep.id,
            labels=sweep.labels,
            status=sweeps.sweep_status(statuses),
            progress=SweepProgress.model_validate(sweeps.progress(statuses)),
            grid=sweep.grid,
            created_at=sweep.created_at,
        )


class SweepPage(BaseModel):
    data: list[SweepSummary]
    next_cursor: str | None


# --- workers, health ----------------------------------------------------------------------


class WorkerOut(BaseModel):
    id: str
    hostname: str
    pid: int
    device: str
    cuda_devices: int = Field(description="CUDA devices it trains on (0: the CPU).")
    current_job_id: str | None = Field(
        description="The job it runs; null when idle, or when the job is another tenant's."
    )
    started_at: UtcTime
    heartbeat_at: UtcTime


class WorkerList(BaseModel):
    data: list[WorkerOut]
    next_cursor: None = None  # one page: the list is as long as the fleet


class Health(BaseModel):
    status: str
    detail: str | None = Field(None, description="Why the service is not ready.")
