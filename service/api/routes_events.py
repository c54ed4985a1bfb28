"""GET /v1/jobs/{id}/events: a job's events as server-sent events (service.api.events)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.api.deps import PrincipalDep
from counterweight.service.api.events import EventHub, stream
from counterweight.service.store.engine import read_only
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
