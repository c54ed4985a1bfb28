"""Training a small digits MLP end to end, on the CPU (a few seconds in all)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from counterweight.service.artifacts import CARD as CARD_FILE
from counterweight.service.artifacts import CHECKPOINT as CHECKPOINT_FILE
from counterweight.service.artifacts import MODEL as MODEL_FILE
from counterweight.service.data.splits import load_splits
from counterweight.service.spec import JobSpec
from counterweight.workers.training.checkpoint import load_model
from counterweight.workers.training.engine import train_job
from counterweight.workers.training.loop import Progress, TrainingResult
from counterweight.workers.training.models import model_from_card

EPOCHS = 4


def make_spec(**train: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": {"arch": "mlp", "width": 64, "depth": 1},
            "train": {"epochs": EPOCHS, "batch_size": 128, "lr": 0.005, "seed": 1, **train},
        }
    )


def run(
    spec: JobSpec,
    workdir: Path,
    stop_after: int | None = None,
    reports: list[Progress] | None = None,
) -> TrainingResult | None:
    """train_job on the CPU; should_stop turns True on its `stop_after`-th call."""
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return stop_after is not None and calls >= stop_after

    workdir.mkdir(exist_ok=True)
    return train_job(
        spec,
        workdir,
        device="cpu",
        data_root=workdir,
        report=(reports if reports is not None else []).append,
        should_stop=should_stop,
    )


def test_short_job_learns_and_its_card_reproduces_the_test_accuracy(tmp_path: Path) -> None:
    spec = make_spec()
    reports: list[Progress] = []
    result = run(spec, tmp_path, reports=reports)
    assert result is not None
    m = result.metrics

    assert m["final"]["accuracy"] > 0.9
    assert [row["epoch"] for row in m["history"]] == list(range(1, EPOCHS + 1))
    assert set(m["history"][0]["val"]) == {
        "accuracy", "balanced_accuracy", "macro_f1", "g_mean", "per_class_recall"
    }  # fmt: skip
    assert len(m["history"][0]["val"]["per_class_recall"]) == 10
    assert m["resumed_from_epoch"] == 0
    assert m["class_weight"] == [1.0] * 10
    assert sum(m["train_class_counts"]) == 1797 - 450 - 135
    # One report per epoch at least; the last says the job is done.
    epoch_reports = [p for p in reports if p.fraction == p.epoch / EPOCHS]
    assert [p.epoch for p in epoch_reports] == list(range(1, EPOCHS + 1))
    assert reports[-1].fraction == 1.0 and reports[-1].eta_seconds == 0.0
    assert reports[-1].metrics["val_accuracy"] == m["history"][-1]["val"]["accuracy"]

    # A client's path: rebuild from the card, load the weights, feed raw [0, 1] inputs.
    card = json.loads((tmp_path / CARD_FILE).read_text())
    assert card == json.loads(json.dumps(result.card))
    assert card["class_names"] == [str(d) for d in range(10)]
    assert card["input_shape"] == [1, 8, 8]
    model = model_from_card(card)
    model.load_state_dict(load_file(tmp_path / MODEL_FILE))
    model.eval()
    splits = load_splits(JobSpec.model_validate(card["spec"]), tmp_path)
    with torch.inference_mode():
        predicted = model(torch.from_numpy(splits.x_test)).argmax(dim=1).numpy()
    assert float(np.mean(predicted == splits.y_test)) == m["final"]["accuracy"]
    assert card["metrics"] == m["final"]
    # load_model, the service's shortcut for the same, serves the same model.
    served, served_card = load_model(tmp_path)
    assert served_card == card
    with torch.inference_mode():
        served_predicted = served(torch.from_numpy(splits.x_test)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(served_predicted, predicted)


def test_stopped_and_resumed_run_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    spec = make_spec()
    reference = run(spec, tmp_path / "reference")
    assert reference is not None

    # 1212 training images in batches of 128: 10 batches an epoch, one should_stop call
    # before each. Stop in epoch 2 (after 3 of its batches), then in epoch 3, then finish.
    workdir = tmp_path / "interrupted"
    assert run(spec, workdir, stop_after=14) is None
    assert (workdir / CHECKPOINT_FILE).exists() and not (workdir / CARD_FILE).exists()
    assert run(spec, workdir, stop_after=12) is None
    resumed = run(spec, workdir)
    assert resumed is not None

    assert resumed.metrics["resumed_from_epoch"] == 2
    for key in ("history", "final", "selected_epoch"):
        assert resumed.metrics[key] == reference.metrics[key], key
    assert (workdir / MODEL_FILE).read_bytes() == (tmp_path / "reference" / MODEL_FILE).read_bytes()


def best_smoothed(values: list[float]) -> int:
    """The epoch (1-based) whose trailing 3-epoch mean of `values` is highest; the later on
    a tie (DESIGN.md section 5, "selection")."""
    means = [float(np.mean(values[max(0, e - 3) : e])) for e in range(1, len(values) + 1)]
    return max(range(len(means)), key=lambda e: (means[e], e)) + 1


def test_select_by_serves_the_best_validation_epoch(tmp_path: Path) -> None:
    # A high learning rate makes validation loss bounce, so the best epoch is not the last.
    spec = make_spec(select_by="val_loss", lr=0.05, epochs=6)
    result = run(spec, tmp_path / "val_loss")
    assert result is not None
    losses = [row["val_loss"] for row in result.metrics["history"]]
    best = best_smoothed([-loss for loss in losses])
    assert result.metrics["selected_epoch"] == best
    assert result.metrics["selection"] == {
        "rule": "val_loss",
        "reason": None,
        "smoothing_epochs": 3,
    }

    # The served model is that epoch's: a run that stops there and keeps the last
    # epoch (same seed, same batches) scores the same on the test split.
    cut = run(make_spec(select_by="last", lr=0.05, epochs=best), tmp_path / "cut")
    assert cut is not None and cut.metrics["selected_epoch"] == best
    assert cut.metrics["final"] == result.metrics["final"]


def test_early_stopping_on_minority_recall(tmp_path: Path) -> None:
    result = run(
        make_spec(select_by="minority_recall", early_stopping_patience=2, epochs=40), tmp_path
    )
    assert result is not None
    m = result.metrics
    minority = int(np.argmin(m["train_class_counts"]))
    recalls = [row["val"]["per_class_recall"][minority] for row in m["history"]]
    smoothed = [np.mean(recalls[max(0, e - 3) : e]) for e in range(1, len(recalls) + 1)]
    assert smoothed[m["selected_epoch"] - 1] == max(smoothed)
    assert len(m["history"]) == m["selected_epoch"] + 2 < 40
    assert m["early_stopped"] is True


def test_mean_and_weighted_mean_agree_without_weights(tmp_path: Path) -> None:
    a = run(make_spec(epochs=2), tmp_path / "a")
    spec = make_spec(epochs=2).model_copy(deep=True)
    spec.loss.reduction = "mean"
    b = run(spec, tmp_path / "b")
    assert a is not None and b is not None
    assert a.metrics["history"] == b.metrics["history"]
