"""The home on a file system that fails: a real ext4 image, loop-mounted, that the
kernel turns read-only on an error while the service runs (tests.loopfs).

What was answered 202 or 201 must still be there once the file system is repaired
(SQLite syncs every commit), what comes after is a 503 saying why, /readyz and the
metric say so, and a worker says why and backs off instead of reporting leases it
never managed to re-queue. Loop mounts need root, as in CI; elsewhere those tests skip.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from counterweight.service.spec import JobSpec
from counterweight.service.store.engine import (
    make_engine,
    make_session_factory,
    transaction,
    upgrade,
)
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.enqueue import enqueue
from tests.conftest import ThreadedUvicorn
from tests.integration.test_database_unavailable import (
    DIGITS,
    database_up,
    wait_until_registered,
)
from tests.integration.test_uploads import FEATURES, npz, upload
from tests.loopfs import Ext4Image, can_mount
from tests.processes import Service

NEEDS_ROOT = pytest.mark.skipif(not can_mount(), reason="loop mounts need root (CI runs as root)")


@pytest.mark.parametrize(("setting", "pragma"), [(None, 2), ("normal", 1)])
def test_sqlite_syncs_every_commit_unless_told_otherwise(
    tmp_path: Path, setting: str | None, pragma: int
) -> None:
    """FULL (2) by default: what lets a 202 survive a crash, on any machine."""
    settings = Settings(home=tmp_path, **({"sqlite_synchronous": setting} if setting else {}))
    upgrade(settings.resolved_database_url)
    engine = make_engine(
        settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous
    )
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == pragma
    engine.dispose()


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Ext4Image]:
    image = Ext4Image(tmp_path)
    image.mount()
    try:
        yield image
    finally:
        with suppress(RuntimeError):
            image.unmount()


@NEEDS_ROOT
def test_what_was_answered_survives_and_what_follows_is_a_503(ext4: Ext4Image) -> None:
    home = ext4.mountpoint / "home"
    data = npz(**FEATURES)
    with (
        ThreadedUvicorn(create_app(Settings(home=home))) as url,
        httpx.Client(base_url=url) as http,
    ):
        answers = [http.post("/v1/jobs", json=DIGITS) for _ in range(3)]
        assert [a.status_code for a in answers] == [202] * 3
        uploaded = upload(http, data)
        assert uploaded.status_code == 201, uploaded.text

        ext4.fail()  # within a second of those answers: nothing has been written back yet

        refused = http.post("/v1/jobs", json=DIGITS)
        assert refused.status_code == 503, refused.text
        assert refused.json()["detail"].startswith("database unavailable: "), refused.text
        refused_upload = upload(http, data)
        assert refused_upload.status_code == 503, refused_upload.text
        assert "cannot store uploads" in refused_upload.json()["detail"]
        ready = http.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert database_up(http) == 0

    home = ext4.recover() / "home"  # unmounted, checked, mounted again, as an operator would
    with (
        ThreadedUvicorn(create_app(Settings(home=home))) as url,
        httpx.Client(base_url=url) as http,
    ):
        for answer in answers:
            assert http.get(f"/v1/jobs/{answer.json()['id']}").status_code == 200
        dataset_id = uploaded.json()["id"]
        assert http.get(f"/v1/datasets/{dataset_id}").status_code == 200
        stored = (home / "datasets" / f"{dataset_id}.npz").read_bytes()
        assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
        assert http.get("/readyz").status_code == 200
        assert http.post("/v1/jobs", json=DIGITS).status_code == 202


@NEEDS_ROOT
def test_a_worker_says_why_and_backs_off_instead_of_sweeping_in_a_loop(
    ext4: Ext4Image, tmp_path: Path
) -> None:
    home = ext4.mountpoint / "home"
    url = f"sqlite:///{home / 'counterweight.db'}"
    upgrade(url)
    # Logs beside the image, not on the file system that fails.
    service = Service(tmp_path / "logs", url, sweep_seconds="0.5", heartbeat_seconds="0.5")
    (tmp_path / "logs").mkdir()
    service.env["COUNTERWEIGHT_HOME"] = str(home)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    try:
        service.start_worker()
        wait_until_registered(service, sessions)
        # A job whose worker went silent, its lease expiring in 2 s: due to be swept,
        # which needs a commit that the file system will refuse.
        with transaction(sessions) as session:
            enqueue(session, JobSpec.model_validate(DIGITS))
            claim(session, worker_id="gone", lease_seconds=2)
        engine.dispose()
        ext4.fail()
        time.sleep(12)
    finally:
        service.stop()
        engine.dispose()
    log = (tmp_path / "logs" / "worker-0.log").read_text()
    assert "started on" in log, log
    # The sweep's UPDATE ran, its commit failed: the job was never re-queued.
    assert "lease expired" not in log, log
    retries = [line for line in log.splitlines() if "retrying in" in line]
    assert retries and "database unavailable: " in retries[0], log
    assert len(retries) <= 5, retries  # 1, 2, 4, 8 s apart; a retry a second made 12
