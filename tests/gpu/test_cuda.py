"""Training on CUDA with bfloat16 autocast. Skipped where there is no CUDA device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from counterweight.service.spec import JobSpec
from counterweight.workers.training.checkpoint import load_model
from counterweight.workers.training.engine import train_job
from counterweight.workers.training.loop import TrainingResult

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def run(workdir: Path, device: str, **train: Any) -> TrainingResult:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": {"arch": "small_cnn"},
            "train": {"epochs": 3, "batch_size": 64, "lr": 0.01, "schedule": "cosine", **train},
        }
    )
    result = train_job(
        spec,
        workdir,
        device=device,
        data_root=workdir,
        report=lambda progress: None,
        should_stop=lambda: False,
    )
    assert result is not None
    return result


def shape(value: Any) -> Any:
    """The structure of a metrics document: keys and list lengths, not the numbers."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def test_an_amp_job_on_cuda_learns_and_reports_what_a_cpu_job_does(tmp_path: Path) -> None:
    cuda = run(tmp_path / "cuda", "cuda", amp=True)
    cpu = run(tmp_path / "cpu", "cpu")

    assert cuda.metrics["device"] == "cuda"
    assert cuda.metrics["final"]["accuracy"] > 0.9
    for key in ("history", "final", "train_class_counts", "class_weight"):
        assert shape(cuda.metrics[key]) == shape(cpu.metrics[key]), key
    assert set(cuda.metrics) == set(cpu.metrics)
    # The served model is float32 and loads on the CPU from its card.
    model, card = load_model(tmp_path / "cuda")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert card["model_kwargs"] == cpu.card["model_kwargs"]


def test_amp_changes_the_arithmetic_and_both_ways_learn(tmp_path: Path) -> None:
    # bfloat16 keeps 8 bits of mantissa: losses differ from float32 after the first batch.
    amp = run(tmp_path / "amp", "cuda", amp=True, epochs=2)
    fp32 = run(tmp_path / "fp32", "cuda", amp=False, epochs=2)
    assert amp.metrics["history"][0]["train_loss"] != fp32.metrics["history"][0]["train_loss"]
    assert fp32.metrics["final"]["accuracy"] > 0.8 and amp.metrics["final"]["accuracy"] > 0.8
