"""train.device and the queue, on real SQLite and Postgres: a worker claims only jobs it
can run, and a queued job that no live worker can run says why (GET /v1/jobs/{id},
GET /v1/jobs, POST /v1/jobs, through the real app under uvicorn)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from counterweight.service.spec import JobSpec
from counterweight.service.store.engine import transaction
from counterweight.service.store.models import Job, JobStatus
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.enqueue import enqueue
from counterweight.service.store.queue.workers import mark_stopped, register
from tests.conftest import ThreadedUvicorn

pytestmark = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)

Sessions = sessionmaker[Session]


def add_job(sessions: Sessions, device: str, priority: int = 0) -> str:
    spec = JobSpec.model_validate(
        {"dataset": {"name": "digits"}, "train": {"device": device}, "priority": priority}
    )
    with transaction(sessions) as session:
        return enqueue(session, spec)[0].id


def claim_all(sessions: Sessions, cuda_devices: int) -> list[str]:
    """What a worker with `cuda_devices` CUDA devices claims until it gets nothing."""
    claimed: list[str] = []
    while True:
        with transaction(sessions) as session:
            job = claim(
                session, worker_id=f"w{cuda_devices}", lease_seconds=60, **_has(cuda_devices)
            )
        if job is None:
            return claimed
        claimed.append(job.id)


def _has(cuda_devices: int) -> dict[str, Any]:
    # A CPU worker claims as callers always did, with no capability given: the default.
    return {} if cuda_devices == 0 else {"cuda_devices": cuda_devices}


def test_each_worker_claims_only_the_jobs_its_devices_can_run(sessions: Sessions) -> None:
    # The CUDA jobs come first by priority: a CPU worker must pass over them, not stop.
    cuda_3 = add_job(sessions, "cuda:3", priority=9)
    cuda_1 = add_job(sessions, "cuda:1", priority=8)
    cuda = add_job(sessions, "cuda", priority=7)
    cuda_0 = add_job(sessions, "cuda:0", priority=6)
    anywhere = [add_job(sessions, "auto"), add_job(sessions, "cpu")]

    assert claim_all(sessions, 0) == anywhere
    with transaction(sessions) as session:
        left = {job_id: session.get(Job, job_id) for job_id in (cuda_3, cuda_1, cuda, cuda_0)}
        assert {(j.status, j.attempt) for j in left.values() if j} == {(JobStatus.queued, 0)}
    assert claim_all(sessions, 1) == [cuda, cuda_0]  # one device: index 0 only
    assert claim_all(sessions, 2) == [cuda_1]  # cuda:N needs more than N devices
    assert claim_all(sessions, 3) == []
    assert claim_all(sessions, 4) == [cuda_3]


@pytest.fixture
def http(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    app = create_app(Settings(home=tmp_path, database_url=database_url, lease_seconds=30))
    with ThreadedUvicorn(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def submit(http: httpx.Client, device: str) -> dict[str, Any]:
    spec = {"dataset": {"name": "digits"}, "train": {"epochs": 1, "device": device}}
    response = http.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def waiting(http: httpx.Client, job_id: str) -> str | None:
    response = http.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    reason: str | None = response.json()["waiting"]
    return reason


def test_a_queued_job_no_live_worker_can_run_says_why(
    sessions: Sessions, http: httpx.Client
) -> None:
    cuda = submit(http, "cuda")
    cpu = submit(http, "cpu")["id"]
    assert cuda["waiting"] == "no live worker; it needs one with a CUDA device"
    assert waiting(http, cpu) == "no live worker"

    with transaction(sessions) as session:
        for n in range(2):
            register(session, f"cpu{n}".ljust(32, "0"), hostname="h", pid=n, device="cpu")
    assert waiting(http, cuda["id"]) == "no live worker has a CUDA device (2 live workers, cpu)"
    assert waiting(http, cpu) is None
    listed = {job["id"]: job["waiting"] for job in http.get("/v1/jobs").json()["data"]}
    assert listed == {cuda["id"]: waiting(http, cuda["id"]), cpu: None}

    cuda_1 = submit(http, "cuda:1")
    assert cuda_1["waiting"] == "no live worker has cuda:1 (2 live workers, cpu)"
    with transaction(sessions) as session:
        register(session, "g" * 32, hostname="gpu", pid=9, device="cuda:0 (H100)", cuda_devices=1)
    assert waiting(http, cuda["id"]) is None
    assert waiting(http, cuda_1["id"]) == (
        "no live worker has cuda:1 (3 live workers, at most 1 CUDA device each)"
    )

    # The GPU worker claims the cuda job: a running job is not waiting, whatever the fleet.
    with transaction(sessions) as session:
        job = claim(session, worker_id="g" * 32, lease_seconds=60, cuda_devices=1)
        assert job is not None and job.id == cuda["id"]
        mark_stopped(session, "g" * 32)
    assert waiting(http, cuda["id"]) is None
    assert http.get("/v1/workers").json()["data"][0]["cuda_devices"] == 0
