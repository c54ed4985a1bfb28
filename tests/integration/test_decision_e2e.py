"""A tuned decision beats argmax on a generated imbalanced task, through the HTTP API
with a real Worker: the final metrics show both, the card carries the rule, and predict
applies it (and a caller's priors in its place)."""

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
from counterweight.workers.worker import Worker
from tests.conftest import ThreadedUvicorn


def overlapping_classes() -> bytes:
    """Two overlapping Gaussians in 8 dimensions, 2000 : 100 to train on, balanced test."""
    rng = np.random.default_rng(0)

    def draw(n0: int, n1: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.array([0] * n0 + [1] * n1)
        x = rng.normal(0, 1, (len(y), 8)) + y[:, None] * 0.6
        return x.astype(np.float32), y

    x_train, y_train = draw(2000, 100)
    x_test, y_test = draw(500, 500)
    buffer = io.BytesIO()
    np.savez(buffer, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return buffer.getvalue()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[httpx.Client, Settings]]:
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'cw.db'}")
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http, settings


def train(http: httpx.Client, settings: Settings, spec: dict[str, Any]) -> str:
    submitted = http.post("/v1/jobs", json=spec)
    assert submitted.status_code == 202, submitted.text
    worker = Worker(settings, device="cpu")
    try:
        assert worker.run_one()
    finally:
        worker.engine.dispose()
    job_id: str = submitted.json()["id"]
    assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    return job_id


def test_a_tuned_decision_beats_argmax_and_predict_applies_it(
    service: tuple[httpx.Client, Settings],
) -> None:
    http, settings = service
    dataset = http.post("/v1/datasets", files={"file": ("g.npz", overlapping_classes())})
    assert dataset.status_code == 201, dataset.text
    base = {
        "dataset": {"name": "uploaded", "id": dataset.json()["id"], "val_fraction": 0.3},
        "model": {"width": 16, "depth": 1},
        "train": {"epochs": 5, "lr": 0.01},
    }
    for rule in ("threshold", "logit_adjusted"):
        job_id = train(http, settings, {**base, "decision": rule})
        metrics = http.get(f"/v1/jobs/{job_id}/metrics").json()
        tuned, raw = metrics["final"], metrics["final_argmax"]
        assert raw["balanced_accuracy"] < 0.7, raw  # argmax leans to the majority
        assert tuned["balanced_accuracy"] > raw["balanced_accuracy"] + 0.1, (rule, tuned, raw)
        assert metrics["decision"]["rule"] == rule
        card = http.get(f"/v1/jobs/{job_id}/model/card").json()
        assert card["decision"]["bias"] == metrics["decision"]["bias"]

    # predict decides as the job's tuned rule did on the test split.
    rng = np.random.default_rng(1)
    inputs = (rng.normal(0, 1, (200, 8)) + 0.3).tolist()
    answer = http.post(f"/v1/jobs/{job_id}/predict", json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    bias = np.asarray(metrics["decision"]["bias"])
    for prediction in answer.json()["predictions"]:
        probabilities = np.asarray(prediction["probabilities"])
        assert prediction["class"] == int(np.argmax(probabilities))
    # Priors equal to the training prior undo the tuning: argmax of the raw model.
    priors = {"priors": [2000, 100]}
    raw_answer = http.post(f"/v1/jobs/{job_id}/predict", json={"inputs": inputs, **priors})
    tuned_classes = [p["class"] for p in answer.json()["predictions"]]
    raw_classes = [p["class"] for p in raw_answer.json()["predictions"]]
    assert sum(raw_classes) < sum(tuned_classes)  # the tuned rule calls the minority more
    assert bias[1] - bias[0] > 0
    bad = http.post(f"/v1/jobs/{job_id}/predict", json={"inputs": inputs[:1], "priors": [1, 0]})
    assert bad.status_code == 422 and "priors" in bad.json()["detail"]


def test_a_threshold_on_more_than_two_classes_is_a_422(
    service: tuple[httpx.Client, Settings],
) -> None:
    http, _ = service
    spec = {"dataset": {"name": "digits"}, "decision": "threshold"}
    for route in ("/v1/jobs/validate", "/v1/jobs"):
        response = http.post(route, json=spec)
        assert response.status_code == 422
        assert response.json()["detail"].startswith("decision: 'threshold'")
