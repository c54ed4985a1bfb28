"""GET /metrics against the real app and a real database, parsed as Prometheus parses it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from counterweight.service.spec import JobSpec
from counterweight.service.store.engine import transaction
from counterweight.service.store.models import Job, WorkerRecord
from counterweight.service.store.queue.cancel import request_cancel
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.enqueue import enqueue
from counterweight.service.store.queue.lease import Lease, fail, finish
from tests.conftest import ThreadedUvicorn
from tests.databases import drop_postgres_database

BACKENDS = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)

Sessions = sessionmaker[Session]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(home=tmp_path, database_url=database_url, lease_seconds=30)
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http


def scrape(client: httpx.Client) -> list[Sample]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = text_string_to_metric_families(response.text)
    return [sample for family in families for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def run_job(sessions: Sessions, *, waited: float, ran: float | None, outcome: str) -> str:
    """A job through the real queue, then given known timestamps (the clock is not ours
    to wait on): submitted at T0, started `waited` s later, ended `ran` s after that."""
    with transaction(sessions) as session:
        job, _ = enqueue(session, JobSpec.model_validate({"dataset": {"name": "digits"}}))
    if outcome == "cancelled":
        with transaction(sessions) as session:
            request_cancel(session, job.id)
    else:
        with transaction(sessions) as session:
            claimed = claim(session, worker_id="w", lease_seconds=60)
            assert claimed is not None and claimed.id == job.id
        lease = Lease.of(claimed)
        with transaction(sessions) as session:
            if outcome == "succeeded":
                finish(session, lease, result={})
            elif outcome == "failed":
                fail(session, lease, error="boom", retryable=False, backoff_seconds=0)
    times: dict[str, datetime | None] = {"created_at": T0}
    if outcome != "cancelled":  # a job cancelled while queued never started
        times["started_at"] = started = T0 + timedelta(seconds=waited)
        times["finished_at"] = started + timedelta(seconds=ran) if ran is not None else None
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == job.id).values(**times))
    return job.id


@BACKENDS
def test_jobs_by_status_and_their_wait_and_run_time_histograms(
    client: httpx.Client, sessions: Sessions
) -> None:
    run_job(sessions, waited=0.3, ran=2.0, outcome="succeeded")
    run_job(sessions, waited=3.0, ran=40.0, outcome="succeeded")
    run_job(sessions, waited=2.0, ran=400.0, outcome="failed")
    run_job(sessions, waited=7.0, ran=None, outcome="running")
    run_job(sessions, waited=0.0, ran=None, outcome="cancelled")  # never started
    with transaction(sessions) as session:
        enqueue(session, JobSpec.model_validate({"dataset": {"name": "digits"}}))

    samples = scrape(client)
    by_status = {
        status: value(samples, "counterweight_jobs", status=status)
        for status in ("queued", "running", "succeeded", "failed", "cancelled")
    }
    assert by_status == {"queued": 1, "running": 1, "succeeded": 2, "failed": 1, "cancelled": 1}

    # Queue wait: the four jobs that started (0.3, 3, 2 and 7 s).
    wait = "counterweight_job_queue_wait_seconds"
    assert value(samples, f"{wait}_count") == 4
    assert value(samples, f"{wait}_sum") == pytest.approx(12.3, abs=0.01)
    assert value(samples, f"{wait}_bucket", le="0.5") == 1
    assert value(samples, f"{wait}_bucket", le="5.0") == 3
    assert value(samples, f"{wait}_bucket", le="15.0") == 4

    # Run time, by how the job ended; the running job is not in it yet.
    run = "counterweight_job_run_seconds"
    assert value(samples, f"{run}_count", status="succeeded") == 2
    assert value(samples, f"{run}_sum", status="succeeded") == pytest.approx(42.0, abs=0.01)
    assert value(samples, f"{run}_bucket", status="succeeded", le="5.0") == 1
    assert value(samples, f"{run}_bucket", status="succeeded", le="60.0") == 2
    assert value(samples, f"{run}_count", status="failed") == 1
    assert value(samples, f"{run}_bucket", status="failed", le="300.0") == 0
    assert value(samples, f"{run}_bucket", status="failed", le="900.0") == 1
    assert not [s for s in samples if s.name == f"{run}_count" and s.labels["status"] == "running"]


@BACKENDS
def test_live_workers_and_last_heartbeats(client: httpx.Client, sessions: Sessions) -> None:
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        session.add_all(
            [
                WorkerRecord(id="live", hostname="gpu-1", pid=1, device="cpu", heartbeat_at=now),
                # SIGKILLed ten minutes ago: not live, but its silence stays visible.
                WorkerRecord(
                    id="silent",
                    hostname="gpu-2",
                    pid=2,
                    device="cuda:0",
                    heartbeat_at=now - timedelta(minutes=10),
                ),
                WorkerRecord(
                    id="stopped",
                    hostname="gpu-3",
                    pid=3,
                    device="cpu",
                    heartbeat_at=now,
                    stopped_at=now,
                ),
            ]
        )
    samples = scrape(client)
    assert value(samples, "counterweight_workers_live") == 1
    heartbeats = {
        s.labels["worker"]: s.value
        for s in samples
        if s.name == "counterweight_worker_last_heartbeat_timestamp_seconds"
    }
    assert heartbeats.keys() == {"live", "silent"}
    assert heartbeats["live"] == pytest.approx(now.timestamp(), abs=0.01)
    assert heartbeats["silent"] == pytest.approx(now.timestamp() - 600, abs=0.01)
    assert value(samples, "counterweight_database_up") == 1


@BACKENDS
def test_request_latency_by_route_template_and_method(client: httpx.Client) -> None:
    job_id = client.post("/v1/jobs", json={"dataset": {"name": "digits"}}).json()["id"]
    for _ in range(3):
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert client.get("/v1/jobs/0123456789abcdef0123456789abcdef").status_code == 404
    assert client.get("/no/such/path/1").status_code == 404

    samples = scrape(client)
    latency = "counterweight_http_request_duration_seconds"
    read = {"method": "GET", "route": "/v1/jobs/{job_id}"}
    assert value(samples, f"{latency}_count", **read, status="200") == 3
    assert value(samples, f"{latency}_count", **read, status="404") == 1
    assert value(samples, f"{latency}_count", method="POST", route="/v1/jobs") == 1
    assert value(samples, f"{latency}_count", route="unmatched") == 1
    assert value(samples, f"{latency}_sum", **read, status="200") > 0
    # No URL with an id in it becomes a label.
    assert not [s for s in samples if job_id in str(s.labels)]


@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)
def test_an_unreachable_database_is_reported_not_an_error(
    client: httpx.Client, database_url: str
) -> None:
    assert value(scrape(client), "counterweight_database_up") == 1
    drop_postgres_database(database_url)  # every connection closed, the database gone
    samples = scrape(client)
    assert value(samples, "counterweight_database_up") == 0
    assert not [s for s in samples if s.name == "counterweight_jobs"]  # unknown, not zero
