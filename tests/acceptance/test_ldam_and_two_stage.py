"""An LDAM job and a two-stage job through the real service: submitted over HTTP, trained
by a worker process, served, and predicted with."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors

from counterweight.service.data.splits import load_splits
from counterweight.service.spec import JobSpec
from counterweight.workers.training.models import CosineHead, model_from_card
from tests.processes import Service

BACKENDS = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
# Three digit classes, the third ten times rarer. Three epochs at a constant rate: the
# rare class is learned by the third (along the default cosine it is not yet, and stage
# two then has no features of it to re-train a head on; BENCHMARKS.md).
BASE: dict[str, Any] = {
    "dataset": {"name": "digits", "classes": [0, 1, 2]},
    "imbalance": {"profile": "step", "ratio": 10, "minority": [2]},
    "model": {"arch": "mlp", "width": 32, "depth": 1},
    "train": {"epochs": 3, "batch_size": 32, "lr": 0.01, "seed": 0, "schedule": "constant"},
}


def predict(service: Service, job_id: str, inputs: list[Any]) -> list[dict[str, Any]]:
    response = service.http.post(f"/v1/jobs/{job_id}/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


@BACKENDS
def test_an_ldam_job_and_a_two_stage_job_train_serve_and_predict(service: Service) -> None:
    ldam = service.submit({**BASE, "loss": {"type": "ldam", "drw_epoch": 2}})
    two_stage = service.submit({**BASE, "train": {**BASE["train"], "stage2": {"epochs": 2}}})
    service.start_worker()
    for job_id in (ldam, two_stage):
        job = service.wait_until_ended(job_id)
        assert job["status"] == "succeeded", (job, service.logs())
        assert job["progress"]["fraction"] == 1.0

    # LDAM: the served model has the cosine head, and predict answers with it.
    card = service.http.get(f"/v1/jobs/{ldam}/model/card").json()
    assert card["model_kwargs"]["head"] == "cosine"
    assert card["model_kwargs"]["head_scale"] == 30.0
    metrics = service.http.get(f"/v1/jobs/{ldam}/metrics").json()
    assert metrics["final"]["balanced_accuracy"] > 0.8, metrics["final"]
    model = model_from_card(card)
    model.load_state_dict(load_safetensors(service.http.get(f"/v1/jobs/{ldam}/model").content))
    model.eval()
    assert isinstance(model.head(), CosineHead)
    splits = load_splits(JobSpec.model_validate(card["spec"]), service.home, service.home)
    with torch.inference_mode():
        logits = model(torch.from_numpy(splits.x_test)).double()
    assert float(logits.abs().max()) <= 30.0 + 1e-4  # 30 * cosines
    predictions = predict(service, ldam, splits.x_test.tolist())
    predicted = np.array([p["class"] for p in predictions])
    assert float(np.mean(predicted == splits.y_test)) == metrics["final"]["accuracy"]
    served = np.array([p["probabilities"] for p in predictions])
    np.testing.assert_allclose(served, logits.softmax(dim=1).numpy(), atol=1e-5)

    # Two stages: stage two's epochs follow stage one's, and the model served is its own.
    metrics = service.http.get(f"/v1/jobs/{two_stage}/metrics").json()
    assert [(row["epoch"], row["stage"]) for row in metrics["history"]] == [
        (1, 1), (2, 1), (3, 1), (4, 2), (5, 2)
    ]  # fmt: skip
    assert metrics["selected_epoch"] in (4, 5)
    assert metrics["stage1_selected_epoch"] in (1, 2, 3)
    assert metrics["final"]["balanced_accuracy"] > 0.8, metrics["final"]
    card = service.http.get(f"/v1/jobs/{two_stage}/model/card").json()
    assert card["selected_epoch"] == metrics["selected_epoch"]
    assert len(predict(service, two_stage, splits.x_test[:3].tolist())) == 3
