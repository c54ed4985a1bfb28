"""metrics against numbers worked out by hand, and against scikit-learn and imbalanced-learn
(the references the averages follow, DESIGN.md section 5) on random cases."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from imblearn.metrics import geometric_mean_score
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from counterweight.service.spec import JobSpec
from counterweight.workers.training.engine import train_job
from counterweight.workers.training.metrics import (
    BOOTSTRAP_RESAMPLES,
    evaluate,
    with_test_statistics,
)


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
    # Balanced accuracy averages the classes present in y_true (scikit-learn's rule); macro
    # F1 runs over all three, the absent class 2 with F1 0 (predicted once, never right).
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["macro_f1"] == pytest.approx((2 * (2 / 3) * 1 / (2 / 3 + 1) + 0.0 + 0.0) / 3)
    assert m["g_mean"] == 0.0
    assert m["per_class_recall"] == [1.0, 0.0, 0.0]
    assert [c["support"] for c in m["per_class"]] == [2, 2, 0]
    assert m["pr_auc_minority"] is None  # only defined for two classes


def random_case(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(y_true, probs, k): 2-6 classes, 1-80 samples; odd seeds draw y_true from a random
    subset of the classes, so some are absent from it (and may still be predicted)."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    n = int(rng.integers(1, 81))
    classes = np.arange(k)
    if seed % 2:
        classes = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
    y_true = rng.choice(classes, size=n)
    right = rng.random(n) < rng.uniform(0.3, 1.0)
    y_pred = np.where(right, y_true, rng.integers(0, k, size=n))
    probs = rng.random((n, k)) * 0.5
    probs[np.arange(n), y_pred] += 1.0  # argmax is y_pred
    return y_true, probs / probs.sum(axis=1, keepdims=True), k


def reference(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, Any]:
    labels = list(range(k))
    with warnings.catch_warnings():  # both warn about classes absent from y_true
        warnings.simplefilter("ignore")
        return {
            "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
            "macro_f1": f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0),
            "g_mean": geometric_mean_score(
                y_true, y_pred, labels=labels, average="multiclass"
            ),  # correction=0 by default
            "per_class_recall": recall_score(
                y_true, y_pred, average=None, labels=labels, zero_division=0
            ).tolist(),
        }


def test_averages_equal_scikit_learn_and_imbalanced_learn_on_random_cases() -> None:
    seen = {"absent": 0, "absent_predicted": 0, "g_mean_positive": 0}
    for seed in range(300):
        y_true, probs, k = random_case(seed)
        m = evaluate(y_true, probs, [f"c{c}" for c in range(k)], minority=0)
        expected = reference(y_true, probs.argmax(axis=1), k)
        for name, value in expected.items():
            assert m[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (seed, name)
        absent = set(range(k)) - set(y_true.tolist())
        seen["absent"] += bool(absent)
        seen["absent_predicted"] += bool(absent & set(probs.argmax(axis=1).tolist()))
        seen["g_mean_positive"] += m["g_mean"] > 0
    assert min(seen.values()) >= 20, seen  # the cases do cover what they are for


def test_a_class_absent_from_y_true_counts_in_macro_f1_and_zeroes_g_mean() -> None:
    # Classes 0 and 1 are all right; class 2 is in the job but not in this split.
    y_true = np.array([0, 0, 1, 1, 1])
    m = evaluate(y_true, np.eye(3)[y_true], ["a", "b", "c"], minority=2)
    assert m["balanced_accuracy"] == 1.0  # scikit-learn: the classes present
    assert m["macro_f1"] == pytest.approx(2 / 3)  # (1 + 1 + 0) / 3
    assert m["g_mean"] == 0.0  # (1 * 1 * 0)^(1/3)


def naive_bootstrap(
    y_true: np.ndarray, y_pred: np.ndarray, k: int, resamples: int
) -> tuple[list[float], list[list[float]]]:
    """The percentile bootstrap written the plain way: resample the samples' indices."""
    rng = np.random.default_rng(12345)
    n = len(y_true)
    balanced, recalls = [], np.full((resamples, k), np.nan)
    for r in range(resamples):
        idx = rng.integers(0, n, size=n)
        t, p = y_true[idx], y_pred[idx]
        support = np.bincount(t, minlength=k)
        correct = np.bincount(t[t == p], minlength=k)
        present = support > 0
        recalls[r, present] = correct[present] / support[present]
        balanced.append(float(recalls[r, present].mean()))
    interval = np.percentile(balanced, [2.5, 97.5]).tolist()
    per_class = [np.nanpercentile(recalls[:, c], [2.5, 97.5]).tolist() for c in range(k)]
    return interval, per_class


