"""/v1/jobs: submit, validate, list, read, cancel, and fetch results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import FileResponse
from pydantic import AfterValidator
from sqlalchemy import Row
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from counterweight.service.api import caching
from counterweight.service.api.admission import admit
from counterweight.service.api.auth import Principal
from counterweight.service.api.deps import (
    PollReadsDep,
    PrincipalDep,
    SessionsDep,
    SettingsDep,
    StorageCallsDep,
)
from counterweight.service.api.janitor import clear_jobs
from counterweight.service.api.result_schemas import JobMetrics, ModelCard
from counterweight.service.api.schemas import (
    CancelOut,
    JobDeleted,
    JobOut,
    JobPage,
    ValidationReport,
)
from counterweight.service.artifacts import CARD, MODEL
from counterweight.service.errors import ArtifactMissing, JobStateConflict, StorageRetryLater
from counterweight.service.labels import MAX_LABELS, parse_filter
from counterweight.service.settings import Settings
from counterweight.service.spec import JobSpec, LossType
from counterweight.service.store.engine import dumps_json, read_only, transaction
from counterweight.service.store.lifecycle import delete_job as hide_job
from counterweight.service.store.models import Job, JobStatus
from counterweight.service.store.queue.cancel import request_cancel
from counterweight.service.store.queue.devices import LIVE_FLEET, Fleet, live_fleet
from counterweight.service.store.queue.enqueue import enqueue
from counterweight.service.store.queue.inspect import JOB_STATUS, JobFilter, visible
from counterweight.service.store.queue.inspect import get_job as find_job
from counterweight.service.store.queue.inspect import list_jobs as find_jobs

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=255,
        description="Retry-safe submission: the same key and body return the same job.",
    ),
]
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No job with this id"},
    409: {"description": "The job is not in a state that allows this"},
}


@router.post(
    "",
    status_code=202,
    responses={
        409: {"description": "Idempotency-Key reused"},
        429: {"description": "The tenant has COUNTERWEIGHT_MAX_QUEUED_JOBS_PER_TENANT queued"},
    },
)
def submit_job(
    spec: JobSpec,
    response: Response,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    storage: StorageCallsDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """Queue a training job. The data it names is checked now, not when it runs."""
    admit(spec, settings, sessions, principal, storage)
    with transaction(sessions) as session:
        job, created = enqueue(
            session,
            spec,
            tenant=principal.tenant,
            idempotency_key=idempotency_key,
            max_queued=settings.max_queued_jobs_per_tenant,
        )
        fleet = _fleet_for([job], session, settings)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return JobOut.of(job, fleet)


@router.post("/validate")
def validate_job(
    spec: JobSpec,
    settings: SettingsDep,
    sessions: SessionsDep,
    principal: PrincipalDep,
    storage: StorageCallsDep,
) -> ValidationReport:
    """Dry run: what the spec resolves to, with warnings. Nothing is queued."""
    resolved = admit(spec, settings, sessions, principal, storage)
    return ValidationReport(
        spec=spec.model_dump(mode="json"),
        class_names=resolved.class_names,
        counts=resolved.counts,
        class_weight=resolved.class_weight,
        warnings=resolved.warnings,
        notes=resolved.notes,
    )


def _fleet_for(
    jobs: Sequence[Job | Row[Any]], session: Session, settings: Settings
) -> Fleet | None:
    """The live workers, read only when a job shown is queued (JobOut.waiting)."""
    if not any(job.status == JobStatus.queued for job in jobs):
        return None
    return live_fleet(session, stale_after_seconds=settings.lease_seconds)


def _label_filters(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        parse_filter(value)  # ValueError: a 422 naming `label` and what was expected
    return values


LabelFilters = Annotated[
    tuple[str, ...],
    Query(
        max_length=MAX_LABELS,
        description="key:value (repeat for more: a job must have every one)",
    ),
    AfterValidator(_label_filters),
]
Moment = Annotated[datetime | None, Query(description="ISO 8601; without a zone, UTC")]


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@router.get("")
def list_jobs(
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    status: JobStatus | None = None,
    label: LabelFilters = (),
    dataset: Annotated[
        str | None, Query(max_length=64, description="A built-in's name or an upload's id")
    ] = None,
    loss_type: LossType | None = None,
    created_after: Moment = None,
    created_before: Moment = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(min_length=1, description="`next_cursor` of the previous page")
    ] = None,
) -> JobPage:
    """Jobs, newest first, that match every filter given; pass `next_cursor` back as
    `cursor` (with the same filters) for the next page. Each spec shows an inline
    sample_weight as its shape only, {"shape": [N]} (or [N, T]); GET /v1/jobs/{id} has
    the values."""
    where = JobFilter(
        status=status,
        labels=tuple(parse_filter(text) for text in label),
        dataset=dataset,
        loss_type=loss_type,
        created_after=_utc(created_after),
        created_before=_utc(created_before),
    )
    with read_only(sessions) as session:
        jobs, next_cursor = find_jobs(
            session, limit=limit, cursor=cursor, tenant=principal.scope, where=where
        )
        fleet = _fleet_for(jobs, session, settings)
        return JobPage(data=[JobOut.of(job, fleet) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", responses=ERRORS, response_model=JobOut)
async def get_job(
    job_id: str, reads: PollReadsDep, settings: SettingsDep, principal: PrincipalDep
) -> Response:
    """The job's status and progress: what clients poll, so the leanest read there is
    (service.api.reads), serialized once (FastAPI would validate a returned model again).
    A queued job costs a second read, of the live workers, to say if one can run it."""
    row = visible(await reads.first(JOB_STATUS, {"job_id": job_id}), job_id, principal.scope)
    fleet = None
    if row.status == JobStatus.queued:
        params = {"stale_after_seconds": settings.lease_seconds}
        fleet = Fleet.of(await reads.first(LIVE_FLEET, params))
    return Response(JobOut.of(row, fleet).model_dump_json(), media_type="application/json")


@router.post("/{job_id}/cancel", responses=ERRORS)
def cancel_job(
    job_id: str, sessions: SessionsDep, settings: SettingsDep, principal: PrincipalDep
) -> CancelOut:
    """A queued job ends at once. A running one ends `cancelled` within about
    COUNTERWEIGHT_HEARTBEAT_SECONDS, even if its training has ended meanwhile: a cancel wins
    until the job's success is recorded, and one that comes after is a 409 (the job has
    ended). `outcome` says which applies."""
    with transaction(sessions) as session:
        job = request_cancel(session, job_id, principal.scope)
        return CancelOut.of_cancel(job, settings.heartbeat_seconds)


@router.delete("/{job_id}", responses={404: ERRORS[404]})
def delete_job(
    job_id: str,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    storage: StorageCallsDep,
) -> JobDeleted:
    """Cancel the job if it has not ended (as POST /v1/jobs/{id}/cancel), hide it (a 404
    from then on, and gone from listings), and remove its files from the artifact store:
    now if it has ended, else once it has (`files` says which). Deleting it again
    answers the same."""
    with transaction(sessions) as session:
        job = hide_job(session, job_id, principal.scope)
    files_kept = job.artifacts_removed_at is None
    if files_kept and job.status.is_terminal:
        what = f"job {job.id}: removing its files from the artifact store"
        with suppress(StorageRetryLater):  # else the janitor's next pass removes them
            files_kept = not storage.run(what, clear_jobs, sessions, settings, job.id)
    return JobDeleted(id=job.id, status=job.status, files="pending" if files_kept else "removed")


def succeeded_job(
    sessions: sessionmaker[Session], principal: Principal, job_id: str, what: str
) -> Job:
    """The caller's job, if it has succeeded and its files are kept (its metrics are
    in the database: served whatever happened to its files); else why not."""
    with read_only(sessions) as session:
        job = find_job(session, job_id, principal.scope)
    if job.status != JobStatus.succeeded:
        raise JobStateConflict(
            f"job {job_id} is {job.status.value}; its {what} exists once it has succeeded"
        )
    if job.artifacts_removed_at is not None and what != "metrics":
        removed = job.artifacts_removed_at.strftime("%Y-%m-%d %H:%M UTC")
        raise ArtifactMissing(
            f"job {job_id}'s files were removed from the artifact store at {removed} "
            "(COUNTERWEIGHT_RETENTION_DAYS); its metrics are kept"
        )
    return job


@router.get("/{job_id}/metrics", responses=ERRORS, response_model=JobMetrics)
def get_job_metrics(job_id: str, sessions: SessionsDep, principal: PrincipalDep) -> Response:
    """Per-epoch validation history and the final test evaluation (DESIGN.md section 5)."""
    job = succeeded_job(sessions, principal, job_id, "metrics")
    assert job.result is not None
    # Served as the worker stored it (JobMetrics describes it; more fields are welcome).
    return Response(dumps_json(job.result).encode("ascii"), media_type="application/json")


@router.get(
    "/{job_id}/model",
    responses={**ERRORS, **caching.responses({"application/octet-stream": {}})},
    response_class=FileResponse,
)
async def get_job_model(
    job_id: str,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    storage: StorageCallsDep,
    if_none_match: caching.IfNoneMatch = None,
) -> Response:
    """The selected checkpoint's weights as safetensors; the model card says how to use
    them. Immutable: an ETag, and a 304 for If-None-Match (service.api.caching)."""
    # Async, as every route that may wait for the artifact store: the wait holds no
    # thread (service.api.storage_calls); the database read runs on one.
    job = await run_in_threadpool(succeeded_job, sessions, principal, job_id, "model")
    tag = caching.etag(job, MODEL)
    if (unchanged := caching.not_modified(if_none_match, tag)) is not None:
        return unchanged
    path = await storage.job_file(settings, job.id, MODEL)
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{job.id}.safetensors",
        headers=caching.headers(tag),
    )


@router.get(
    "/{job_id}/model/card",
    responses={**ERRORS, **caching.responses()},
    response_model=ModelCard,
)
async def get_model_card(
    job_id: str,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    storage: StorageCallsDep,
    if_none_match: caching.IfNoneMatch = None,
) -> Response:
    """Architecture, classes, input shape and normalisation, spec and metrics of the
    model. Immutable, as the model."""
    job = await run_in_threadpool(succeeded_job, sessions, principal, job_id, "model card")
    tag = caching.etag(job, CARD)
    if (unchanged := caching.not_modified(if_none_match, tag)) is not None:
        return unchanged
    path = await storage.job_file(settings, job.id, CARD)

    def render() -> Response:
        # On a thread: a card holds the spec, inline weights included.
        card = dumps_json(json.loads(path.read_text())).encode("ascii")
        return Response(card, media_type="application/json", headers=caching.headers(tag))

    return await run_in_threadpool(render)
