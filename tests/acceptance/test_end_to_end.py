"""End to end with real processes: uvicorn serving the API, workers training jobs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors

from counterweight.service.data.splits import load_splits
from counterweight.service.spec import JobSpec
from counterweight.workers.training.models import model_from_card
from tests.acceptance.conftest import SLOW_DIGITS
from tests.processes import Service

BACKENDS = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)


@BACKENDS
def test_a_digits_job_trains_and_its_model_reproduces_the_reported_accuracy(
    service: Service,
) -> None:
    service.start_worker()
    job_id = service.submit(
        {"dataset": {"name": "digits"}, "model": {"width": 64}, "train": {"epochs": 4, "lr": 0.01}}
    )
    job = service.wait_until_ended(job_id)
    assert job["status"] == "succeeded", job
    assert (job["attempt"], job["progress"]["fraction"]) == (1, 1.0)

    metrics = service.http.get(f"/v1/jobs/{job_id}/metrics").json()
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3, 4]
    assert metrics["final"]["accuracy"] > 0.9
    card = service.http.get(f"/v1/jobs/{job_id}/model/card").json()
    weights = service.http.get(f"/v1/jobs/{job_id}/model")
    assert weights.headers["content-type"] == "application/octet-stream"

    # A client rebuilds the model from the card alone and gets the same accuracy.
    model = model_from_card(card)
    model.load_state_dict(load_safetensors(weights.content))
    model.eval()
    spec = JobSpec.model_validate(card["spec"])
    splits = load_splits(spec, service.home)
    with torch.inference_mode():
        predicted = model(torch.from_numpy(splits.x_test)).argmax(dim=1).numpy()
    assert float(np.mean(predicted == splits.y_test)) == metrics["final"]["accuracy"]

    # An artifact store that lost the file answers 404 with a reason, not a 500.
    (service.home / "artifacts" / "jobs" / job_id / "model.safetensors").unlink()
    missing = service.http.get(f"/v1/jobs/{job_id}/model")
    assert missing.status_code == 404 and "model.safetensors" in missing.json()["detail"]


@BACKENDS
def test_a_killed_worker_s_job_resumes_from_its_checkpoint_on_another_worker(
    service: Service,
) -> None:
    first = service.start_worker()
    # One attempt only: losing a worker after progress does not use it up (DESIGN.md 2).
    job_id = service.submit({**SLOW_DIGITS, "max_attempts": 1})
    service.wait_for(job_id, lambda job: (job["progress"] or {}).get("epoch", 0) >= 2)
    first.send_signal(signal.SIGKILL)
    first.wait()

    service.start_worker()
    job = service.wait_until_ended(job_id)
    assert job["status"] == "succeeded", job
    assert (job["attempt"], job["forgiven_attempts"]) == (2, 1)
    metrics = service.http.get(f"/v1/jobs/{job_id}/metrics").json()
    assert metrics["resumed_from_epoch"] >= 2  # not epoch 0
    assert [row["epoch"] for row in metrics["history"]] == list(range(1, 11))


def test_a_running_job_is_cancelled_within_five_seconds(service: Service) -> None:
    service.start_worker()
    job_id = service.submit(SLOW_DIGITS)
    service.wait_for(job_id, lambda job: job["progress"] is not None)
    asked = time.monotonic()
    response = service.http.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    job = service.wait_until_ended(job_id, timeout=10)
    assert job["status"] == "cancelled"
    assert time.monotonic() - asked < 5
    assert service.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 409


def test_sigterm_checkpoints_requeues_and_exits(service: Service) -> None:
    worker = service.start_worker()
    job_id = service.submit(SLOW_DIGITS)
    service.wait_for(job_id, lambda job: (job["progress"] or {}).get("epoch", 0) >= 1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    job = service.job(job_id)
    assert (job["status"], job["attempt"]) == ("queued", 1)

    service.start_worker()
    job = service.wait_until_ended(job_id)
    assert job["status"] == "succeeded"
    metrics = service.http.get(f"/v1/jobs/{job_id}/metrics").json()
    assert metrics["resumed_from_epoch"] >= 1


def test_a_cpu_worker_leaves_a_cuda_job_queued_and_it_says_why(service: Service) -> None:
    worker = service.start_worker()
    cuda = service.submit(
        {"dataset": {"name": "digits"}, "train": {"device": "cuda"}, "priority": 10}
    )
    cpu = service.submit({"dataset": {"name": "digits"}, "train": {"epochs": 1}})
    assert service.wait_until_ended(cpu)["status"] == "succeeded"
    # The worker passed over the more urgent job it cannot run, and keeps running.
    job = service.job(cuda)
    assert (job["status"], job["attempt"], job["error"]) == ("queued", 0, None)
    assert job["waiting"] == "no live worker has a CUDA device (1 live worker, cpu)"
    status = subprocess.run(
        [sys.executable, "-m", "counterweight.service.cli", "status", cuda, "--url", service.url],
        capture_output=True,
        text=True,
        timeout=60,
        env=service.env,
    )
    assert status.stdout.splitlines()[1:] == [f"waiting: {job['waiting']}"], status
    assert worker.poll() is None
