"""Every error answer is an RFC 9457 problem details object (application/problem+json)
that keeps the members clients read before, `detail` and, for validation, `errors`;
every 429 and 503 says when to retry. Real app under a real uvicorn, real SQLite.

The errors are caused as a client causes them (an unknown id, a full queue, a read-only
database, a missing key, ...). Each domain error class the app maps, including those
added later, is also raised from a route added to the real app for this test, so that
none answers the old shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from counterweight.service.api.app import ERROR_STATUS, create_app
from counterweight.service.settings import Settings
from counterweight.service.store.engine import make_engine, make_session_factory, transaction
from counterweight.service.store.keys import create_key
from tests.conftest import ThreadedUvicorn
from tests.integration.test_database_unavailable import READ_ONLY_SESSIONS

DIGITS: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}
STANDARD = {"type", "title", "status", "detail"}
TYPE = re.compile(r"^(about:blank|urn:counterweight:problem:[a-z0-9]+(-[a-z0-9]+)*)$")


def assert_problem(
    response: httpx.Response, status: int, path: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert set(body) >= STANDARD, body
    assert body["status"] == status
    assert TYPE.match(body["type"]), body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if path is not None:
        assert body["instance"] == path
    if status in (429, 503):
        assert int(response.headers["Retry-After"]) >= 1
    return body


def _raise(error: Exception) -> Any:
    async def endpoint() -> None:
        raise error

    return endpoint


def app_that_raises(settings: Settings) -> FastAPI:
    """The real app, plus routes under /test-raise that raise each mapped domain error
    (with the message "<class> raised") and a bug (a plain RuntimeError)."""
    app = create_app(settings)
    for kind in ERROR_STATUS:
        error = kind.__new__(kind)
        Exception.__init__(error, f"{kind.__name__} raised")
        app.add_api_route(f"/test-raise/{kind.__name__}", _raise(error))
    app.add_api_route("/test-raise/bug", _raise(RuntimeError("a bug's words")))
    return app


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        database_url=database_url,
        max_queued_jobs_per_tenant=1,
        max_request_bytes=4000,
    )


@pytest.fixture
def http(settings: Settings) -> Iterator[httpx.Client]:
    with ThreadedUvicorn(app_that_raises(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_every_mapped_domain_error_and_a_bug_answer_problem_details(http: httpx.Client) -> None:
    for kind, status in ERROR_STATUS.items():
        path = f"/test-raise/{kind.__name__}"
        body = assert_problem(http.get(path), status, path)
        assert body["detail"] == f"{kind.__name__} raised"  # the message, as before
        assert body["type"].startswith("urn:counterweight:problem:")
    kinds = [http.get(f"/test-raise/{kind.__name__}").json()["type"] for kind in ERROR_STATUS]
    assert len(set(kinds)) == len(kinds), "two error classes share a problem type"

    bug = assert_problem(http.get("/test-raise/bug"), 500, "/test-raise/bug")
    assert bug["type"] == "about:blank" and bug["title"] == "Internal Server Error"
    assert "a bug's words" not in bug["detail"]  # the log has them, not the client


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_errors_a_client_causes_keep_detail_and_errors(http: httpx.Client) -> None:
    invalid = assert_problem(http.post("/v1/jobs", json={"train": {"epochs": 0}}), 422, "/v1/jobs")
    assert (
        invalid["detail"] == "dataset: Field required; train.epochs: Input should be greater than 0"
    )
    assert invalid["errors"] == [
        {"field": "dataset", "msg": "Field required", "type": "missing"},
        {"field": "train.epochs", "msg": "Input should be greater than 0", "type": "greater_than"},
    ]
    assert invalid["type"] == "urn:counterweight:problem:request-validation-error"

    missing = assert_problem(http.get("/v1/jobs/nope"), 404, "/v1/jobs/nope")
    assert (missing["detail"], missing["type"], missing["title"]) == (
        "no job with id 'nope'",
        "urn:counterweight:problem:job-not-found",
        "Job not found",
    )
    unrouted = assert_problem(http.get("/v2/anything"), 404, "/v2/anything")
    assert (unrouted["type"], unrouted["title"], unrouted["detail"]) == (
        "about:blank",
        "Not Found",
        "Not Found",
    )
    wrong_method = http.put("/v1/datasets")
    assert assert_problem(wrong_method, 405, "/v1/datasets")["detail"] == "Method Not Allowed"
    assert wrong_method.headers["allow"] == "GET, POST"

    cursor = assert_problem(http.get("/v1/jobs", params={"cursor": "x"}), 422, "/v1/jobs")
    assert cursor["type"] == "urn:counterweight:problem:bad-cursor" and "errors" not in cursor
    nul = assert_problem(http.get("/v1/jobs", params={"status": "a\x00"}), 422)
    assert nul["detail"] == "query: a parameter holds a NUL character (%00)"
    too_large = http.post("/v1/jobs", json={**DIGITS, "pad": "x" * 5000})
    assert "COUNTERWEIGHT_MAX_REQUEST_BYTES" in assert_problem(too_large, 413)["detail"]

    first = http.post("/v1/jobs", json=DIGITS)
    assert first.status_code == 202 and first.headers["content-type"] == "application/json"
    job_id = first.json()["id"]
    full = assert_problem(http.post("/v1/jobs", json=DIGITS), 429, "/v1/jobs")
    assert full["type"] == "urn:counterweight:problem:queue-full"
    assert "at most 1" in full["detail"]
    conflict = assert_problem(http.get(f"/v1/jobs/{job_id}/metrics"), 409)
    assert conflict["detail"] == f"job {job_id} is queued; its metrics exists once it has succeeded"


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_a_missing_key_is_a_problem_with_its_challenge(
    http: httpx.Client, database_url: str
) -> None:
    engine = make_engine(database_url)
    with transaction(make_session_factory(engine)) as session:
        create_key(session, "acme")
    engine.dispose()
    refused = http.get("/v1/jobs")
    body = assert_problem(refused, 401, "/v1/jobs")
    assert body["detail"].startswith("missing API key")
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert http.get("/healthz").headers["content-type"] == "application/json"


@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)
def test_a_read_only_database_is_a_503_problem_with_retry_after(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, database_url=database_url + READ_ONLY_SESSIONS)
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        body = assert_problem(http.post("/v1/jobs", json=DIGITS), 503, "/v1/jobs")
        assert body["type"] == "urn:counterweight:problem:database-unavailable"
        assert body["detail"].startswith("database unavailable: the database is read-only")
        ready = http.get("/readyz")  # a readiness report, not a problem: probes read `status`
        assert ready.status_code == 503 and ready.json()["status"] == "database unavailable"
        assert int(ready.headers["Retry-After"]) >= 1
