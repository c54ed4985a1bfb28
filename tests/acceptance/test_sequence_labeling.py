"""Sequence labeling as a user runs it: upload sentences, train on a real worker process.

The task (tests.sequences) has a rare tag whose words are more often the dominant tag:
without weights the tagger never predicts it; class_weight "balanced" makes it worth
predicting. Two small jobs (300 sentences, 8 epochs) on one worker.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from safetensors.torch import load as load_safetensors

from counterweight.workers.training.tagger_model import tagger_from_card
from tests.processes import Service
from tests.sequences import RARE, TAG_NAMES, tagging_arrays

ARRAYS = tagging_arrays(n_train=300, n_test=300, seed=0)
BASE: dict[str, Any] = {
    "task": "sequence_labeling",
    "model": {"embedding_dim": 16, "char_embedding_dim": 8, "width": 16},
    "train": {"epochs": 8, "batch_size": 32, "lr": 0.01, "seed": 0},
}


def test_balanced_class_weights_lift_the_rare_tag_through_the_worker(service: Service) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **ARRAYS)
    uploaded = service.http.post("/v1/datasets", files={"file": ("tags.npz", buffer.getvalue())})
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["kind"] == "sequences"
    dataset = {"name": "uploaded", "id": uploaded.json()["id"]}
    plain = service.submit({**BASE, "dataset": dataset})
    balanced = service.submit({**BASE, "dataset": dataset, "class_weight": "balanced"})
    service.start_worker()

    finals = {}
    for job_id in (plain, balanced):
        job = service.wait_until_ended(job_id, timeout=300)
        assert job["status"] == "succeeded", (job, service.logs())
        metrics = service.http.get(f"/v1/jobs/{job_id}/metrics").json()
        assert metrics["select_by"] == "macro_f1"
        assert [row["epoch"] for row in metrics["history"]] == list(range(1, 9))
        assert set(metrics["history"][0]["val"]) >= {"accuracy", "macro_f1", "per_class_recall"}
        final = metrics["final"]
        words = ARRAYS["x_test"] != 0
        support = np.bincount(ARRAYS["y_test"][words], minlength=7).tolist()
        assert [row["support"] for row in final["per_class"]] == support
        assert [row["name"] for row in final["per_class"]] == TAG_NAMES
        assert np.array(final["confusion_matrix"]).shape == (7, 7)
        assert metrics["plots"] == ["curves", "recall", "confusion"]
        plot = service.http.get(f"/v1/jobs/{job_id}/plots/confusion.png")
        assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
        finals[job_id] = final

    rare_recall = {j: finals[j]["per_class"][RARE]["recall"] for j in finals}
    # Unweighted, the rare tag is ignored; balanced, the tagger finds most of it.
    assert rare_recall[plain] < 0.2, rare_recall
    assert rare_recall[balanced] > 0.8, rare_recall
    assert finals[balanced]["macro_f1"] > finals[plain]["macro_f1"] + 0.03, finals

    # Predict is for classification; the model itself is served with its card.
    predicted = service.http.post(f"/v1/jobs/{balanced}/predict", json={"inputs": [[1, 2, 0]]})
    assert predicted.status_code == 422
    assert "predict serves classification jobs" in predicted.json()["detail"]
    card = service.http.get(f"/v1/jobs/{balanced}/model/card").json()
    assert card["task"] == "sequence_labeling" and card["class_names"] == TAG_NAMES
    model = tagger_from_card(card)
    weights = service.http.get(f"/v1/jobs/{balanced}/model").content
    model.load_state_dict(load_safetensors(weights))
    assert json.dumps(card["metrics"]["macro_f1"]) == json.dumps(finals[balanced]["macro_f1"])
