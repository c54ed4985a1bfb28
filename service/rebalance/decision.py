"""Post-hoc decision rules (spec `decision`): how a trained model's logits become a class.

The cheapest strong remedy for imbalance leaves the model alone and moves its
decision (Menon et al. 2021, "Long-tail learning via logit adjustment"; for two
classes, a tuned threshold as scikit-learn's TunedThresholdClassifierCV). Every rule
here is a bias vector added to the logits before the argmax, tuned on the
validation split for the job's selection metric:

- argmax: no bias.
- logit_adjusted: bias = -tau * log(training prior), tau from TAUS (0 is argmax).
- threshold (two classes): class 1 when p1 >= t, i.e. bias [0, -log(t / (1 - t))],
  t from the validation probabilities (at most MAX_THRESHOLDS candidates).

A tie between candidates goes to the one nearest argmax (the smaller tau, the
threshold nearest 0.5): validation should earn every step away from the model.
The card stores the bias, so predict applies the same rule; predict's optional
`priors` (the classes' shares where the model will be used) replace it with the
Bayes correction for that prior, log(priors) - log(training prior).
numpy only: the worker tunes, the API (predict) applies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from counterweight.service.errors import DatasetError

Floats = npt.NDArray[np.float64]
TAUS = tuple(step / 4 for step in range(13))  # 0, 0.25, ..., 3.0
MAX_THRESHOLDS = 200
# A class with no training samples still needs a finite log prior.
_MIN_PRIOR = 1e-12


def check_decision(rule: str, num_classes: int) -> None:
    """DatasetError (422) for a rule that cannot apply to this job's classes."""
    if rule == "threshold" and num_classes != 2:
        raise DatasetError(
            f"decision: 'threshold' tunes the cut between two classes; this job has "
            f"{num_classes}: use 'logit_adjusted' (or 'argmax')"
        )


def log_prior(counts: list[int]) -> Floats:
    prior = np.asarray(counts, dtype=np.float64) / max(sum(counts), 1)
    return np.log(np.maximum(prior, _MIN_PRIOR))


def _candidates(rule: str, val_logits: Floats, log_train_prior: Floats) -> list[dict[str, Any]]:
    """Candidate decisions, nearest to argmax first."""
    k = val_logits.shape[1]
    if rule == "logit_adjusted":
        return [
            {"rule": rule, "tau": tau, "bias": (-tau * log_train_prior).tolist()} for tau in TAUS
        ]
    margin = val_logits[:, 1] - val_logits[:, 0]  # log(p1 / p0)
    cuts = np.unique(np.quantile(margin, np.linspace(0, 1, MAX_THRESHOLDS)))
    # Midpoints between observed margins, each a distinct split of the validation set.
    midpoints = (cuts[:-1] + cuts[1:]) / 2 if len(cuts) > 1 else cuts
    candidates = sorted([0.0, *midpoints.tolist()], key=abs)
    return [
        {
            "rule": rule,
            "threshold": float(1 / (1 + np.exp(-cut))),  # p1 at which class 1 wins
            "bias": [0.0, -cut] if k == 2 else [0.0] * k,
        }
        for cut in candidates
    ]


def tune_decision(
    rule: str,
    val_logits: Floats,
    y_val: npt.NDArray[np.int64],
    train_counts: list[int],
    score: Callable[[npt.NDArray[np.int64], Floats], float],
) -> dict[str, Any]:
    """The decision of `rule` that scores best on the validation split; `score(y, logits)`
    is the selection metric of predictions argmax(logits). Returns what the card stores:
    the rule, its parameter, the bias, and the validation score it reached."""
    if rule == "argmax":
        return {"rule": "argmax", "bias": [0.0] * val_logits.shape[1]}
    best: dict[str, Any] | None = None
    for candidate in _candidates(rule, val_logits, log_prior(train_counts)):
        value = score(y_val, val_logits + np.asarray(candidate["bias"]))
        if best is None or value > best["val_score"]:  # strictly: ties keep the nearer
            best = {**candidate, "val_score": value}
    assert best is not None
    return best


def apply_decision(
    logits: Floats,
    bias: list[float],
    train_counts: list[int] | None = None,
    priors: list[float] | None = None,
) -> Floats:
    """Logits whose argmax is the decision (and whose softmax the probabilities under it).
    With `priors`, the Bayes correction to that prior replaces `bias`."""
    if priors is None:
        adjusted: Floats = logits + np.asarray(bias)
        return adjusted
    assert train_counts is not None, "a prior shift needs the training prior"
    target = np.log(np.asarray(priors, dtype=np.float64) / np.sum(priors))
    shifted: Floats = logits + target - log_prior(train_counts)
    return shifted
