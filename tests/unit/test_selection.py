"""Model selection (workers.training.selection): smoothed, tie-broken, and off when the
validation split is too small to rank epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from counterweight.service.spec import JobSpec
from counterweight.workers.training.engine import train_job
from counterweight.workers.training.selection import Selection, epoch_key, selection_for


def row(epoch: int, *, ba: float, g: float = 0.0, f1: float = 0.0, loss: float = 1.0) -> Any:
    val = {"balanced_accuracy": ba, "g_mean": g, "macro_f1": f1, "per_class_recall": [1, 0]}
    return {"epoch": epoch, "val_loss": loss, "val": val}


def chosen(history: list[dict[str, Any]], rule: str) -> int:
    """The epoch the loop keeps: the one whose key is highest when it is reached."""
    keys = [epoch_key(history[:e], rule, minority=1) for e in range(1, len(history) + 1)]
    return max(range(len(keys)), key=lambda e: keys[e]) + 1


def test_a_tie_goes_to_the_second_metric_never_to_epoch_one() -> None:
    # g_mean is 0 in every epoch (a class never recalled): balanced accuracy decides.
    history = [row(e, ba=b) for e, b in enumerate([0.5, 0.55, 0.7, 0.72, 0.71], start=1)]
    assert chosen(history, "g_mean") == 5  # best 3-epoch mean of balanced accuracy
    # A full tie, every metric equal: the later epoch.
    flat = [row(e, ba=0.5) for e in range(1, 5)]
    assert chosen(flat, "balanced_accuracy") == 4


def test_one_lucky_epoch_does_not_beat_a_run_of_good_ones() -> None:
    scores = [0.5, 0.9, 0.5, 0.8, 0.8, 0.8]
    history = [row(e, ba=b) for e, b in enumerate(scores, start=1)]
    assert chosen(history, "balanced_accuracy") == 6  # mean 0.8 beats 0.7 at epoch 3


def test_too_small_a_validation_split_keeps_the_last_epoch() -> None:
    selection = selection_for("balanced_accuracy", [450, 5], ["airplane", "automobile"])
    assert selection.rule == "last" and not selection.early_stopping
    assert selection.reason is not None and "'automobile': 5" in selection.reason
    assert selection_for("g_mean", [450, 10], ["a", "b"]) == Selection("g_mean")
    history = [row(e, ba=b) for e, b in enumerate([0.9, 0.5, 0.6], start=1)]
    assert chosen(history, "last") == 3


def test_a_job_on_a_small_validation_split_trains_to_its_last_epoch(tmp_path: Path) -> None:
    # digits, classes 0 and 1, the second cut to 1/10: about 2 of it validate.
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits", "classes": [0, 1]},
            "imbalance": {"profile": "step", "ratio": 10},
            "model": {"width": 16, "depth": 1},
            "train": {"epochs": 4, "early_stopping_patience": 1, "lr": 0.05},
        }
    )
    result = train_job(
        spec,
        tmp_path,
        device="cpu",
        data_root=tmp_path,
        report=lambda progress: None,
        should_stop=lambda: False,
    )
    assert result is not None
    metrics = result.metrics
    assert (metrics["selected_epoch"], metrics["epochs_trained"]) == (4, 4)
    assert metrics["selection"]["rule"] == "last"
    assert "'1': " in metrics["selection"]["reason"]
