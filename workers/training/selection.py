"""Which epoch's model a job keeps: model selection on the validation split.

A handful of validation samples cannot drive it: with 5 images of a class, its
recall moves in steps of 0.2 and the "best" epoch is whichever got lucky. So:

- The `select_by` metric is averaged over a trailing window of SMOOTHING_EPOCHS
  epochs (fewer at the start): an epoch wins by a run of good epochs, not one.
- Ties are broken by a second metric (SECONDARY), then by the lower mean validation
  loss over the window, then by the later epoch: a tie never falls back to epoch 1,
  which would serve a barely trained model (g_mean is 0 in every epoch while a class
  has no recall at all).
- When a class has fewer than MIN_VALIDATION_PER_CLASS validation samples the
  validation split cannot rank epochs: the job keeps its last epoch and does not stop
  early, and says so (`selection` in the result; validate warns before it runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from counterweight.service.spec_rules import small_validation

SMOOTHING_EPOCHS = 3
# The metric that breaks ties of each select_by (then val loss, then the later epoch).
SECONDARY = {
    "balanced_accuracy": "macro_f1",
    "macro_f1": "balanced_accuracy",
    "g_mean": "balanced_accuracy",
    "minority_recall": "balanced_accuracy",
    "val_loss": "balanced_accuracy",
}


@dataclass(frozen=True)
class Selection:
    """How a job picks its epoch: `rule` is select_by, or "last" when `reason` says why."""

    rule: str
    reason: str | None = None

    @property
    def early_stopping(self) -> bool:
        return self.rule != "last"

    def to_dict(self) -> dict[str, Any]:
        smoothing = None if self.rule == "last" else SMOOTHING_EPOCHS
        return {"rule": self.rule, "reason": self.reason, "smoothing_epochs": smoothing}


def selection_for(select_by: str, val_counts: list[int], class_names: list[str]) -> Selection:
    if select_by == "last":
        return Selection("last")
    reason = small_validation(val_counts, class_names)
    return Selection("last", reason) if reason else Selection(select_by)


def _metric(row: dict[str, Any], name: str, minority: int) -> float:
    if name == "val_loss":
        return -float(row["val_loss"])  # higher is better, as for the others
    if name == "minority_recall":
        return float(row["val"]["per_class_recall"][minority])
    return float(row["val"][name])


def epoch_key(history: list[dict[str, Any]], rule: str, minority: int) -> list[float]:
    """How good the last epoch of `history` is under `rule`, as a key compared
    lexicographically (higher is better; the epoch itself decides a full tie)."""
    epoch = float(history[-1]["epoch"])
    if rule == "last":
        return [epoch]
    window = history[-SMOOTHING_EPOCHS:]

    def mean(name: str) -> float:
        return sum(_metric(row, name, minority) for row in window) / len(window)

    return [mean(rule), mean(SECONDARY[rule]), mean("val_loss"), epoch]


def selection_score(
    y_true: npt.NDArray[np.int64],
    y_pred: npt.NDArray[np.int64],
    num_classes: int,
    metric: str,
    minority: int,
) -> float:
    """One selection metric (balanced_accuracy, macro_f1, g_mean or minority_recall) of
    predictions, from the confusion matrix alone: cheap enough to score the hundreds of
    candidate decisions a post-hoc rule is tuned over (service.rebalance.decision).
    Averaged as workers.training.metrics averages them."""
    k = num_classes
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    hits = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    recall = np.divide(hits, support, out=np.zeros(k), where=support > 0)
    if metric == "minority_recall":
        return float(recall[minority])
    if metric == "macro_f1":
        both = support + predicted
        return float(np.divide(2 * hits, both, out=np.zeros(k), where=both > 0).mean())
    if metric == "g_mean":
        return float(np.prod(recall) ** (1 / k))
    return float(recall[support > 0].mean())  # scikit-learn's: classes in y_true
