"""/v1/workers: the live workers, on every host that shares this database."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, BeforeValidator

from service.api.deps import SessionsDep, SettingsDep
from service.api.schemas import as_utc
from service.db.engine import read_only
from service.queue.workers import live_workers

router = APIRouter(prefix="/v1/workers", tags=["workers"])

UtcTime = Annotated[datetime, BeforeValidator(as_utc)]


class WorkerOut(BaseModel):
    id: str
    hostname: str
    pid: int
    device: str
    current_job_id: str | None
    started_at: UtcTime
    heartbeat_at: UtcTime


class WorkerList(BaseModel):
    data: list[WorkerOut]
    next_cursor: None = None  # one page: the list is as long as the fleet


@router.get("")
def list_workers(sessions: SessionsDep, settings: SettingsDep) -> WorkerList:
    """Workers that have not stopped and whose heartbeat is younger than the lease
    (COUNTERWEIGHT_LEASE_SECONDS); a killed worker drops out once that long silent."""
    with read_only(sessions) as session:
        workers = live_workers(session, stale_after_seconds=settings.lease_seconds)
        return WorkerList(data=[WorkerOut.model_validate(w, from_attributes=True) for w in workers])
