"""GET /v1/workers: the registry of live workers, on real SQLite and Postgres, with a
real worker (its loop in a thread) and the real app under uvicorn."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from counterweight.service.store.engine import transaction
from counterweight.service.store.keys import create_key
from counterweight.service.store.models import Job
from counterweight.service.store.queue.workers import beat, register
from counterweight.workers.worker import Worker
from tests.acceptance.conftest import SLOW_DIGITS
from tests.conftest import ThreadedUvicorn

BACKENDS = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path, database_url=database_url, lease_seconds=2.0, heartbeat_seconds=0.2
    )


@pytest.fixture
def http(settings: Settings) -> Iterator[httpx.Client]:
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


def listed(http: httpx.Client) -> list[dict[str, Any]]:
    response = http.get("/v1/workers")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["next_cursor"] is None
    workers: list[dict[str, Any]] = body["data"]
    return workers


def eventually(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@BACKENDS
def test_a_running_worker_is_listed_with_its_job_until_it_stops(
    settings: Settings, http: httpx.Client, sessions: sessionmaker[Session]
) -> None:
    worker = Worker(settings, device="cpu")
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        eventually(lambda: len(listed(http)) == 1)
        (me,) = listed(http)
        assert me["id"] == worker.id
        assert (me["hostname"], me["pid"], me["device"]) == (
            socket.gethostname(),
            os.getpid(),
            "cpu",
        )
        assert me["current_job_id"] is None

        job_id = http.post("/v1/jobs", json=SLOW_DIGITS).json()["id"]
        eventually(lambda: listed(http)[0]["current_job_id"] == job_id)
        # The job's lease is held under the same id the registry shows.
        with transaction(sessions) as session:
            job = session.get(Job, job_id)
            assert job is not None and job.owner == worker.id
        first_beat = listed(http)[0]["heartbeat_at"]
        eventually(lambda: listed(http)[0]["heartbeat_at"] > first_beat)
    finally:
        worker.shutdown.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert listed(http) == []  # stopped cleanly: gone at once, not after the lease


@BACKENDS
def test_a_worker_that_went_silent_drops_out_after_the_lease(
    settings: Settings, http: httpx.Client, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        register(session, "a" * 32, hostname="gpu-host-7", pid=41, device="cuda:0 (H100)")
    (silent,) = listed(http)
    assert (silent["id"], silent["hostname"], silent["device"]) == (
        "a" * 32,
        "gpu-host-7",
        "cuda:0 (H100)",
    )
    # As after a SIGKILL: no heartbeat and no goodbye; gone once the lease (2 s) passes.
    time.sleep(settings.lease_seconds + 0.2)
    assert listed(http) == []


@BACKENDS
def test_a_tenant_sees_every_worker_but_only_its_own_job_ids(
    database_url: str, tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        keys = {
            name: {"Authorization": f"Bearer {create_key(session, tenant, is_admin=admin)[1]}"}
            for name, tenant, admin in (
                ("alice", "a", False),
                ("bob", "b", False),
                ("ops", "o", True),
            )
        }
    app = create_app(Settings(home=tmp_path, database_url=database_url))
    with ThreadedUvicorn(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        jobs = {
            name: http.post("/v1/jobs", json=SLOW_DIGITS, headers=keys[name]).json()["id"]
            for name in ("alice", "bob")
        }
        with transaction(sessions) as session:
            for name in ("alice", "bob", "idle"):
                register(session, name.ljust(32, "0"), hostname=name, pid=1, device="cpu")
            for name, job_id in jobs.items():
                beat(session, name.ljust(32, "0"), job_id)

        def shown(caller: str) -> dict[str, str | None]:
            response = http.get("/v1/workers", headers=keys[caller])
            assert response.status_code == 200, response.text
            return {w["hostname"]: w["current_job_id"] for w in response.json()["data"]}

        assert shown("alice") == {"alice": jobs["alice"], "bob": None, "idle": None}
        assert shown("bob") == {"alice": None, "bob": jobs["bob"], "idle": None}
        assert shown("ops") == {"alice": jobs["alice"], "bob": jobs["bob"], "idle": None}
