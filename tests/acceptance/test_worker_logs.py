"""A real worker in JSON log format: every line it writes about a job carries the job's id."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import Service


@pytest.fixture
def json_service(database_url: str, tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path, database_url, log_format="json")
    try:
        running.start_api()
        yield running
    finally:
        running.stop()


def test_a_worker_s_lines_about_a_job_carry_its_id(json_service: Service) -> None:
    worker = json_service.start_worker()
    good = json_service.submit({"dataset": {"name": "digits"}, "train": {"epochs": 1}})
    # Trains to a NaN loss (the weighted sum overflows float32): fails, not retried.
    diverging = {"dataset": {"name": "digits"}, "class_weight": {"0": 3e38}, "train": {"epochs": 1}}
    bad = json_service.submit(diverging)
    assert json_service.wait_until_ended(good)["status"] == "succeeded"
    assert json_service.wait_until_ended(bad)["status"] == "failed"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0

    (log_file,) = json_service.home.glob("worker-*.log")
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]  # all JSON
    for job_id in (good, bad):
        mentions = [line for line in lines if job_id in line["message"]]
        assert len(mentions) >= 2, lines  # started, then succeeded or cannot run
        assert all(line["job_id"] == job_id for line in mentions), mentions
    assert any(line["level"] == "WARNING" and line["job_id"] == bad for line in lines)
    # Lines about the worker itself belong to no job.
    own = [line for line in lines if line["message"].startswith("worker ")]
    assert own and all("job_id" not in line for line in own)
