"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Response

from counterweight.service.api.deps import SessionsDep
from counterweight.service.api.problems import RETRY_AFTER_SECONDS
from counterweight.service.api.schemas import Health
from counterweight.service.errors import DatabaseUnavailable
from counterweight.service.store.availability import check_writable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model_exclude_none=True)
async def healthz() -> Health:
    """The process is up: answered on the event loop, needing none of the threads that
    other requests may all be using."""
    return Health(status="ok")


@router.get("/readyz", responses={503: {"model": Health}}, response_model_exclude_none=True)
def readyz(sessions: SessionsDep, response: Response) -> Health:
    """The database takes a write: one that answers reads but refuses writes (read-only,
    its file deleted) is not ready, since every submission would fail. Its 503 is this
    report, not a problem details object: probes read `status`."""
    try:
        check_writable(sessions)
    except DatabaseUnavailable as exc:
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS[503])
        return Health(status="database unavailable", detail=str(exc))
    return Health(status="ok")
