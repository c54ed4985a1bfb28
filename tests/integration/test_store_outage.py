"""An artifact store outage is not the jobs' fault (DESIGN.md section 2, "Store outage").

A worker and an API on their own homes, sharing a real database (SQLite, Postgres) and
a real S3-compatible server (moto's, its own process), which is killed (connections
refused) or stopped with SIGSTOP (connections accepted, never answered) while jobs are
queued, checkpoint, and publish their results. No attempt is spent on the outage, the
job's `waiting` says it waits for the store, nothing trained is thrown away, and every
job succeeds once the store is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.api.app import create_app
from counterweight.service.artifacts import CHECKPOINT, MODEL
from counterweight.service.settings import Settings
from counterweight.service.spec import JobSpec
from counterweight.service.storage import storage_for
from counterweight.service.store.engine import transaction
from counterweight.service.store.models import JobStatus
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.enqueue import enqueue
from counterweight.service.store.queue.inspect import get_job
from counterweight.service.store.queue.lease import Lease, fail, heartbeat, release_forgiven
from counterweight.workers.worker import Worker
from tests.conftest import ThreadedUvicorn
from tests.processes import TERMINAL
from tests.s3server import S3Server

QUICK = {"dataset": {"name": "digits"}, "model": {"width": 16}, "train": {"epochs": 1}}
THREE_EPOCHS = {
    "dataset": {"name": "digits"},
    "model": {"arch": "mlp", "width": 64},
    "train": {"epochs": 3, "batch_size": 8, "seed": 1},
}
# Short beats, and a short retry backoff: without the fix, jobs fail within seconds.
TIMING = {"heartbeat_seconds": 0.2, "lease_seconds": 10, "retry_backoff_seconds": 0.2}


@contextmanager
def hosts(
    database_url: str, store: S3Server, tmp_path: Path
) -> Iterator[tuple[httpx.Client, Settings]]:
    """The API's client and the worker host's settings: two homes, one database, one store."""

    fields: dict[str, Any] = {**TIMING, **store.settings()}

    def on(name: str) -> Settings:
        return Settings(home=tmp_path / name, database_url=database_url, **fields)

    with ThreadedUvicorn(create_app(on("api"))) as url, httpx.Client(base_url=url) as http:
        yield http, on("worker")


@contextmanager
def running_worker(settings: Settings) -> Iterator[Worker]:
    worker = Worker(settings, device="cpu")
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.shutdown.set()
        thread.join(timeout=120)
        assert not thread.is_alive()


def submit(http: httpx.Client, spec: dict[str, Any]) -> str:
    response = http.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def wait_for(
    http: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if done(job):
            return job
        if job["status"] in TERMINAL or time.monotonic() > deadline:
            raise AssertionError(f"not what was awaited: {job}")
        time.sleep(0.1)


def waits_for_store(phrase: str) -> Callable[[dict[str, Any]], bool]:
    return lambda job: phrase in (job["waiting"] or "")


def succeeded(http: httpx.Client, job_id: str) -> dict[str, Any]:
    job = wait_for(http, job_id, lambda job: job["status"] in TERMINAL)
    assert job["status"] == "succeeded", job
    assert job["waiting"] is None and job["error"] is None, job
    return job


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_queued_jobs_wait_for_a_store_that_refuses_connections_and_keep_their_attempts(
    database_url: str, tmp_path: Path
) -> None:
    with S3Server(tmp_path) as store, hosts(database_url, store, tmp_path) as (http, worker):
        ids = [submit(http, QUICK) for _ in range(3)]
        store.kill()
        with running_worker(worker):
            first = wait_for(http, ids[0], waits_for_store("artifact store is unreachable"))
            assert "fetch the job's checkpoint" in first["waiting"]
            assert "none of the job's attempts" in first["waiting"]
            time.sleep(3)  # the worker tries the store again and again meanwhile
            first = http.get(f"/v1/jobs/{ids[0]}").json()
            assert (first["status"], first["attempt"], first["error"]) == ("running", 1, None)
            # The worker waits with the job it holds; the others stay queued, untouched.
            for job_id in ids[1:]:
                assert http.get(f"/v1/jobs/{job_id}").json()["attempt"] == 0
        # A worker that stops while it waits gives the job back; the attempt is forgiven.
        first = http.get(f"/v1/jobs/{ids[0]}").json()
        assert (first["status"], first["attempt"], first["forgiven_attempts"]) == ("queued", 1, 1)

        with running_worker(worker):
            wait_for(http, ids[0], lambda job: job["attempt"] == 2 and job["waiting"] is not None)
            store.restart()
            jobs = [succeeded(http, job_id) for job_id in ids]
    counted = [job["attempt"] - job["forgiven_attempts"] for job in jobs]
    assert counted == [1, 1, 1], jobs


def on_upload(worker: Settings, name: str, nth: int, fault: Callable[[], object]) -> None:
    """Run `fault` as the worker's `nth` upload of a job's file `name` is about to be sent,
    whatever the machine's speed: a hook on the worker's real S3 client (one per process
    and store, storage_for), which then sends the request to the failed store."""
    seen = 0

    def before_put(params: dict[str, Any], **_: Any) -> None:
        nonlocal seen
        if params["Key"].endswith(f"/{name}"):
            seen += 1
            if seen == nth:
                fault()

    storage: Any = storage_for(worker)
    storage.client.meta.events.register("before-parameter-build.s3.PutObject", before_put)


@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)
def test_a_trained_job_whose_results_cannot_be_stored_keeps_them_until_the_store_is_back(
    database_url: str, tmp_path: Path
) -> None:
    with S3Server(tmp_path) as store, hosts(database_url, store, tmp_path) as (http, worker):
        on_upload(worker, MODEL, 1, store.kill)  # killed as the results go up
        with running_worker(worker):
            job_id = submit(http, THREE_EPOCHS)
            job = wait_for(http, job_id, waits_for_store("store the results"))
            assert (job["status"], job["attempt"], job["progress"]["epoch"]) == ("running", 1, 3)
            model = worker.home / "artifacts" / "jobs" / job_id / MODEL
            assert model.is_file()  # the trained model, kept on the worker's disk
            time.sleep(3)
            assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
            store.restart()
            job = succeeded(http, job_id)
        assert (job["attempt"], job["forgiven_attempts"]) == (1, 0)
        metrics = http.get(f"/v1/jobs/{job_id}/metrics").json()
        assert metrics["resumed_from_epoch"] == 0  # trained once, never again
        # The API host has no file of the job: it serves the model from the store.
        served = http.get(f"/v1/jobs/{job_id}/model")
        assert served.status_code == 200 and served.content == model.read_bytes()


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_a_checkpoint_upload_to_a_hung_store_shows_the_job_waiting_and_costs_no_attempt(
    database_url: str, tmp_path: Path
) -> None:
    with S3Server(tmp_path) as store, hosts(database_url, store, tmp_path) as (http, worker):
        on_upload(worker, CHECKPOINT, 2, store.pause)  # epoch 2's checkpoint: no answer
        with running_worker(worker):
            job_id = submit(http, THREE_EPOCHS)
            try:
                job = wait_for(http, job_id, waits_for_store("has taken"), timeout=60)
            finally:
                store.resume()
            assert "store the checkpoint" in job["waiting"]
            assert (job["status"], job["attempt"], job["progress"]["epoch"]) == ("running", 1, 1)
            job = succeeded(http, job_id)
        assert (job["attempt"], job["forgiven_attempts"]) == (1, 0)


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_a_job_given_back_while_it_waits_for_the_store_keeps_its_attempts(
    sessions: sessionmaker[Session],
) -> None:
    """The queue's side: the attempt of a job given back while its worker waited for the
    store is forgiven, so that even a job with one attempt gets to run to its end."""
    spec = JobSpec.model_validate({**QUICK, "max_attempts": 1})
    waiting = "the artifact store is unreachable: waiting to fetch the job's checkpoint"
    with transaction(sessions) as session:
        job_id = enqueue(session, spec)[0].id
    for _ in range(3):
        with transaction(sessions) as session:
            job = claim(session, worker_id="w", lease_seconds=30)
            assert job is not None and job.waiting is None
            lease = Lease.of(job)
            heartbeat(session, lease, lease_seconds=30, progress=None, waiting=waiting)
            assert get_job(session, job_id).waiting == waiting
            release_forgiven(session, lease, waiting=waiting)
        with transaction(sessions) as session:
            job = get_job(session, job_id)
            assert (job.status, job.waiting) == (JobStatus.queued, waiting)
    with transaction(sessions) as session:
        job = claim(session, worker_id="w", lease_seconds=30)
        assert job is not None
        lease = Lease.of(job)
        assert (lease.attempt, lease.forgiven_attempts, lease.counted) == (4, 3, 1)
        fail(session, lease, error="RuntimeError: boom", retryable=True, backoff_seconds=0)
    with transaction(sessions) as session:
        job = get_job(session, job_id)
        assert job.status == JobStatus.failed and job.waiting is None
        assert job.error is not None and "attempt 1 of 1" in job.error
