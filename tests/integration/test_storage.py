"""The artifact store, both backends against real servers: a directory (as on a shared
filesystem) and an S3-compatible server (moto's, in its own process, over HTTP).

Each host keeps its own home; only the database and the store are shared.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from counterweight.service.api.app import create_app
from counterweight.service.artifacts import CARD, CHECKPOINT, MODEL, job_key
from counterweight.service.settings import Settings
from counterweight.service.storage import storage_for
from counterweight.workers.worker import Worker
from tests.conftest import ThreadedUvicorn
from tests.processes import free_port
from tests.s3server import S3Server

KEY = "artifacts/jobs/abc123/model.safetensors"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Settings fields naming a store that no host's home holds."""
    if request.param == "local":
        yield {"storage": "local", "storage_dir": tmp_path / "shared"}
        return
    with S3Server(tmp_path) as server:
        yield server.settings()


def digits_npz() -> bytes:
    x, y = load_digits(return_X_y=True)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=(x[:1200] / 16).astype(np.float32),
        y_train=y[:1200],
        x_test=(x[1200:] / 16).astype(np.float32),
        y_test=y[1200:],
    )
    return buffer.getvalue()


def test_a_file_stored_from_one_host_is_read_on_another(
    store: dict[str, Any], tmp_path: Path
) -> None:
    storage = storage_for(Settings(home=tmp_path / "a", **store))
    source = tmp_path / "a" / KEY
    source.parent.mkdir(parents=True)
    # Past boto3's multipart threshold (8 MiB): a large model goes up in parts.
    first = np.random.default_rng(0).bytes(9 * 2**20)
    source.write_bytes(first)
    storage.upload(KEY, source)

    target = tmp_path / "b" / KEY
    assert storage.download(KEY, target)
    assert target.read_bytes() == first

    source.write_bytes(b"second")  # a newer checkpoint replaces the older one
    storage.upload(KEY, source)
    assert storage.download(KEY, target)
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["model.safetensors"]  # no temporary file left

    missing = tmp_path / "b" / "artifacts/jobs/abc123/card.json"
    assert not storage.download("artifacts/jobs/abc123/card.json", missing)
    assert not missing.exists()


def test_a_key_never_reaches_outside_the_store(store: dict[str, Any], tmp_path: Path) -> None:
    storage = storage_for(Settings(home=tmp_path, **store))
    source = tmp_path / "file"
    source.write_bytes(b"x")
    for key in ("../escape", "/etc/passwd", "jobs/../../escape", ".hidden", "a//b", ""):
        with pytest.raises(ValueError, match="not a storage key"):
            storage.upload(key, source)
        with pytest.raises(ValueError, match="not a storage key"):
            storage.download(key, tmp_path / "out")
    assert not (tmp_path.parent / "escape").exists()


def test_the_api_serves_what_a_worker_on_another_host_trained(
    store: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    api = Settings(home=tmp_path / "api", database_url=database_url, **store)
    worker_home = Settings(home=tmp_path / "worker", database_url=database_url, **store)
    with ThreadedUvicorn(create_app(api)) as url, httpx.Client(base_url=url) as http:
        uploaded = http.post("/v1/datasets", files={"file": ("d.npz", digits_npz())})
        assert uploaded.status_code == 201, uploaded.text
        dataset_id = uploaded.json()["id"]
        spec = {
            "dataset": {"name": "uploaded", "id": dataset_id},
            "model": {"width": 16},
            "train": {"epochs": 2},
        }
        submitted = http.post("/v1/jobs", json=spec)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]

        # The worker's home has neither the dataset nor anything of the job: it fetches
        # the upload from the store and stores its results there.
        worker = Worker(worker_home, device="cpu")
        try:
            assert worker.run_one()
        finally:
            worker.engine.dispose()
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded", job

        card = http.get(f"/v1/jobs/{job_id}/model/card")
        assert card.status_code == 200 and card.json()["class_names"][:2] == ["0", "1"]
        model = http.get(f"/v1/jobs/{job_id}/model")
        assert model.status_code == 200
        trained = worker_home.artifacts_dir / "jobs" / job_id / "model.safetensors"
        assert model.content == trained.read_bytes()
        plots = http.get(f"/v1/jobs/{job_id}/metrics").json()["plots"]
        assert plots == ["curves", "recall", "confusion"]
        for name in plots:
            png = http.get(f"/v1/jobs/{job_id}/plots/{name}.png")
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        predicted = http.post(f"/v1/jobs/{job_id}/predict", json={"inputs": [[0.0] * 64]})
        assert predicted.status_code == 200, predicted.text
        # The API keeps what it fetched: the next request reads its own copy.
        assert (api.artifacts_dir / "jobs" / job_id / "model.safetensors").is_file()

    # The store holds all of it, the last checkpoint included (for a resume elsewhere).
    storage = storage_for(api)
    for name in (CHECKPOINT, MODEL, CARD, "plots/curves.png"):
        assert storage.download(job_key(job_id, name), tmp_path / "check" / name), name


def test_a_store_that_cannot_be_reached_is_a_503_and_keeps_nothing(
    database_url: str, tmp_path: Path
) -> None:
    unreachable = {
        "storage": "s3",
        "s3_bucket": "nowhere",
        "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "s3_region": "us-east-1",
        "s3_access_key_id": "test",
        "s3_secret_access_key": "test",
    }
    settings = Settings(home=tmp_path, database_url=database_url, **unreachable)
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        response = http.post("/v1/datasets", files={"file": ("d.npz", digits_npz())})
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        # Where the store is stays in the server's log, out of the answer.
        detail = response.json()["detail"]
        assert "storing the upload in the artifact store" in detail
        assert "nowhere" not in detail and unreachable["s3_endpoint_url"] not in detail
        # No dataset row and no file that no other host could ever read.
        listed = http.get("/v1/datasets").json()["data"]
        assert [d for d in listed if d["source"] == "uploaded"] == []
        assert [p.name for p in (tmp_path / "datasets").iterdir()] == []
