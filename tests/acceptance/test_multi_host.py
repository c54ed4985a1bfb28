"""Many hosts: an API and two workers, each process with its own home (its local disk),
sharing only Postgres and an S3-compatible artifact store (moto's server, over HTTP).

The first worker is SIGKILLed mid-job after a checkpoint; the second, which has never
seen the job nor its uploaded dataset, resumes it from the store; the API, which has
no file of the job either, serves its model, card and plots from the store.
"""

from __future__ import annotations

import io
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.torch import load as load_safetensors
from sklearn.datasets import load_digits

from counterweight.workers.training.models import model_from_card
from tests.processes import Service
from tests.s3server import S3Server

EPOCHS = 4


@pytest.fixture
def store(tmp_path: Path) -> Iterator[S3Server]:
    with S3Server(tmp_path) as server:
        yield server


def digits_npz() -> bytes:
    x, y = load_digits(return_X_y=True)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=(x[:1400] / 16).astype(np.float32),
        y_train=y[:1400],
        x_test=(x[1400:] / 16).astype(np.float32),
        y_test=y[1400:],
    )
    return buffer.getvalue()


def live_workers(api: Service) -> list[dict[str, Any]]:
    workers: list[dict[str, Any]] = api.http.get("/v1/workers").json()["data"]
    return workers


@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)
def test_a_job_killed_on_one_host_resumes_on_another_and_the_api_serves_it(
    database_url: str, store: S3Server, tmp_path: Path
) -> None:
    settings = {
        **store.settings(),
        # Short leases so that the killed worker's job is rescued within seconds.
        "lease_seconds": "3",
        "heartbeat_seconds": "0.5",
        "sweep_seconds": "0.5",
    }
    hosts = {name: Service(tmp_path / name, database_url, **settings) for name in ("api", "a", "b")}
    for host in hosts.values():
        host.home.mkdir()
    api = hosts["api"]
    try:
        api.start_api()
        uploaded = api.http.post("/v1/datasets", files={"file": ("digits.npz", digits_npz())})
        assert uploaded.status_code == 201, uploaded.text
        first = hosts["a"].start_worker()
        job_id = api.submit(
            {
                "dataset": {"name": "uploaded", "id": uploaded.json()["id"]},
                "model": {"arch": "mlp", "width": 512, "depth": 3},
                "train": {"epochs": EPOCHS, "batch_size": 8, "seed": 1},
            }
        )
        api.wait_for(job_id, lambda job: (job["progress"] or {}).get("epoch", 0) >= 1)
        (worker_a,) = live_workers(api)
        assert worker_a["current_job_id"] == job_id
        first.send_signal(signal.SIGKILL)
        first.wait()

        hosts["b"].start_worker()
        job = api.wait_until_ended(job_id, timeout=300)
        assert job["status"] == "succeeded", f"{job}\n{hosts['a'].logs()}\n{hosts['b'].logs()}"
        assert job["attempt"] == 2
        metrics = api.http.get(f"/v1/jobs/{job_id}/metrics").json()
        assert metrics["resumed_from_epoch"] >= 1  # from host A's checkpoint, not epoch 0
        assert [row["epoch"] for row in metrics["history"]] == list(range(1, EPOCHS + 1))

        # Served by the API host from the store: host B trained it on its own disk.
        card = api.http.get(f"/v1/jobs/{job_id}/model/card")
        weights = api.http.get(f"/v1/jobs/{job_id}/model")
        assert card.status_code == weights.status_code == 200
        model = model_from_card(card.json())
        model.load_state_dict(load_safetensors(weights.content))
        for name in metrics["plots"]:
            png = api.http.get(f"/v1/jobs/{job_id}/plots/{name}.png")
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        assert metrics["plots"] == ["curves", "recall", "confusion"]
        job_dir = Path("artifacts") / "jobs" / job_id
        assert not (hosts["a"].home / job_dir / "model.safetensors").exists()
        assert (hosts["b"].home / job_dir / "model.safetensors").is_file()

        # The registry: host A's worker drops out once its lease has passed; B's is idle.
        deadline = time.monotonic() + 30
        while len(live_workers(api)) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        (worker_b,) = live_workers(api)
        assert worker_b["id"] != worker_a["id"] and worker_b["current_job_id"] is None
    finally:
        for host in hosts.values():
            host.stop()
