"""Post-hoc decision rules (service.rebalance.decision), against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from counterweight.service.errors import DatasetError
from counterweight.service.rebalance.decision import (
    TAUS,
    apply_decision,
    check_decision,
    log_prior,
    tune_decision,
)
from counterweight.workers.training.selection import selection_score


def balanced_accuracy(y: np.ndarray, logits: np.ndarray) -> float:
    return selection_score(y, logits.argmax(axis=1), logits.shape[1], "balanced_accuracy", 1)


def scores_of_an_imbalanced_model(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a model that learned the training prior (900 : 100): the minority's
    margin is shifted down by log(9), so argmax misses most of it."""
    rng = np.random.default_rng(seed)
    y = np.array([0] * 300 + [1] * 300)
    margin = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1, len(y)) - np.log(9)
    return np.stack([np.zeros(len(y)), margin], axis=1), y


def test_a_tuned_threshold_recovers_the_minority() -> None:
    logits, y = scores_of_an_imbalanced_model()
    decision = tune_decision("threshold", logits, y, [900, 100], balanced_accuracy)
    tuned = balanced_accuracy(y, apply_decision(logits, decision["bias"]))
    assert balanced_accuracy(y, logits) < 0.65 < 0.8 < tuned == decision["val_score"]
    # The cut sits near the prior's log-odds, log(9) below 0: p1 about 0.1.
    assert 0.03 < decision["threshold"] < 0.3
    assert decision["bias"][1] == pytest.approx(
        -np.log(decision["threshold"] / (1 - decision["threshold"]))
    )


def test_logit_adjustment_subtracts_tau_times_the_log_prior() -> None:
    logits, y = scores_of_an_imbalanced_model()
    decision = tune_decision("logit_adjusted", logits, y, [900, 100], balanced_accuracy)
    assert decision["tau"] in TAUS and decision["tau"] > 0
    expected = -decision["tau"] * np.log([0.9, 0.1])
    np.testing.assert_allclose(decision["bias"], expected)
    assert balanced_accuracy(y, apply_decision(logits, decision["bias"])) > 0.8


def test_a_tie_keeps_the_candidate_nearest_argmax() -> None:
    # Perfectly separated: every small tau or threshold scores 1.0; argmax's must win.
    y = np.array([0, 0, 1, 1])
    logits = np.array([[5.0, -5.0], [4.0, -4.0], [-4.0, 4.0], [-5.0, 5.0]])
    assert tune_decision("logit_adjusted", logits, y, [500, 500], balanced_accuracy)["tau"] == 0
    assert tune_decision("threshold", logits, y, [500, 500], balanced_accuracy)["threshold"] == 0.5


def test_priors_replace_the_decision_with_the_bayes_correction() -> None:
    logits = np.log(np.array([[0.6, 0.4], [0.95, 0.05]]))
    # Training prior 0.9 : 0.1; deployed where the classes are even: p(y|x) * 0.5 / prior.
    shifted = apply_decision(logits, [0.0, 0.0], [900, 100], priors=[1, 1])
    posterior = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    expected = np.array([[0.6 / 0.9, 0.4 / 0.1], [0.95 / 0.9, 0.05 / 0.1]])
    np.testing.assert_allclose(posterior, expected / expected.sum(axis=1, keepdims=True))
    # The training prior itself changes nothing.
    np.testing.assert_allclose(apply_decision(logits, [0.0, 9.0], [9, 1], [0.9, 0.1]), logits)
    assert np.isfinite(log_prior([10, 0])).all()  # a class with no samples stays finite


def test_a_threshold_needs_two_classes() -> None:
    check_decision("threshold", 2)
    check_decision("logit_adjusted", 10)
    with pytest.raises(DatasetError, match=r"decision: 'threshold' .* this job has 3"):
        check_decision("threshold", 3)
