"""metrics.evaluate against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from counterweight.workers.training.metrics import evaluate


def test_two_classes_hand_checked() -> None:
    # Confusion [[3, 1], [2, 4]]: class 0 (the minority) has 4 samples, class 1 has 6.
    # The scores are the probabilities of class 0; argmax picks class 0 where p0 > 0.5.
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    p0 = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.55, 0.4, 0.2, 0.1, 0.05])
    probs = np.stack([p0, 1 - p0], axis=1)

    m = evaluate(y_true, probs, ["neg", "pos"], minority=0)

    assert m["confusion_matrix"] == [[3, 1], [2, 4]]
    assert m["accuracy"] == pytest.approx(7 / 10)
    recall = [3 / 4, 4 / 6]
    precision = [3 / 5, 4 / 5]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall, strict=True)]  # 2/3, 8/11
    assert m["per_class_recall"] == pytest.approx(recall)
    assert m["balanced_accuracy"] == pytest.approx(17 / 24)
    assert m["g_mean"] == pytest.approx(math.sqrt(0.5))
    assert m["macro_f1"] == pytest.approx(23 / 33)
    assert m["per_class"] == [
        {"class": 0, "name": "neg", "precision": pytest.approx(precision[0]),
         "recall": pytest.approx(recall[0]), "f1": pytest.approx(f1[0]), "support": 4},
        {"class": 1, "name": "pos", "precision": pytest.approx(precision[1]),
         "recall": pytest.approx(recall[1]), "f1": pytest.approx(f1[1]), "support": 6},
    ]  # fmt: skip
    # Ranked by p0, the positives (class 0) sit at ranks 1, 2, 3 and 7, so the average
    # precision is (1 + 1 + 1 + 4/7) / 4.
    assert m["pr_auc_minority"] == pytest.approx(25 / 28)


def test_minority_pr_auc_follows_the_minority_class() -> None:
    y_true = np.array([0, 0, 1, 1, 1])
    probs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.9, 0.1]])
    # Class 1 as the positive, ranked by p1: 0.9(-) 0.7(+) 0.6(+) 0.2(-) 0.1(+).
    m = evaluate(y_true, probs, ["a", "b"], minority=1)
    assert m["pr_auc_minority"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)


def test_absent_class_and_zero_recall() -> None:
    # Three classes; class 2 never occurs in y_true, class 1 is never predicted right.
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 2])
    probs = np.eye(3)[y_pred]

    m = evaluate(y_true, probs, ["a", "b", "c"], minority=1)

    assert m["confusion_matrix"] == [[2, 0, 0], [1, 0, 1], [0, 0, 0]]
    assert m["accuracy"] == pytest.approx(0.5)
    # Averages run over the classes present in y_true (0 and 1), not the absent class 2.
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["macro_f1"] == pytest.approx((2 * (2 / 3) * 1 / (2 / 3 + 1) + 0.0) / 2)
    assert m["g_mean"] == 0.0
    assert m["per_class_recall"] == [1.0, 0.0, 0.0]
    assert [c["support"] for c in m["per_class"]] == [2, 2, 0]
    assert m["pr_auc_minority"] is None  # only defined for two classes
