"""The HTTP API against a real database, served by a real uvicorn, called with httpx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from counterweight.service.store.engine import libpq_dsn, make_engine
from tests.conftest import ThreadedUvicorn
from tests.databases import drop_postgres_database, new_postgres_database

DIGITS: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 2}}


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(home=tmp_path, database_url=database_url)
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http


def with_changes(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    spec = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    *parents, leaf = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return spec


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_submit_read_list_and_cancel(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json=DIGITS)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["status"], job["attempt"], job["max_attempts"]) == ("queued", 0, 3)
    assert job["created_at"].endswith(("Z", "+00:00"))
    assert client.get(f"/v1/jobs/{job['id']}").json()["spec"]["train"]["epochs"] == 2

    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert "cancelled" in again.json()["detail"]
    assert client.get(f"/v1/jobs/{job['id']}/metrics").status_code == 409


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_list_pages_newest_first_with_status_filter(client: httpx.Client) -> None:
    ids = [client.post("/v1/jobs", json=DIGITS).json()["id"] for _ in range(5)]
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        seen += [job["id"] for job in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    queued = client.get("/v1/jobs", params={"status": "queued"}).json()["data"]
    assert [job["id"] for job in queued] == ids[:0:-1]
    assert client.get("/v1/jobs", params={"cursor": "garbage"}).status_code == 422
    assert client.get("/v1/jobs", params={"status": "sleeping"}).status_code == 422


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_idempotency_key_over_http(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/v1/jobs", json=DIGITS, headers=headers)
    replay = client.post("/v1/jobs", json=DIGITS, headers=headers)
    assert first.status_code == replay.status_code == 202
    assert replay.json()["id"] == first.json()["id"]
    assert replay.headers["idempotent-replayed"] == "true"
    other = client.post("/v1/jobs", json=with_changes(DIGITS, "train.epochs", 3), headers=headers)
    assert other.status_code == 409
    assert "order-42" in other.json()["detail"]
    assert len(client.get("/v1/jobs").json()["data"]) == 1


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("train.learning_rate", 0.1, "train.learning_rate"),  # unknown field
        ("surprise", True, "surprise"),
        ("train.epochs", "ten", "train.epochs"),  # wrong type
        ("train.epochs", 0, "train.epochs"),
        ("train.epochs", -3, "train.epochs"),
        ("dataset.name", "imagenet", "dataset.name"),
        ("loss.type", "hinge", "loss.type"),
        ("train.device", "tpu", "train.device"),
        ("dataset.classes", [1, 1], "dataset.classes"),
    ],
)
def test_bad_specs_are_422_naming_the_field(
    client: httpx.Client, path: str, value: Any, field: str
) -> None:
    for route in ("/v1/jobs", "/v1/jobs/validate"):
        response = client.post(route, json=with_changes(DIGITS, path, value))
        assert response.status_code == 422, response.text
        body = response.json()
        assert field in body["detail"]
        assert field in [error["field"] for error in body["errors"]]
    assert client.get("/v1/jobs").json()["data"] == []


def test_dataset_problems_are_422_at_submit(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json=with_changes(DIGITS, "dataset.classes", [3, 12]))
    assert response.status_code == 422
    assert "12" in response.json()["detail"]
    assert client.get("/v1/jobs").json()["data"] == []


@pytest.mark.parametrize(
    "body", [b"", b"{", b"[]", b"null", b'"digits"', b'{"dataset": null}', b"\xff\xfe"]
)
def test_malformed_bodies_are_4xx_never_500(client: httpx.Client, body: bytes) -> None:
    response = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500


def test_unknown_ids_are_404(client: httpx.Client) -> None:
    for method, path in [
        ("GET", "/v1/jobs/nope"),
        ("POST", "/v1/jobs/nope/cancel"),
        ("GET", "/v1/jobs/nope/metrics"),
        ("GET", "/v1/jobs/nope/model"),
        ("GET", "/v1/jobs/nope/model/card"),
        ("GET", "/v1/jobs/../etc/passwd/model"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path, response.text)


def test_validate_reports_counts_and_queues_nothing(client: httpx.Client) -> None:
    spec = with_changes(DIGITS, "dataset.classes", [3, 8])
    report = client.post("/v1/jobs/validate", json=spec).json()
    assert report["class_names"] == ["3", "8"]
    assert report["class_weight"] == [1.0, 1.0]
    counts = report["counts"]
    # digits has 183 threes and 174 eights; every one of them lands in exactly one split.
    totals = [sum(c) for c in zip(counts["train"], counts["val"], counts["test"], strict=True)]
    assert totals == [183, 174]
    assert report["warnings"] == []
    assert client.get("/v1/jobs").json()["data"] == []


def test_health_and_readiness_and_docs(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/validate", "/v1/jobs/{job_id}/model/card"} <= set(paths)


def test_readyz_is_503_when_the_database_is_gone(tmp_path: Path) -> None:
    url = new_postgres_database()
    app = create_app(Settings(home=tmp_path, database_url=url))
    try:
        with ThreadedUvicorn(app) as base:
            assert httpx.get(f"{base}/readyz").status_code == 200
            drop_postgres_database(url)
            response = httpx.get(f"{base}/readyz")
            assert (response.status_code, response.json()["status"]) == (
                503,
                "database unavailable",
            )
            assert httpx.get(f"{base}/healthz").status_code == 200
    finally:
        drop_postgres_database(url)


def test_status_reads_do_not_wait_for_a_writer_on_sqlite(tmp_path: Path) -> None:
    """A worker holding SQLite's write lock (a long commit, a claim) must not stall
    clients polling status: reads take no lock, and see the last commit."""
    settings = Settings(home=tmp_path, sqlite_busy_timeout_ms=3000)
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        job_id = http.post("/v1/jobs", json=DIGITS).json()["id"]
        writer = make_engine(settings.resolved_database_url)
        with writer.begin() as conn:  # BEGIN IMMEDIATE: the write lock, held
            conn.execute(text("UPDATE jobs SET priority = 7 WHERE id = :id"), {"id": job_id})
            read = http.get(f"/v1/jobs/{job_id}", timeout=10)
            listed = http.get("/v1/jobs", timeout=10)
        writer.dispose()
        assert (read.status_code, read.json()["priority"]) == (200, 0)  # the last commit
        assert listed.status_code == 200
        assert http.get(f"/v1/jobs/{job_id}").json()["priority"] == 7


@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)
def test_status_polls_survive_postgres_dropping_every_connection(
    client: httpx.Client, database_url: str
) -> None:
    """A restart or failover kills every open connection; the next poll reconnects
    instead of failing (service.api.reads keeps its own asyncio connections)."""
    job_id = client.post("/v1/jobs", json=DIGITS).json()["id"]
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    with psycopg.connect(libpq_dsn(database_url), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    assert killed  # the API's connections, the polls' among them
    polled = client.get(f"/v1/jobs/{job_id}")
    assert (polled.status_code, polled.json()["id"]) == (200, job_id)
