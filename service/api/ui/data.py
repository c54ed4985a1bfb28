"""What the dashboard's scripts fetch, with the session cookie in place of the bearer
header: each route calls the JSON API's own route function, so a chart draws exactly
what /v1 answers (metrics, the event stream), and the new-job page's validate and submit
are /v1's, refusals and all."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse

from counterweight.service.api import routes_events, routes_jobs
from counterweight.service.api.deps import (
    SessionsDep,
    SettingsDep,
    StorageCallsDep,
)
from counterweight.service.api.schemas import JobOut, ValidationReport
from counterweight.service.api.ui.session import UI_PREFIX, DataPrincipal, SameOrigin
from counterweight.service.spec import JobSpec

router = APIRouter(prefix=UI_PREFIX, include_in_schema=False)


@router.get("/jobs/{job_id}/metrics")
def metrics(job_id: str, sessions: SessionsDep, principal: DataPrincipal) -> Response:
    return routes_jobs.get_job_metrics(job_id, sessions, principal)


@router.get("/jobs/{job_id}/events")
async def events(
    job_id: str,
    request: Request,
    principal: DataPrincipal,
    last_event_id: Annotated[int | None, Header(ge=0, le=2**31 - 1)] = None,
) -> StreamingResponse:
    return await routes_events.get_job_events(job_id, request, principal, 0, last_event_id)


@router.get("/jobs/{job_id}/model")
async def model(
    job_id: str,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: DataPrincipal,
    storage: StorageCallsDep,
) -> Response:
    return await routes_jobs.get_job_model(job_id, sessions, settings, principal, storage)


@router.get("/jobs/{job_id}/card")
async def card(
    job_id: str,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: DataPrincipal,
    storage: StorageCallsDep,
) -> Response:
    response = await routes_jobs.get_model_card(job_id, sessions, settings, principal, storage)
    response.headers["Content-Disposition"] = f'attachment; filename="{job_id}.card.json"'
    return response


@router.post("/api/validate", dependencies=[SameOrigin])
def validate(
    spec: JobSpec,
    settings: SettingsDep,
    sessions: SessionsDep,
    principal: DataPrincipal,
    storage: StorageCallsDep,
) -> ValidationReport:
    return routes_jobs.validate_job(spec, settings, sessions, principal, storage)


@router.post("/api/jobs", status_code=202, dependencies=[SameOrigin])
def submit(
    spec: JobSpec,
    response: Response,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: DataPrincipal,
    storage: StorageCallsDep,
) -> JobOut:
    return routes_jobs.submit_job(spec, response, sessions, settings, principal, storage)
