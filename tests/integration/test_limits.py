"""Configured caps (COUNTERWEIGHT_MAX_*): each refusal is a 4xx naming the field, the
value and the cap, and nothing is queued. Real app under uvicorn, real databases."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from counterweight_client import Client, QueueFull
from tests.conftest import ThreadedUvicorn

DIGITS: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}
CAPS = {
    "max_request_bytes": 4000,
    "max_epochs": 5,
    "max_batch_size": 200,
    "max_inline_weights": 10,
    "max_model_parameters": 100_000,
    "max_queued_jobs_per_tenant": 2,
}


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(home=tmp_path, database_url=database_url, **CAPS)
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http


def spec(**train: Any) -> dict[str, Any]:
    return {**DIGITS, "train": {"epochs": 1, **train}}


def queued(client: httpx.Client) -> int:
    return len(client.get("/v1/jobs", params={"status": "queued"}).json()["data"])


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_job_limits_name_the_field_the_value_and_the_cap(client: httpx.Client) -> None:
    cases = [
        (spec(epochs=6), ["train.epochs: 6", "(5,", "COUNTERWEIGHT_MAX_EPOCHS"]),
        (spec(batch_size=201), ["train.batch_size: 201", "(200,", "COUNTERWEIGHT_MAX_BATCH_SIZE"]),
        ({**DIGITS, "sample_weight": [1.0] * 11}, ["sample_weight: 11", "(10,", "from_dataset"]),
        (
            {**DIGITS, "model": {"arch": "mlp", "width": 512}},
            ["model: mlp", "parameters", "100,000", "COUNTERWEIGHT_MAX_MODEL_PARAMETERS"],
        ),
        ({**DIGITS, "model": {"arch": "resnet18"}}, ["model: resnet18", "parameters"]),
    ]
    for body, words in cases:
        for path in ("/v1/jobs", "/v1/jobs/validate"):
            response = client.post(path, json=body)
            assert response.status_code == 422, (path, body, response.text)
            assert all(word in response.json()["detail"] for word in words), response.text
    sweep = {"base": DIGITS, "grid": {"train.epochs": [1, 9]}}
    refused = client.post("/v1/sweeps", json=sweep)
    assert refused.status_code == 422
    assert "train.epochs: 9" in refused.json()["detail"]
    assert "grid cell" in refused.json()["detail"]
    assert queued(client) == 0
    # At the caps, and a small model, everything is accepted.
    within = {**spec(epochs=5, batch_size=200), "sample_weight": None, "model": {"width": 64}}
    assert client.post("/v1/jobs", json=within).status_code == 202


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_request_bodies_over_the_cap_are_413_before_they_are_read(client: httpx.Client) -> None:
    big = {**DIGITS, "sample_weight": [1.0] * 1000}  # ~5 kB of JSON
    declared = client.post("/v1/jobs", json=big)
    assert declared.status_code == 413
    assert "4000 bytes" in declared.json()["detail"]
    assert "COUNTERWEIGHT_MAX_REQUEST_BYTES" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it is read
        yield b'{"dataset": {"name": "digits"}, "sample_weight": ['
        for _ in range(1000):
            yield b"1.0, "
        yield b"1.0]}"

    headers = {"Content-Type": "application/json"}
    chunked = client.post("/v1/jobs", content=chunks(), headers=headers)
    assert chunked.status_code == 413
    assert client.post("/v1/sweeps", json={"base": big, "grid": {}}).status_code == 413
    assert queued(client) == 0

    # Uploads have their own cap (max_upload_bytes): a 20 kB .npz goes through.
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    x, y = rng.random((500, 8), dtype=np.float32), np.arange(500) % 2
    np.savez(buffer, x_train=x, y_train=y, x_test=x, y_test=y)
    assert len(buffer.getvalue()) > 4000
    upload = client.post("/v1/datasets", files={"file": ("d.npz", buffer.getvalue())})
    assert upload.status_code == 201, upload.text


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_queued_jobs_per_tenant_are_capped_with_a_429(client: httpx.Client) -> None:
    first = client.post("/v1/jobs", json=DIGITS, headers={"Idempotency-Key": "one"})
    assert first.status_code == 202
    assert client.post("/v1/jobs", json=spec(seed=1)).status_code == 202
    full = client.post("/v1/jobs", json=spec(seed=2))
    assert full.status_code == 429
    detail = full.json()["detail"]
    assert "has 2 queued" in detail and "at most 2" in detail
    assert "COUNTERWEIGHT_MAX_QUEUED_JOBS_PER_TENANT" in detail
    # A retried submission is answered with its job, full queue or not.
    replay = client.post("/v1/jobs", json=DIGITS, headers={"Idempotency-Key": "one"})
    assert (replay.status_code, replay.json()["id"]) == (202, first.json()["id"])
    assert (
        client.post("/v1/sweeps", json={"base": DIGITS, "grid": {"train.seed": [5]}}).status_code
        == 429
    )
    assert queued(client) == 2
    with Client(str(client.base_url)) as typed, pytest.raises(QueueFull, match="at most 2"):
        typed.submit(spec(seed=3))

    client.post(f"/v1/jobs/{first.json()['id']}/cancel")
    sweep = {"base": DIGITS, "grid": {"train.seed": [5, 6]}}
    too_many = client.post("/v1/sweeps", json=sweep)
    assert too_many.status_code == 429 and "asked for 2 jobs" in too_many.json()["detail"]
    assert client.post("/v1/jobs", json=spec(seed=2)).status_code == 202
    assert queued(client) == 2
