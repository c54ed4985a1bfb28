"""The dashboard's keys, tenants and cross-site defences, against the real app on a real
uvicorn, on SQLite and Postgres: every page redirects to the login page and everything
else answers 401 without a live key once keys exist; a tenant sees only its own jobs in
every view; another site cannot submit or cancel."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from counterweight.service.store.engine import make_engine, make_session_factory, transaction
from counterweight.service.store.keys import create_key
from tests.conftest import ThreadedUvicorn

DIGITS = {"dataset": {"name": "digits", "classes": [0, 1]}, "train": {"epochs": 1}}
FOCAL = {**DIGITS, "loss": {"type": "focal"}}
BACKENDS = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)


def new_key(url: str, tenant: str) -> str:
    engine = make_engine(url)
    with transaction(make_session_factory(engine)) as session:
        _, key = create_key(session, tenant, is_admin=False)
    engine.dispose()
    return key


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings(home=tmp_path, database_url=database_url, auth_cache_seconds=0.2)
    with ThreadedUvicorn(create_app(settings)) as url:
        yield url


def submit(url: str, key: str, spec: dict[str, object]) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}  # "": open mode, no keys
    answer = httpx.post(f"{url}/v1/jobs", json=spec, headers=headers)
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def sweep(url: str, key: str) -> str:
    body = {"base": DIGITS, "grid": {"train.seed": [0, 1]}}
    answer = httpx.post(f"{url}/v1/sweeps", json=body, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code in (201, 202), answer.text
    sweep_id: str = answer.json()["id"]
    return sweep_id


@contextmanager
def logged_in(url: str, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield _log_in(client, url, key)


def _log_in(client: httpx.Client, url: str, key: str) -> httpx.Client:
    answer = client.post(
        "/ui/login", data={"key": key, "next": "/ui/jobs"}, headers={"Origin": url}
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/jobs", answer.text
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert key not in answer.headers["location"]
    return client


@BACKENDS
def test_every_view_needs_a_key_and_shows_only_the_tenants_jobs(
    api: str, database_url: str
) -> None:
    key_a, key_b = new_key(database_url, "acme"), new_key(database_url, "globex")
    mine, mine_focal = submit(api, key_a, DIGITS), submit(api, key_a, FOCAL)
    theirs = submit(api, key_b, DIGITS)
    my_sweep, their_sweep = sweep(api, key_a), sweep(api, key_b)

    pages = [
        "/ui/jobs",
        f"/ui/jobs/{mine}",
        "/ui/new",
        f"/ui/compare?ids={mine}&ids={mine_focal}",
        "/ui/sweeps",
        f"/ui/sweeps/{my_sweep}",
    ]
    data = [
        "/ui/jobs/rows",
        f"/ui/jobs/{mine}/status",
        f"/ui/jobs/{mine}/metrics",
        f"/ui/jobs/{mine}/events",
        f"/ui/jobs/{mine}/model",
        f"/ui/jobs/{mine}/card",
        f"/ui/sweeps/{my_sweep}/compare.png",
    ]
    posts = ["/ui/api/validate", "/ui/api/jobs", f"/ui/jobs/{mine}/cancel"]
    for cookies in ({}, {"counterweight_key": "not-a-key"}):
        with httpx.Client(base_url=api, cookies=cookies, timeout=30) as anonymous:
            for path in pages:
                answer = anonymous.get(path)
                assert answer.status_code == 303, (path, answer.status_code)
                assert answer.headers["location"].startswith("/ui/login?next=/ui/")
            for path in data:
                assert anonymous.get(path).status_code == 401, path
            for path in posts:
                answer = anonymous.post(path, json=DIGITS, headers={"Origin": api})
                assert answer.status_code == 401, path
            assert anonymous.get("/ui/login").status_code == 200
    assert (
        httpx.get(f"{api}/v1/jobs/{mine}", headers={"Authorization": f"Bearer {key_a}"}).json()[
            "cancel_requested"
        ]
        is False
    )

    refused = httpx.post(f"{api}/ui/login", data={"key": "wrong"}, headers={"Origin": api})
    assert refused.status_code == 401 and "unknown or revoked" in refused.text
    assert "set-cookie" not in refused.headers

    with logged_in(api, key_a) as acme:
        listing = acme.get("/ui/jobs")
        assert listing.status_code == 200
        assert "content-security-policy" in listing.headers
        assert "script-src 'self'" in listing.headers["content-security-policy"]
        assert mine in listing.text and mine_focal in listing.text and theirs not in listing.text
        rows = acme.get("/ui/jobs/rows").text
        assert mine in rows and theirs not in rows
        focal_only = acme.get("/ui/jobs", params={"loss": "focal"}).text
        assert mine_focal in focal_only and f'data-job="{mine}"' not in focal_only
        assert acme.get(f"/ui/jobs/{mine}").status_code == 200
        assert acme.get(f"/ui/compare?ids={mine}&ids={mine_focal}").status_code == 200
        assert acme.get(f"/ui/sweeps/{my_sweep}").status_code == 200
        sweeps = acme.get("/ui/sweeps").text
        assert my_sweep in sweeps and their_sweep not in sweeps
        # Another tenant's job or sweep is the same 404 as a missing one, in every view.
        for path in (
            f"/ui/jobs/{theirs}",
            f"/ui/jobs/{theirs}/status",
            f"/ui/jobs/{theirs}/metrics",
            f"/ui/jobs/{theirs}/events",
            f"/ui/jobs/{theirs}/model",
            f"/ui/jobs/{theirs}/card",
            f"/ui/compare?ids={mine}&ids={theirs}",
            f"/ui/sweeps/{their_sweep}",
            f"/ui/sweeps/{their_sweep}/compare.png",
        ):
            assert acme.get(path).status_code == 404, path
        assert acme.post(f"/ui/jobs/{theirs}/cancel", headers={"Origin": api}).status_code == 404

        # Another site: no submit, no cancel, even with the cookie (a browser that
        # ignored SameSite), and no login either.
        evil = {"Origin": "https://evil.example"}
        assert acme.post(f"/ui/jobs/{mine}/cancel", headers=evil).status_code == 403
        assert acme.post("/ui/api/jobs", json=DIGITS, headers=evil).status_code == 403
        assert acme.post(f"/ui/jobs/{mine}/cancel").status_code == 403  # no Origin at all
        bare = httpx.post(f"{api}/ui/login", data={"key": key_a}, headers=evil)
        assert bare.status_code == 403

        # The tenant's own submit and cancel work, from the dashboard's origin.
        made = acme.post("/ui/api/jobs", json=DIGITS, headers={"Origin": api})
        assert made.status_code == 202
        cancelled = acme.post(f"/ui/jobs/{mine}/cancel", headers={"Origin": api})
        assert cancelled.status_code == 303

    as_b = {"Authorization": f"Bearer {key_b}"}
    their_job = httpx.get(f"{api}/v1/jobs/{theirs}", headers=as_b).json()
    assert their_job["status"] == "queued" and not their_job["cancel_requested"]
    as_a = {"Authorization": f"Bearer {key_a}"}
    listed = httpx.get(f"{api}/v1/jobs", headers=as_a).json()["data"]
    assert made.json()["id"] in {job["id"] for job in listed}
    assert httpx.get(f"{api}/v1/jobs/{mine}", headers=as_a).json()["status"] == "cancelled"