def test_bootstrap_interval_matches_resampling_the_samples_one_by_one() -> None:
    rng = np.random.default_rng(7)
    y_true = np.repeat([0, 1, 2], [400, 150, 40])
    right = rng.random(len(y_true)) < np.array([0.95, 0.8, 0.5])[y_true]
    y_pred = np.where(right, y_true, (y_true + 1) % 3)
    m = with_test_statistics(evaluate(y_true, np.eye(3)[y_pred], ["a", "b", "c"], 2), [9] * 3)
    ci = m["ci95"]
    assert ci["resamples"] == BOOTSTRAP_RESAMPLES == 1000
    balanced, per_class = naive_bootstrap(y_true, y_pred, 3, resamples=4000)
    # Two Monte Carlo estimates of the same interval: they agree to within their noise.
    assert ci["balanced_accuracy"] == pytest.approx(balanced, abs=0.01)
    for c in range(3):
        assert ci["per_class_recall"][c] == pytest.approx(per_class[c], abs=0.02)
        lo, hi = ci["per_class_recall"][c]
        assert lo <= m["per_class_recall"][c] <= hi
    lo, hi = ci["balanced_accuracy"]
    assert lo < m["balanced_accuracy"] < hi
    # A fixed seed: the same predictions get the same interval.
    again = with_test_statistics(evaluate(y_true, np.eye(3)[y_pred], ["a", "b", "c"], 2), [9] * 3)
    assert again["ci95"] == ci


def test_a_class_absent_from_the_test_split_has_no_interval_and_nothing_is_nan() -> None:
    y_true = np.array([0, 0, 0, 1])  # class 2 absent; class 1 has one sample
    y_pred = np.array([0, 1, 0, 2])
    m = with_test_statistics(evaluate(y_true, np.eye(3)[y_pred], ["a", "b", "c"], 1), [50, 5, 5])
    assert m["ci95"]["per_class_recall"][2] is None
    assert m["ci95"]["per_class_recall"][1] == [0.0, 0.0]  # its one sample is always wrong
    json.dumps(m, allow_nan=False)  # raises on NaN or infinity


def test_shot_accuracy_groups_classes_by_training_samples_as_the_long_tail_papers() -> None:
    # Many-shot: > 100 training samples; medium: 20..100; few: < 20 (the bounds are tested).
    train_counts = [500, 101, 100, 20, 19, 3]
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3, 4, 4])  # class 5 not in the test
    y_pred = np.array([0, 0, 0, 1, 1, 1, 2, 0, 0, 0, 0, 0, 4, 0])
    names = [f"c{c}" for c in range(6)]
    m = with_test_statistics(evaluate(y_true, np.eye(6)[y_pred], names, 5), train_counts)
    assert m["shot_accuracy"] == {
        "many": {"accuracy": pytest.approx((3 / 4 + 1) / 2), "classes": [0, 1]},
        "medium": {"accuracy": pytest.approx((1 / 5 + 0) / 2), "classes": [2, 3]},
        "few": {"accuracy": pytest.approx(1 / 2), "classes": [4, 5]},  # class 5: no recall
    }
    # A group none of whose classes is in the test split has no accuracy; two classes, no groups.
    only_many = with_test_statistics(m, [500, 500, 500, 500, 500, 500])["shot_accuracy"]
    assert only_many["few"] == {"accuracy": None, "classes": []}
    two = evaluate(np.array([0, 1]), np.eye(2), ["a", "b"], 1)
    assert with_test_statistics(two, [500, 5])["shot_accuracy"] is None


def test_a_trained_job_reports_intervals_and_shot_groups_in_its_final_metrics(
    tmp_path: Path,
) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "imbalance": {"profile": "exponential", "ratio": 20},
            "model": {"arch": "mlp", "width": 32, "depth": 1},
            "train": {"epochs": 2, "lr": 0.01},
        }
    )
    result = train_job(
        spec, tmp_path, device="cpu", data_root=tmp_path,
        report=lambda _: None, should_stop=lambda: False,
    )  # fmt: skip
    assert result is not None
    final, counts = result.metrics["final"], result.metrics["train_class_counts"]
    lo, hi = final["ci95"]["balanced_accuracy"]
    assert lo <= final["balanced_accuracy"] <= hi
    for (lo, hi), recall in zip(
        final["ci95"]["per_class_recall"], final["per_class_recall"], strict=True
    ):
        assert lo <= recall <= hi
    shots = final["shot_accuracy"]
    assert shots["many"]["classes"] == [c for c, n in enumerate(counts) if n > 100]
    assert shots["few"]["classes"] == [c for c, n in enumerate(counts) if n < 20]
    assert all(shots[g]["classes"] for g in ("many", "medium", "few")), counts
    few = shots["few"]["classes"]
    assert shots["few"]["accuracy"] == pytest.approx(
        np.mean([final["per_class_recall"][c] for c in few])
    )
    assert result.card["metrics"] == final
    json.dumps(result.metrics, allow_nan=False)
