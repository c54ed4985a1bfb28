"""DELETE /v1/jobs/{id} of a running job with a real worker process and the S3 test
server: the worker stops the job (it ends cancelled, its checkpoint and log shipped as
it stops), and every file of the job is then removed from the store, none left behind
by the worker's last copies; another job's files are untouched."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from counterweight.service.store.engine import make_engine
from counterweight.service.store.models import Job
from tests.acceptance.conftest import SLOW_DIGITS
from tests.processes import Service
from tests.s3server import S3Server

SPEC = {**SLOW_DIGITS, "train": {**SLOW_DIGITS["train"], "epochs": 20}}


def job_keys(store: S3Server, job_id: str) -> list[str]:
    stored = store.keys()
    return [key for key in stored if f"/jobs/{job_id}/" in key]


def test_deleting_a_running_job_stops_it_and_removes_every_file(
    database_url: str, store: S3Server, tmp_path: Path
) -> None:
    settings = {
        **store.settings(),
        "log_upload_seconds": "0.3",
        "lease_seconds": "3",
        "heartbeat_seconds": "0.5",
        "janitor_seconds": "0.5",
    }
    api = Service(tmp_path, database_url, **settings)
    try:
        api.start_api()
        api.start_worker()
        kept = api.submit({"dataset": {"name": "digits"}, "train": {"epochs": 1}})
        assert api.wait_until_ended(kept)["status"] == "succeeded"
        job_id = api.submit(SPEC)
        api.wait_for(job_id, lambda job: (job["progress"] or {}).get("epoch", 0) >= 1)
        assert any(key.endswith("checkpoint.pt") for key in job_keys(store, job_id))

        deleted = api.http.delete(f"/v1/jobs/{job_id}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["status"] == "running" and deleted.json()["files"] == "pending"
        assert api.http.get(f"/v1/jobs/{job_id}").status_code == 404

        engine = make_engine(database_url)
        try:
            deadline = time.monotonic() + 120
            while True:
                with engine.connect() as conn:
                    row = conn.execute(
                        select(Job.status, Job.artifacts_removed_at).where(Job.id == job_id)
                    ).one()
                if row.artifacts_removed_at is not None:
                    break
                assert time.monotonic() < deadline, f"files never removed: {row}\n{api.logs()}"
                time.sleep(0.2)
        finally:
            engine.dispose()
        assert row.status == "cancelled"
        time.sleep(2.0)  # nothing the worker copied late comes back
        assert job_keys(store, job_id) == []
        assert not (api.home / "artifacts" / "jobs" / job_id).exists()
        assert job_keys(store, kept)  # another job's files stay
        assert api.http.get(f"/v1/jobs/{kept}/model").status_code == 200
        assert api.http.delete(f"/v1/jobs/{job_id}").json()["files"] == "removed"
        # The CLI's delete says the same, again.
        command = [sys.executable, "-m", "counterweight.service.cli", "delete", job_id]
        cli = subprocess.run(
            [*command, "--url", api.url], env=api.env, capture_output=True, text=True, timeout=60
        )
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.strip() == f"{job_id}  deleted (cancelled); files removed"
    finally:
        api.stop()
