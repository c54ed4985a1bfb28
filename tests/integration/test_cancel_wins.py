"""A cancel wins until the job's success is recorded (DESIGN.md section 2): one that comes
after the last epoch, while the worker publishes the model, ends the job `cancelled`, and
so does one that comes while the worker is about to re-queue the job (shutdown, a crash).
The answer says what will happen. Real app under uvicorn, a real Worker trained in this
process, on SQLite and on Postgres; the cancels are real HTTP requests, sent from the
worker's artifact store (a real local one) at the chosen moment."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.artifacts import CHECKPOINT, MODEL
from counterweight.service.settings import Settings
from counterweight.service.storage import LocalStorage
from counterweight.workers.worker import Worker
from tests.conftest import ThreadedUvicorn

pytestmark = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)

TINY: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"arch": "mlp", "width": 16},
    "train": {"epochs": 2, "batch_size": 128, "seed": 0},
}


def serve(settings: Settings) -> ThreadedUvicorn:
    return ThreadedUvicorn(create_app(settings))


class CancellingStore(LocalStorage):
    """The worker's real local artifact store, which has the job cancelled over HTTP at
    one moment of the worker's run and keeps the answer. `moment` is "publishing"
    (training and evaluation done, the model being stored), "shutdown" (a SIGTERM
    arrives as the worker fetches the job's checkpoint, so it would put the job back
    on the queue) or "crash" (the fetch fails, so the worker would retry the job)."""

    def __init__(self, worker: Worker, http: httpx.Client, job_id: str, moment: str) -> None:
        super().__init__(worker.settings.resolved_storage_dir)
        self.worker, self.http, self.job_id, self.moment = worker, http, job_id, moment
        self.answer: httpx.Response | None = None

    def _cancel(self) -> None:
        self.answer = self.http.post(f"/v1/jobs/{self.job_id}/cancel")

    def upload(self, key: str, source: Path) -> None:
        if self.moment == "publishing" and key.endswith(MODEL) and self.answer is None:
            # Once the heartbeat reported the last epoch: the API can tell training ended.
            deadline = time.monotonic() + 30
            while (self.http.get(f"/v1/jobs/{self.job_id}").json()["progress"] or {}).get(
                "fraction"
            ) != 1.0:
                assert time.monotonic() < deadline, "the last epoch was never reported"
                time.sleep(0.02)
            self._cancel()
        super().upload(key, source)

    def download(self, key: str, target: Path) -> bool:
        if key.endswith(CHECKPOINT) and self.moment == "shutdown":
            self._cancel()
            self.worker.shutdown.set()  # as SIGTERM does: training stops at its first batch
        elif key.endswith(CHECKPOINT) and self.moment == "crash":
            self._cancel()
            raise RuntimeError("the worker crashed")
        return super().download(key, target)


def run_one(settings: Settings, http: httpx.Client, moment: str) -> httpx.Response:
    """Submit TINY and have a real worker run it, cancelled at `moment`; the answer."""
    job_id = http.post("/v1/jobs", json=TINY).json()["id"]
    worker = Worker(settings, device="cpu")
    worker.storage = store = CancellingStore(worker, http, job_id, moment)
    try:
        assert worker.run_one()
    finally:
        worker.engine.dispose()
    assert store.answer is not None, "the worker never got to the moment"
    return store.answer


def assert_ended_cancelled(http: httpx.Client, job_id: str) -> None:
    job = http.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["cancel_requested"]) == ("cancelled", True), job
    assert job["finished_at"] is not None
    lines = http.get(f"/v1/jobs/{job_id}/events").text.splitlines()
    statuses = [
        json.loads(data.removeprefix("data: "))["status"]
        for kind, data in itertools.pairwise(lines)
        if kind == "event: status"
    ]
    assert statuses[-1] == "cancelled" and "succeeded" not in statuses, statuses
    again = http.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


def test_a_cancel_after_the_last_epoch_ends_the_job_cancelled_and_says_so(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, database_url=database_url, heartbeat_seconds=0.05)
    with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        answer = run_one(settings, http, "publishing")
        job_id = answer.json()["id"]

        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["status"], body["cancel_requested"]) == ("running", True)
        assert body["outcome"].startswith("stopping: training has ended"), body["outcome"]
        assert "as cancelled" in body["outcome"] and "not served" in body["outcome"]

        assert_ended_cancelled(http, job_id)
        model = http.get(f"/v1/jobs/{job_id}/model")
        assert model.status_code == 409 and "cancelled" in model.json()["detail"]
        assert http.get(f"/v1/jobs/{job_id}/metrics").status_code == 409


@pytest.mark.parametrize("moment", ["shutdown", "crash"])
def test_a_cancel_before_a_release_or_a_retry_ends_the_job_cancelled(
    database_url: str, tmp_path: Path, moment: str
) -> None:
    # A heartbeat slower than the test: the flag reaches the worker only where it records
    # the job's outcome, which would otherwise put the job back on the queue, where no
    # worker claims a job whose cancel was requested: queued for ever.
    settings = Settings(
        home=tmp_path, database_url=database_url, heartbeat_seconds=60, lease_seconds=120
    )
    with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        answer = run_one(settings, http, moment)
        job_id = answer.json()["id"]

        assert answer.status_code == 200, answer.text
        outcome = answer.json()["outcome"]
        assert outcome.startswith("stopping: ") and "within about 60 s" in outcome, outcome
        assert_ended_cancelled(http, job_id)


def test_a_queued_job_is_cancelled_at_once_and_the_answer_says_so(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, database_url=database_url)
    with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        job_id = http.post("/v1/jobs", json=TINY).json()["id"]
        body = http.post(f"/v1/jobs/{job_id}/cancel").json()
        assert body["status"] == "cancelled" and body["outcome"].startswith("cancelled: ")
        assert_ended_cancelled(http, job_id)
