"""The predict model cache: each job's model is read from the artifact store once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from counterweight.service import artifacts
from counterweight.service.api.predict import ModelCache, predict, to_batch
from counterweight.service.errors import ArtifactMissing
from counterweight.service.settings import Settings
from counterweight.workers.training.checkpoint import save_model
from counterweight.workers.training.models import build_model


def store_model(artifacts_dir: Path, job_id: str) -> None:
    workdir = artifacts.job_dir(artifacts_dir, job_id)
    workdir.mkdir(parents=True)
    model = build_model("mlp", (1, 4, 4), 3, width=8)
    card = {
        "arch": "mlp",
        "model_kwargs": {"input_shape": [1, 4, 4], "num_classes": 3, "width": 8},
        "input_shape": [1, 4, 4],
        "class_names": ["a", "b", "c"],
    }
    save_model(workdir, model.state_dict(), card)


def remove_model(artifacts_dir: Path, job_id: str) -> None:
    for name in (artifacts.MODEL, artifacts.CARD):
        (artifacts.job_dir(artifacts_dir, job_id) / name).unlink()


def test_a_model_is_loaded_once_and_the_least_recently_used_is_evicted(tmp_path: Path) -> None:
    cache = ModelCache()
    settings = Settings(home=tmp_path)
    store_model(settings.artifacts_dir, "one")
    store_model(settings.artifacts_dir, "two")
    first = cache.get(settings, "one", capacity=1)
    remove_model(settings.artifacts_dir, "one")
    # Served from memory: the files are no longer read.
    assert cache.get(settings, "one", capacity=1) is first
    batch = to_batch([torch.rand(1, 4, 4).tolist()], first, max_inputs=8)
    (prediction,) = predict(first, batch)
    assert prediction["name"] == ["a", "b", "c"][prediction["class"]]
    assert sum(prediction["probabilities"]) == pytest.approx(1.0)

    cache.get(settings, "two", capacity=1)  # evicts "one", whose files are gone
    with pytest.raises(ArtifactMissing, match=r"card\.json"):
        cache.get(settings, "one", capacity=1)
