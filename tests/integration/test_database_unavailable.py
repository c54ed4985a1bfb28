"""A database that answers reads but takes no writes, or is gone: submissions and
uploads are a 503 that says why, /readyz and counterweight_database_up say so, a worker
says why and backs off, and a SQLite file deleted under the service is not replaced
by an empty one. The real app over HTTP (uvicorn in a thread), real processes,
real SQLite and Postgres. (A file system that fails: test_failing_filesystem.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.api.app import create_app
from counterweight.service.errors import DatabaseUnavailable
from counterweight.service.settings import Settings
from counterweight.service.store.engine import (
    libpq_dsn,
    make_engine,
    make_session_factory,
    upgrade,
)
from counterweight.service.store.models import WorkerRecord
from tests.conftest import ThreadedUvicorn
from tests.integration.test_uploads import FEATURES, npz, stored_files, upload
from tests.processes import Service, free_port

DIGITS = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}
# libpq's `options`: every session of this URL is read-only, as on a standby.
READ_ONLY_SESSIONS = "?options=-c%20default_transaction_read_only%3Don"


def database_up(http: httpx.Client) -> float:
    found = re.search(r"^counterweight_database_up (\S+)$", http.get("/metrics").text, re.M)
    assert found, "no counterweight_database_up"
    return float(found.group(1))


@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)
def test_a_read_only_postgres_refuses_writes_with_503_and_is_not_ready(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, database_url=database_url + READ_ONLY_SESSIONS)
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        assert http.get("/v1/jobs").status_code == 200  # reads work, status polls too:
        assert http.get(f"/v1/jobs/{'0' * 32}").status_code == 404  # (service.api.reads)

        submitted = http.post("/v1/jobs", json=DIGITS)
        assert submitted.status_code == 503, submitted.text
        assert "database unavailable: the database is read-only" in submitted.json()["detail"]

        uploaded = upload(http, npz(**FEATURES))
        assert uploaded.status_code == 503, uploaded.text
        assert "read-only" in uploaded.json()["detail"]
        assert stored_files(tmp_path) == []  # no file without its row

        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "database unavailable"
        assert "read-only" in ready.json()["detail"]
        assert database_up(http) == 0


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_a_writable_database_is_ready(database_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=database_url)
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        assert http.get("/readyz").json() == {"status": "ok"}
        assert database_up(http) == 1
        assert http.post("/v1/jobs", json=DIGITS).status_code == 202


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERWEIGHT_")}
    env["COUNTERWEIGHT_HOME"] = str(home)
    command = [sys.executable, "-m", "counterweight.service.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_a_sqlite_file_deleted_under_the_api_is_a_503_and_no_fresh_start(
    tmp_path: Path,
) -> None:
    database = tmp_path / "counterweight.db"
    with ThreadedUvicorn(create_app(Settings(home=tmp_path))) as url:
        with httpx.Client(base_url=url) as http:
            submitted = http.post("/v1/jobs", json=DIGITS)
            assert submitted.status_code == 202
            database.unlink()  # the -wal and -shm files stay, as after `rm counterweight.db`

            refused = http.post("/v1/jobs", json=DIGITS)
            assert refused.status_code == 503, refused.text
            detail = refused.json()["detail"]
            assert "database unavailable: the database file cannot be opened" in detail
            assert f"{database} does not exist" in detail
            assert upload(http, npz(**FEATURES)).status_code == 503
            # Status polls too (their own connections, service.api.reads): not stale data.
            assert http.get(f"/v1/jobs/{submitted.json()['id']}").status_code == 503
            assert http.get("/readyz").status_code == 503
            assert database_up(http) == 0
        assert not database.exists()  # nothing made an empty database in its place

    # Restarted, the service refuses to start empty (and, with no API key, open).
    port = str(free_port())
    for args in (("api", "--port", port), ("db", "upgrade")):
        started = cli(tmp_path, *args)
        assert started.returncode == 2, started
        assert f"the database file {database} is missing" in started.stderr
        assert "counterweight.db.created" in started.stderr
    assert not database.exists()


def test_the_marker_tells_a_lost_database_from_a_new_home(tmp_path: Path) -> None:
    database, marker = (
        tmp_path / "db" / "counterweight.db",
        tmp_path / "db" / "counterweight.db.created",
    )
    url = f"sqlite:///{database}"
    upgrade(url)  # a new home: the file and its marker
    assert database.is_file() and marker.is_file()
    database.unlink()
    with pytest.raises(DatabaseUnavailable, match="is missing"):
        upgrade(url)
    assert not database.exists()
    marker.unlink()  # the operator starts afresh on purpose
    upgrade(url)
    assert database.is_file() and marker.is_file()
    marker.unlink()  # a database from before markers: it gets one
    upgrade(url)
    assert marker.is_file()


@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)
def test_a_worker_on_a_read_only_database_says_why_and_backs_off(
    database_url: str, tmp_path: Path
) -> None:
    service = Service(
        tmp_path, database_url, sweep_seconds="0.5", heartbeat_seconds="0.5", poll_seconds="0.2"
    )
    sessions = make_session_factory(engine := make_engine(database_url))
    try:
        service.start_worker()
        wait_until_registered(service, sessions)
        # A failover to a standby: every session read-only from now on.
        name = engine.url.database
        with psycopg.connect(libpq_dsn(database_url), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        time.sleep(12)
    finally:
        service.stop()
        engine.dispose()
    log = (tmp_path / "worker-0.log").read_text()
    retries = [line for line in log.splitlines() if "retrying in" in line]
    assert retries, log
    assert "database unavailable: the database is read-only" in retries[0], retries[0]
    assert "[SQL:" not in retries[0]  # the cause, not SQLAlchemy's statement dump
    # 1 + 2 + 4 s apart, then 8: at most 5 tries in 12 s, where a retry a second made 12.
    assert len(retries) <= 5, retries


def wait_until_registered(service: Service, sessions: sessionmaker[Session]) -> None:
    """Until the service's worker has registered itself in the database."""
    deadline = time.monotonic() + 60
    while True:
        with sessions() as session:
            if session.scalar(select(WorkerRecord.id)) is not None:
                return
        assert time.monotonic() < deadline, service.logs()
        time.sleep(0.2)
