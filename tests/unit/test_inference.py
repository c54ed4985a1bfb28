"""The predict model cache: each job's model is read from the artifact store once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from counterweight.service import artifacts
from counterweight.service.api.predict import LoadedModel, ModelCache, predict, to_batch
from counterweight.service.api.storage_calls import StorageCalls
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
    cache = ModelCache(capacity=1)
    settings = Settings(home=tmp_path)
    calls = StorageCalls(max_calls=2, wait_seconds=10)

    def get(job_id: str) -> LoadedModel:
        return asyncio.run(cache.get(settings, job_id, calls))

    async def get_together(job_id: str) -> list[LoadedModel]:
        return await asyncio.gather(*(cache.get(settings, job_id, calls) for _ in range(3)))

    store_model(settings.artifacts_dir, "one")
    store_model(settings.artifacts_dir, "two")
    first, *others = asyncio.run(get_together("one"))
    assert all(other is first for other in others)  # asked for at once, loaded once
    remove_model(settings.artifacts_dir, "one")
    # Served from memory: the files are no longer read.
    assert get("one") is first
    batch = to_batch([torch.rand(1, 4, 4).tolist()], first, max_inputs=8)
    (prediction,) = predict(first, batch)
    assert prediction["name"] == ["a", "b", "c"][prediction["class"]]
    assert sum(prediction["probabilities"]) == pytest.approx(1.0)

    get("two")  # evicts "one", whose files are gone
    with pytest.raises(ArtifactMissing, match=r"card\.json"):
        get("one")
    calls.close()
