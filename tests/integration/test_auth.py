"""API keys: the CLI makes them, the API demands them on /v1 once one exists, only
their hashes are stored, revoking works, and the service without keys runs open only
on loopback. Real app under uvicorn, real SQLite and Postgres, the real CLI."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from counterweight.service.api.app import create_app
from counterweight.service.cli.keys import refuse_open_mode
from counterweight.service.settings import Settings
from counterweight.service.store.engine import make_engine, make_session_factory, transaction
from counterweight.service.store.keys import create_key, revoke_key
from counterweight.service.store.models import ApiKey
from counterweight_client import Client
from counterweight_client.errors import Unauthorized
from tests.conftest import ThreadedUvicorn
from tests.processes import free_port

DIGITS = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}


def cli(home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COUNTERWEIGHT_HOME": str(home), "COUNTERWEIGHT_DATABASE_URL": url}
    command = [sys.executable, "-m", "counterweight.service.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def new_key(url: str, tenant: str, *, admin: bool = False) -> tuple[str, str]:
    engine = make_engine(url)
    with transaction(make_session_factory(engine)) as session:
        row, key = create_key(session, tenant, is_admin=admin)
        key_id = row.id
    engine.dispose()
    return key_id, key


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings(home=tmp_path, database_url=database_url, auth_cache_seconds=0.5)
    with ThreadedUvicorn(create_app(settings)) as url:
        yield url


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_keys_turn_auth_on_and_only_a_live_key_passes(api: str, database_url: str) -> None:
    with httpx.Client(base_url=api) as http:
        assert http.post("/v1/jobs", json=DIGITS).status_code == 202  # open: no keys yet
        key_id, key = new_key(database_url, "acme")
        time.sleep(0.6)  # the app re-reads "are there keys" after auth_cache_seconds

        missing = http.get("/v1/jobs")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in missing.json()["detail"]
        wrong = http.get("/v1/jobs", headers={"Authorization": "Bearer cw_not-a-key"})
        assert (wrong.status_code, wrong.json()["detail"]) == (401, "unknown or revoked API key")
        basic = http.get("/v1/jobs", headers={"Authorization": f"Basic {key}"})
        assert basic.status_code == 401

        good = {"Authorization": f"Bearer {key}"}
        created = http.post("/v1/jobs", json=DIGITS, headers=good)
        assert created.status_code == 202
        # Health, readiness and the docs stay public: probes and browsers carry no key.
        for path in ("/healthz", "/readyz", "/openapi.json"):
            assert http.get(path).status_code == 200, path

        engine = make_engine(database_url)
        with transaction(make_session_factory(engine)) as session:
            revoke_key(session, key_id)
        engine.dispose()
        deadline = time.monotonic() + 5
        while http.get(f"/v1/jobs/{created.json()['id']}", headers=good).status_code != 401:
            assert time.monotonic() < deadline, "a revoked key kept working"
            time.sleep(0.1)
        # Revoking every key must not open the service again.
        time.sleep(0.6)
        assert http.get("/v1/jobs").status_code == 401


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_cli_prints_a_key_once_and_stores_only_its_hash(database_url: str, tmp_path: Path) -> None:
    made = cli(tmp_path, database_url, "keys", "create", "--tenant", "acme", "--admin")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("cw_") and len(key) > 40 and "\n" not in key
    assert "shown only this once" in made.stderr

    engine = make_engine(database_url)
    with transaction(make_session_factory(engine)) as session:
        (row,) = session.scalars(select(ApiKey)).all()
        stored = {c.name: str(getattr(row, c.name)) for c in ApiKey.__table__.columns}
    engine.dispose()
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert (row.tenant, row.is_admin) == ("acme", True)
    assert not any(key in value for value in stored.values())  # the key itself is nowhere

    listed = cli(tmp_path, database_url, "keys", "list")
    assert listed.returncode == 0 and row.id in listed.stdout and key not in listed.stdout
    assert key[:10] in listed.stdout and "active" in listed.stdout
    revoked = cli(tmp_path, database_url, "keys", "revoke", row.id)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in cli(tmp_path, database_url, "keys", "list").stdout
    assert cli(tmp_path, database_url, "keys", "revoke", "nope").returncode == 1
    bad_tenant = cli(tmp_path, database_url, "keys", "create", "--tenant", "../x")
    assert bad_tenant.returncode == 2 and "--tenant" in bad_tenant.stderr


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_without_keys_the_api_refuses_a_public_address(database_url: str, tmp_path: Path) -> None:
    refused = cli(tmp_path, database_url, "api", "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in refused.stderr
    serve = cli(tmp_path, database_url, "serve", "--host", "10.1.2.3", "--workers", "0")
    assert serve.returncode == 2 and "without API keys" in serve.stderr

    new_key(database_url, "acme")  # with a key, binding anywhere is allowed
    assert not refuse_open_mode(Settings(home=tmp_path, database_url=database_url), "0.0.0.0")


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_open_mode_on_loopback_says_so(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(home=tmp_path, database_url=database_url)
    with caplog.at_level(logging.WARNING, logger="counterweight"):
        assert not refuse_open_mode(settings, "127.0.0.1")
    assert "runs OPEN on 127.0.0.1" in caplog.text
    assert refuse_open_mode(settings, "example.com")  # a name may resolve anywhere


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_the_client_sends_its_key(
    api: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = new_key(database_url, "acme")
    time.sleep(0.6)
    monkeypatch.delenv("COUNTERWEIGHT_API_KEY", raising=False)
    with Client(api, api_key=key) as client:
        job = client.submit(DIGITS)
        assert client.get(job.id).id == job.id
    monkeypatch.setenv("COUNTERWEIGHT_API_KEY", key)
    with Client(api) as client:
        assert client.get(job.id).id == job.id
    monkeypatch.delenv("COUNTERWEIGHT_API_KEY")
    with Client(api) as client, pytest.raises(Unauthorized):
        client.get(job.id)


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_requests_that_miss_the_key_cache_together_share_one_lookup(
    database_url: str, tmp_path: Path
) -> None:
    # No caching at all: every request misses, as all do at once when an entry expires
    # under load. Those in flight together must not each query the database.
    settings = Settings(home=tmp_path, database_url=database_url, auth_cache_seconds=0)
    app = create_app(settings)
    lookups = []

    @event.listens_for(app.state.sessions.kw["bind"], "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "api_keys.key_hash =" in statement:
            lookups.append(statement)

    _, key = new_key(database_url, "acme")
    with ThreadedUvicorn(app) as url:
        job_id = httpx.post(f"{url}/v1/jobs", json=DIGITS, headers=bearer(key)).json()["id"]
        lookups.clear()

        async def poll_together() -> list[int]:
            async with httpx.AsyncClient(base_url=url, headers=bearer(key)) as http:
                polls = [http.get(f"/v1/jobs/{job_id}") for _ in range(POLLERS)]
                return [r.status_code for r in await asyncio.gather(*polls)]

        assert asyncio.run(poll_together()) == [200] * POLLERS
    assert 1 <= len(lookups) < POLLERS / 2


POLLERS = 50


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
