"""/v1/workers: the live workers, on every host that shares this database."""

from __future__ import annotations

from fastapi import APIRouter

from counterweight.service.api.deps import PrincipalDep, SessionsDep, SettingsDep
from counterweight.service.api.schemas import WorkerList, WorkerOut
from counterweight.service.store.engine import read_only
from counterweight.service.store.queue.workers import live_workers

router = APIRouter(prefix="/v1/workers", tags=["workers"])


@router.get("")
def list_workers(
    sessions: SessionsDep, settings: SettingsDep, principal: PrincipalDep
) -> WorkerList:
    """Workers that have not stopped and whose heartbeat is younger than the lease
    (COUNTERWEIGHT_LEASE_SECONDS); a killed worker drops out once that long silent.
    Every tenant sees every worker; `current_job_id` only for its own jobs."""
    with read_only(sessions) as session:
        workers = live_workers(
            session, stale_after_seconds=settings.lease_seconds, tenant=principal.scope
        )
        return WorkerList(data=[WorkerOut.model_validate(w, from_attributes=True) for w in workers])
