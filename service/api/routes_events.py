"""GET /v1/jobs/{id}/events: a job's events as server-sent events (service.api.events);
GET /v1/jobs/{id}/logs: its worker's lines, at once or followed (service.api.job_logs)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.api import job_logs
from counterweight.service.api.deps import PrincipalDep, SettingsDep, StorageCallsDep
from counterweight.service.api.events import EventHub, stream
from counterweight.service.api.schemas import AttemptLogOut, JobLogsOut
from counterweight.service.store.engine import read_only
from counterweight.service.store.models import Job
from counterweight.service.store.queue.events import MAX_SEQ
from counterweight.service.store.queue.inspect import get_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _hub(request: Request) -> EventHub:
    hub: EventHub = request.app.state.event_hub
    return hub


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The job's events"},
        404: {"description": "No job with this id"},
    },
)
async def get_job_events(
    job_id: str,
    request: Request,
    principal: PrincipalDep,
    after: Annotated[
        int,
        Query(ge=0, le=MAX_SEQ, description="Resume after this seq (0: from the start)"),
    ] = 0,
    last_event_id: Annotated[
        int | None,
        Header(ge=0, le=MAX_SEQ, description="Resume after this seq (wins over `after`)"),
    ] = None,
) -> StreamingResponse:
    """Status changes, progress and each epoch's validation metrics, as server-sent
    events (`id` is the event's seq); the stream ends after the job's final status, also
    when the cursor is past it."""
    sessions: sessionmaker[Session] = request.app.state.sessions

    def check() -> None:
        with read_only(sessions) as session:
            # JobNotFound -> 404 (also for another tenant's job), before the stream starts.
            get_job(session, job_id, principal.scope)

    await asyncio.to_thread(check)
    start = last_event_id if last_event_id is not None else after
    return StreamingResponse(
        stream(_hub(request), sessions, job_id, start),
        media_type="text/event-stream",
        # Proxies must pass events on as they come rather than buffer them.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _job(sessions: sessionmaker[Session], job_id: str, tenant: str | None) -> Job:
    with read_only(sessions) as session:
        return get_job(session, job_id, tenant)


@router.get(
    "/{job_id}/logs",
    response_model=JobLogsOut,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "The logs; with follow=true, server-sent events",
        },
        404: {"description": "No job with this id"},
        503: {"description": "The artifact store does not answer"},
    },
)
async def get_job_logs(
    job_id: str,
    request: Request,
    principal: PrincipalDep,
    settings: SettingsDep,
    storage: StorageCallsDep,
    follow: Annotated[
        bool, Query(description="Stream the lines as they come, until the job ends")
    ] = False,
    last_event_id: Annotated[
        str | None,
        Header(max_length=24, description="follow: resume after this `<attempt>.<line>`"),
    ] = None,
) -> Response:
    """The worker's lines about the job, every attempt, read from the artifact store (so
    from any host): shipped while the attempt runs, every COUNTERWEIGHT_LOG_UPLOAD_SECONDS,
    and at its end. `follow=true`: server-sent events `line` ({"attempt", "line"}, id
    `<attempt>.<n>`) as they come, then `end` ({"status"}) once the job has ended."""
    sessions: sessionmaker[Session] = request.app.state.sessions
    job = await asyncio.to_thread(_job, sessions, job_id, principal.scope)
    if follow:
        resume = job_logs.parse_resume(last_event_id)
        return StreamingResponse(
            job_logs.follow(sessions, settings, storage, job.id, resume),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    attempts = range(1, job.attempt + 1)
    logs = await asyncio.to_thread(job_logs.read_attempts, settings, storage, job.id, attempts)
    body = JobLogsOut(
        job_id=job.id,
        status=job.status,
        attempts=[
            AttemptLogOut(attempt=a.attempt, lines=a.lines, complete=a.complete) for a in logs
        ],
    )
    return Response(body.model_dump_json(), media_type="application/json")
