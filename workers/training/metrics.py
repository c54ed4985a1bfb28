"""Classification metrics for imbalanced data (DESIGN.md section 5, `final`); sequence
labeling scores its words with the same (`evaluate_tokens`).

Each average over classes is the reference library's, over every class of the job:

- balanced accuracy: scikit-learn's `balanced_accuracy_score`, the mean recall of the
  classes present in `y_true` (a class a small split lacks has no recall to average);
- macro F1: scikit-learn's `f1_score(average="macro", labels=range(k),
  zero_division=0)`: a class absent from `y_true` counts with F1 0;
- G-mean: imbalanced-learn's `geometric_mean_score(labels=range(k),
  average="multiclass")` with its default `correction=0`: the k-th root of the product
  of the k recalls, so 0 as soon as one class has recall 0, a class absent from
  `y_true` included.

The test evaluation adds (`with_test_statistics`) a bootstrap 95% interval for
balanced accuracy and each class's recall, and for three or more classes the many /
medium / few-shot accuracy of the long-tail literature. Every value is a plain Python
number or None, never NaN (a split holds at least one sample), so the result is JSON as it
stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0  # fixed: the same predictions always get the same interval
# Liu et al. 2019 ("Large-Scale Long-Tailed Recognition in an Open World", OLTR) and
# Kang et al. 2020 ("Decoupling Representation and Classifier"): a class is many-shot with
# more than 100 training samples, few-shot with fewer than 20, medium-shot in between.
MANY_SHOT_ABOVE = 100
FEW_SHOT_BELOW = 20
MIN_CLASSES_FOR_SHOTS = 3  # with two classes the groups say no more than per-class recall


def evaluate(
    y_true: npt.NDArray[np.integer[Any]],
    probs: npt.NDArray[np.floating[Any]],
    class_names: list[str],
    minority: int,
) -> dict[str, Any]:
    """Metrics of predictions `probs` (n, k) against labels `y_true` (n,) in 0..k-1.

    `minority` is the class with the fewest training samples; its precision-recall
    AUC (average precision) is reported when there are two classes.
    """
    k = len(class_names)
    labels = list(range(k))  # every class gets a row, even one absent from y_true
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    with np.errstate(divide="ignore"):  # log(0) = -inf -> a zero recall gives G-mean 0
        g_mean = float(np.exp(np.log(recall).mean()))
    pr_auc_minority = None
    if k == 2 and (y_true == minority).any():  # AP is undefined without a positive
        pr_auc_minority = float(average_precision_score(y_true == minority, probs[:, minority]))
    return {
        "accuracy": float(np.mean(y_pred == y_true)),
        "balanced_accuracy": float(recall[support > 0].mean()),
        "macro_f1": float(f1.mean()),
        "g_mean": g_mean,
        "per_class": [
            {
                "class": c,
                "name": class_names[c],
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(support[c]),
            }
            for c in labels
        ],
        "per_class_recall": [float(r) for r in recall],
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "pr_auc_minority": pr_auc_minority,
    }


def evaluate_tokens(
    y_true: npt.NDArray[np.integer[Any]],
    probs: npt.NDArray[np.floating[Any]],
    tag_names: list[str],
    minority: int,
) -> dict[str, Any]:
    """Sequence labeling: `evaluate` over the words (padding never among them), each word
    one sample; `token_accuracy` names the accuracy for what it is."""
    metrics = evaluate(y_true, probs, tag_names, minority)
    return {"token_accuracy": metrics["accuracy"], **metrics}


def with_test_statistics(metrics: dict[str, Any], train_counts: Sequence[int]) -> dict[str, Any]:
    """`metrics` (from `evaluate` on the test split) with `ci95` and `shot_accuracy` added.
    Both follow from its confusion matrix; `train_counts` are the training split's counts
    per class (words per tag for sequence labeling)."""
    confusion = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    return {
        **metrics,
        "ci95": bootstrap_ci95(confusion),
        "shot_accuracy": shot_accuracy(confusion, train_counts),
    }


def _interval(values: npt.NDArray[np.float64]) -> list[float] | None:
    """The percentile interval of the finite `values` (NaN: the statistic was undefined on
    that resample); None when it never was defined."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def bootstrap_ci95(confusion: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Percentile bootstrap 95% intervals of balanced accuracy and of each class's recall,
    over resamples of the test samples with replacement (BOOTSTRAP_RESAMPLES, a fixed seed).

    Both statistics depend on a resample only through how many samples of each class it
    drew, right and wrong, and those 2k counts are multinomial(n, their shares in the test
    split): drawing them directly is the same bootstrap at a cost of O(resamples * k), not
    O(resamples * n). A class a resample leaves out has no recall there; its interval is over
    the resamples that hold it, and balanced accuracy averages the classes present, as on the
    test split itself. A class absent from the test split has no interval (None).
    """
    k = len(confusion)
    n = int(confusion.sum())
    correct = np.diag(confusion)
    cells = np.stack([correct, confusion.sum(axis=1) - correct], axis=1).ravel()  # (2k,)
    if n == 0:
        return {"balanced_accuracy": None, "per_class_recall": [None] * k, "resamples": 0}
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    drawn = rng.multinomial(n, cells / n, size=BOOTSTRAP_RESAMPLES).reshape(-1, k, 2)
    support = drawn.sum(axis=2)
    recall = np.divide(
        drawn[:, :, 0], support, out=np.full(support.shape, np.nan), where=support > 0
    )
    # Every resample draws n >= 1 samples, so at least one class is present in each.
    balanced = np.nansum(recall, axis=1) / (support > 0).sum(axis=1)
    return {
        "balanced_accuracy": _interval(balanced),
        "per_class_recall": [_interval(recall[:, c]) for c in range(k)],
        "resamples": BOOTSTRAP_RESAMPLES,
    }


def shot_accuracy(
    confusion: npt.NDArray[np.int64], train_counts: Sequence[int]
) -> dict[str, Any] | None:
    """Many / medium / few-shot accuracy (None below MIN_CLASSES_FOR_SHOTS classes): the
    mean test recall of the classes with more than MANY_SHOT_ABOVE training samples, with
    FEW_SHOT_BELOW to MANY_SHOT_ABOVE, and with fewer than FEW_SHOT_BELOW, as the OLTR and
    decoupling papers' code computes it (`shot_acc`). A group's accuracy is None when none
    of its classes is in the test split."""
    k = len(confusion)
    if k < MIN_CLASSES_FOR_SHOTS:
        return None
    counts = np.asarray(train_counts)
    support = confusion.sum(axis=1)
    groups = {
        "many": counts > MANY_SHOT_ABOVE,
        "medium": (counts >= FEW_SHOT_BELOW) & (counts <= MANY_SHOT_ABOVE),
        "few": counts < FEW_SHOT_BELOW,
    }
    result: dict[str, Any] = {}
    for name, members in groups.items():
        tested = members & (support > 0)
        recall = np.diag(confusion)[tested] / support[tested]
        result[name] = {
            "accuracy": float(recall.mean()) if tested.any() else None,
            "classes": np.flatnonzero(members).tolist(),
        }
    return result
