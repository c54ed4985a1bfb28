"""DELETE /v1/jobs/{id} and /v1/datasets/{id}, retention, the store's usage in /metrics:
the real app under uvicorn, real SQLite and Postgres, files in a real local store and in
the S3 test server. The worker's part (claim, write files, finish) is played through the
queue's own functions, as a worker calls them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.artifacts import job_dir
from counterweight.service.settings import Settings
from counterweight.service.storage import Storage, storage_for
from counterweight.service.store.engine import make_engine, make_session_factory, transaction
from counterweight.service.store.queue.cancel import settle_unless_cancelled
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.lease import Lease, finish
from tests.conftest import ThreadedUvicorn
from tests.integration.test_tenant_isolation import tiny_npz
from tests.s3server import S3Server

SPEC: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}
JOB_FILES = ("model.safetensors", "card.json", "checkpoint.pt", "logs/attempt-1.log")


@dataclass
class World:
    http: httpx.Client
    settings: Settings
    storage: Storage
    claim: Callable[[], Lease]
    settle: Callable[[Lease], None]


def _world(database_url: str, home: Path, **settings: Any) -> Iterator[World]:
    config = Settings(
        home=home,
        database_url=database_url,
        heartbeat_seconds=0.2,
        lease_seconds=1.0,  # the janitor waits this long after a job ended
        janitor_seconds=0.2,
        **settings,
    )
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    storage = storage_for(config)

    def claim_and_write() -> Lease:
        with transaction(sessions) as session:
            job = claim(session, worker_id="w", lease_seconds=60)
            assert job is not None
            lease = Lease.of(job)
        for name in JOB_FILES:  # as the worker writes them, then copies them to the store
            path = job_dir(config.artifacts_dir, lease.job_id) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * 1000)
            storage.upload(f"artifacts/jobs/{lease.job_id}/{name}", path)
        return lease

    def settle(lease: Lease) -> None:
        with transaction(sessions) as session:
            settle_unless_cancelled(session, lease, finish, result={"final": {}})

    try:
        with (
            ThreadedUvicorn(create_app(config)) as url,
            httpx.Client(base_url=url, timeout=60) as http,
        ):
            yield World(http, config, storage, claim_and_write, settle)
    finally:
        engine.dispose()


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    yield from _world(database_url, tmp_path)


@pytest.fixture
def s3_world(database_url: str, tmp_path: Path) -> Iterator[World]:
    with S3Server(tmp_path) as server:
        yield from _world(database_url, tmp_path / "home", **server.settings())


def stored(world: World, job_id: str) -> list[str]:
    return [key for key, _ in world.storage.list_files(f"artifacts/jobs/{job_id}")]


def eventually(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def submit(world: World) -> str:
    response = world.http.post("/v1/jobs", json=SPEC)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def check_deleted_ended_job(world: World) -> None:
    job_id = submit(world)
    world.settle(world.claim())
    assert len(stored(world, job_id)) == len(JOB_FILES)
    local = job_dir(world.settings.artifacts_dir, job_id)
    assert local.is_dir()

    deleted = world.http.delete(f"/v1/jobs/{job_id}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() | {"files": None} == {
        "id": job_id,
        "deleted": True,
        "status": "succeeded",
        "files": None,
    }
    for path in ("", "/metrics", "/events", "/logs", "/model"):
        assert world.http.get(f"/v1/jobs/{job_id}{path}").status_code == 404, path
    assert world.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
    assert world.http.get("/v1/jobs").json()["data"] == []
    # Removed once the job has been ended a lease's length (its worker's last copies).
    eventually(lambda: stored(world, job_id) == [], "the job's files were not removed")
    assert not local.exists()
    again = world.http.delete(f"/v1/jobs/{job_id}")
    assert again.status_code == 200
    assert again.json() == {
        "id": job_id,
        "deleted": True,
        "status": "succeeded",
        "files": "removed",
    }


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_deleting_an_ended_job_hides_it_and_removes_its_files(world: World) -> None:
    check_deleted_ended_job(world)


def test_deleting_an_ended_job_removes_its_files_from_s3(s3_world: World) -> None:
    check_deleted_ended_job(s3_world)


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_deleting_a_queued_job_cancels_it_and_is_idempotent(world: World) -> None:
    job_id = submit(world)
    first = world.http.delete(f"/v1/jobs/{job_id}")
    assert first.status_code == 200, first.text
    assert first.json() == {
        "id": job_id,
        "deleted": True,
        "status": "cancelled",
        "files": "removed",
    }
    assert world.http.delete(f"/v1/jobs/{job_id}").json() == first.json()
    assert world.http.get(f"/v1/jobs/{job_id}").status_code == 404
    assert world.http.delete(f"/v1/jobs/{'0' * 32}").status_code == 404


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_deleting_a_running_job_cancels_it_and_keeps_its_files_until_it_ended(
    world: World,
) -> None:
    job_id = submit(world)
    lease = world.claim()
    deleted = world.http.delete(f"/v1/jobs/{job_id}")
    assert deleted.json() == {
        "id": job_id,
        "deleted": True,
        "status": "running",
        "files": "pending",
    }
    assert world.http.get(f"/v1/jobs/{job_id}").status_code == 404
    time.sleep(2.0)  # ten janitor passes, past the settle time: the checkpoint is in use
    assert len(stored(world, job_id)) == len(JOB_FILES)
    # Its worker sees the cancel: whatever it was about to record, the job ends cancelled.
    world.settle(lease)
    eventually(lambda: stored(world, job_id) == [], "the ended job's files were not removed")
    assert world.http.delete(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


@pytest.fixture
def retention_world(database_url: str, tmp_path: Path) -> Iterator[World]:
    # 2 seconds, in days: jobs that ended 2 s ago are past retention.
    yield from _world(database_url, tmp_path, retention_days=2 / 86400)


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_retention_removes_ended_jobs_files_and_never_a_running_job_s(
    retention_world: World,
) -> None:
    world = retention_world
    ended = submit(world)
    world.settle(world.claim())
    running = submit(world)
    lease = world.claim()
    eventually(lambda: stored(world, ended) == [], "retention did not remove the ended job's files")
    time.sleep(1.0)  # more passes: a running job's files stay, however old the job
    assert len(stored(world, running)) == len(JOB_FILES)
    job = world.http.get(f"/v1/jobs/{ended}")
    assert job.status_code == 200 and job.json()["status"] == "succeeded"
    assert world.http.get(f"/v1/jobs/{ended}/metrics").status_code == 200
    model = world.http.get(f"/v1/jobs/{ended}/model")
    assert model.status_code == 404
    assert "removed from the artifact store" in model.json()["detail"]
    world.settle(lease)
    eventually(lambda: stored(world, running) == [], "the job's files went once it had ended")


def check_dataset_deletion(world: World) -> None:
    upload = world.http.post("/v1/datasets", files={"file": ("d.npz", tiny_npz())})
    assert upload.status_code == 201, upload.text
    dataset_id = upload.json()["id"]
    key = f"datasets/{dataset_id}.npz"
    assert world.storage.exists(key)
    job = world.http.post("/v1/jobs", json={"dataset": {"name": "uploaded", "id": dataset_id}})
    job_id = job.json()["id"]

    refused = world.http.delete(f"/v1/datasets/{dataset_id}")
    assert refused.status_code == 409
    assert job_id in refused.json()["detail"]
    assert world.storage.exists(key)
    world.http.post(f"/v1/jobs/{job_id}/cancel")

    assert world.http.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert not world.storage.exists(key)
    assert not (world.settings.home / key).exists()
    assert world.http.get(f"/v1/datasets/{dataset_id}").status_code == 404
    assert world.http.delete(f"/v1/datasets/{dataset_id}").status_code == 404
    again = world.http.post("/v1/jobs", json={"dataset": {"name": "uploaded", "id": dataset_id}})
    assert again.status_code == 422  # a job can no longer name it


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_a_dataset_in_use_is_not_deleted_then_is(world: World) -> None:
    check_dataset_deletion(world)


def test_deleting_a_dataset_removes_it_from_s3(s3_world: World) -> None:
    check_dataset_deletion(s3_world)


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_metrics_show_the_store_usage_per_tenant(world: World) -> None:
    upload = world.http.post("/v1/datasets", files={"file": ("d.npz", tiny_npz())})
    size = upload.json()["size_bytes"]
    submit(world)
    world.settle(world.claim())
    expected = (
        f'counterweight_store_bytes{{tenant="default"}} {float(size + 1000 * len(JOB_FILES))}'
    )
    eventually(
        lambda: expected in world.http.get("/metrics").text,
        f"no {expected!r} in /metrics",
    )
    assert f'counterweight_store_files{{tenant="default"}} {float(1 + len(JOB_FILES))}' in (
        world.http.get("/metrics").text
    )
