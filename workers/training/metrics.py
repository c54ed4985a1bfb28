"""Classification metrics for imbalanced data (DESIGN.md section 5, `final`); sequence
labeling scores its words with the same (`evaluate_tokens`).

Averages over classes (balanced accuracy, macro F1, G-mean) count only the
classes present in `y_true`: a class missing from a small split is unknown, not
a zero. That is scikit-learn's rule for balanced accuracy, applied to all three.
Every value is a plain Python number so the result is JSON as it stands.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
)


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
    present = support > 0
    with np.errstate(divide="ignore"):  # log(0) = -inf -> a zero recall gives G-mean 0
        g_mean = float(np.exp(np.log(recall[present]).mean()))
    pr_auc_minority = None
    if k == 2 and (y_true == minority).any():  # AP is undefined without a positive
        pr_auc_minority = float(average_precision_score(y_true == minority, probs[:, minority]))
    return {
        "accuracy": float(np.mean(y_pred == y_true)),
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
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
