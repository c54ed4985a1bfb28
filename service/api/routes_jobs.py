"""/v1/jobs: submit, validate, list, read, cancel, and fetch results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import Row
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from counterweight.service.api.admission import admit
from counterweight.service.api.auth import Principal
from counterweight.service.api.deps import (
    PollReadsDep,
    PrincipalDep,
    SessionsDep,
    SettingsDep,
    StorageCallsDep,
)
from counterweight.service.api.schemas import CancelOut, JobOut, JobPage, ValidationReport
from counterweight.service.artifacts import CARD, MODEL
from counterweight.service.errors import JobStateConflict
from counterweight.service.settings import Settings
from counterweight.service.spec import JobSpec
from counterweight.service.store.engine import read_only, transaction
from counterweight.service.store.models import Job, JobStatus
from counterweight.service.store.queue.cancel import request_cancel
from counterweight.service.store.queue.devices import LIVE_FLEET, Fleet, live_fleet
from counterweight.service.store.queue.enqueue import enqueue
from counterweight.service.store.queue.inspect import JOB_STATUS, get_job, list_jobs, visible

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


@router.get("")
def list_all(
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    status: JobStatus | None = None,
    dataset: Annotated[
        str | None, Query(min_length=1, description="Only jobs on this `dataset.name`")
    ] = None,
    loss: Annotated[str | None, Query(min_length=1, description="Only this `loss.type`")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(min_length=1, description="`next_cursor` of the previous page")
    ] = None,
) -> JobPage:
    """Jobs, newest first; pass `next_cursor` back as `cursor` for the next page. Each
    spec shows an inline sample_weight as its shape only, {"shape": [N]} (or [N, T]);
    GET /v1/jobs/{id} has the values."""
    with read_only(sessions) as session:
        jobs, next_cursor = list_jobs(
            session,
            status=status,
            limit=limit,
            cursor=cursor,
            tenant=principal.scope,
            dataset=dataset,
            loss=loss,
        )
        fleet = _fleet_for(jobs, session, settings)
        return JobPage(data=[JobOut.of(job, fleet) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", responses=ERRORS, response_model=JobOut)
async def read_job(
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


def succeeded_job(
    sessions: sessionmaker[Session], principal: Principal, job_id: str, what: str
) -> Job:
    """The caller's job, if it has succeeded; else a conflict naming what they wanted."""
    with read_only(sessions) as session:
        job = get_job(session, job_id, principal.scope)
    if job.status != JobStatus.succeeded:
        raise JobStateConflict(
            f"job {job_id} is {job.status.value}; its {what} exists once it has succeeded"
        )
    return job


@router.get("/{job_id}/metrics", responses=ERRORS)
def job_metrics(job_id: str, sessions: SessionsDep, principal: PrincipalDep) -> dict[str, Any]:
    """Per-epoch validation history and the final test evaluation (DESIGN.md section 5)."""
    job = succeeded_job(sessions, principal, job_id, "metrics")
    assert job.result is not None
    return job.result


@router.get(
    "/{job_id}/model",
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
    response_class=FileResponse,
)
async def job_model(
    job_id: str,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    storage: StorageCallsDep,
) -> FileResponse:
    """The selected checkpoint's weights as safetensors; the model card says how to use them."""
    # Async, as every route that may wait for the artifact store: the wait holds no
    # thread (service.api.storage_calls); the database read runs on one.
    job = await run_in_threadpool(succeeded_job, sessions, principal, job_id, "model")
    path = await storage.job_file(settings, job.id, MODEL)
    return FileResponse(
        path, media_type="application/octet-stream", filename=f"{job.id}.safetensors"
    )


@router.get("/{job_id}/model/card", responses=ERRORS)
async def job_model_card(
    job_id: str,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    storage: StorageCallsDep,
) -> JSONResponse:
    """Architecture, classes, input shape and normalisation, spec and metrics of the model."""
    job = await run_in_threadpool(succeeded_job, sessions, principal, job_id, "model card")
    path = await storage.job_file(settings, job.id, CARD)
    # Parsed and rendered on a thread: a card holds the spec, inline weights included.
    return await run_in_threadpool(lambda: JSONResponse(json.loads(path.read_text())))
