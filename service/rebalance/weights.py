"""Class weights and the per-class quantities of the re-balancing losses.

numpy only (no torch, no data loading): the API resolves and reports weights at
submit time with exactly the numbers the worker trains with. Counts are always the
training split's per-class counts (after `imbalance` and the validation split).

Every rule that divides by a class count refuses a class with no training
samples (DatasetError): such a class has no frequency to weigh it by.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from counterweight.service.data.arrays import FLOAT32_MAX, Floats, Labels, not_float32
from counterweight.service.errors import DatasetError
from counterweight.service.spec import ClassWeight, EffectiveNumber, JobSpec, LossSpec

Vector = npt.NDArray[np.float64]

# LDAM-DRW's deferred re-weighting uses effective-number weights with this beta
# (Cao et al. 2019, reference code: `betas = [0, 0.9999]`).
DRW_BETA = 0.9999


class TrainingSet(Protocol):
    """A job's training samples as the weights see them: service.data's Splits and
    SplitPlan (a sample per row) and SequenceSplits (a sample per word, padding left out)."""

    @property
    def class_names(self) -> list[str]: ...

    @property
    def train_class_counts(self) -> list[int]: ...

    @property
    def train_labels(self) -> Labels: ...

    @property
    def train_sample_weight(self) -> Floats | None:
        """The spec's sample weights, aligned with train_labels; None when it gives none."""


@dataclass(frozen=True)
class ClassWeights:
    """A spec's `class_weight` resolved to one weight per class of the job."""

    values: list[float]
    left_out: list[int]  # classes a class_weight object did not name: they got 1.0
    warnings: list[str]  # e.g. a key read as an index that is also another class's name


def _require_samples(counts: Sequence[int], field: str) -> Vector:
    n = np.asarray(counts, dtype=np.float64)
    empty = [c for c, n_c in enumerate(counts) if n_c == 0]
    if empty:
        raise DatasetError(
            f"{field}: class {empty[0]} has no training samples (training class counts: "
            f"{list(counts)}), so it cannot be weighted by its frequency"
        )
    return n


def balanced(counts: Sequence[int]) -> Vector:
    """n / (k * n_c): scikit-learn's compute_class_weight("balanced")."""
    n = _require_samples(counts, "class_weight 'balanced'")
    return float(n.sum()) / (len(n) * n)


def inverse_sqrt(counts: Sequence[int]) -> Vector:
    """Proportional to 1 / sqrt(n_c), scaled like 'balanced' so that sum_c n_c * w_c = n."""
    n = _require_samples(counts, "class_weight 'inverse_sqrt'")
    root = np.sqrt(n)
    return float(n.sum()) / (root * float(root.sum()))


def effective_number(counts: Sequence[int], beta: float, field: str) -> Vector:
    """(1 - beta) / (1 - beta^n_c), normalised to sum to k (Cui et al. 2019, "Class-Balanced
    Loss Based on Effective Number of Samples", eq. 5 and the reference code's scaling)."""
    n = _require_samples(counts, field)
    raw = (1.0 - beta) / (1.0 - np.power(beta, n))
    return raw * (len(n) / float(raw.sum()))


def ldam_margins(counts: Sequence[int], max_margin: float) -> Vector:
    """Delta_c = C / n_c^(1/4) with C such that the largest margin is `max_margin`
    (Cao et al. 2019, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
    Loss", eq. 13; reference code: m_list * (max_m / max(m_list)))."""
    n = _require_samples(counts, "loss.type 'ldam'")
    margins = np.power(n, -0.25)
    return margins * (max_margin / float(margins.max()))


def log_prior(counts: Sequence[int], field: str) -> Vector:
    """log(n_c / n), the offset of balanced softmax and logit adjustment."""
    n = _require_samples(counts, field)
    return np.log(n / float(n.sum()))


def focal_alpha(loss: LossSpec, num_classes: int) -> Vector | None:
    """The focal loss's per-class alpha, checked against the job's classes."""
    if loss.alpha is None:
        return None
    if len(loss.alpha) != num_classes:
        raise DatasetError(
            f"loss.alpha has {len(loss.alpha)} values; this job has {num_classes} classes"
        )
    alpha = np.asarray(loss.alpha, dtype=np.float64)
    if not_float32(alpha).any() or (alpha < 0).any():
        raise DatasetError(f"loss.alpha must be finite in float32 and >= 0; got {loss.alpha}")
    return alpha


def uses_focal(loss: LossSpec) -> bool:
    return loss.type == "focal" or (loss.type == "class_balanced" and loss.base == "focal")


@dataclass(frozen=True, eq=False)
class LossTerms:
    """The per-class numbers a loss needs, from the training class counts.

    `class_weight` and `drw_class_weight` are weights the loss applies itself: they
    multiply the sample weights and enter weighted_mean's denominator like class_weight
    does (as F.cross_entropy(weight=...) in the papers' code).
    """

    alpha: Vector | None  # focal's alpha (also class_balanced on focal)
    margins: Vector | None  # ldam
    logit_offset: Vector | None  # balanced_softmax, logit_adjusted: tau * log prior
    class_weight: Vector  # class_balanced's effective-number weights; 1 for the others
    drw_class_weight: Vector | None  # ldam with drw_epoch: the weights from that epoch on


def loss_terms(loss: LossSpec, counts: Sequence[int]) -> LossTerms:
    """Raises DatasetError where the loss does not fit the data (alpha's length, or a class
    without samples for a loss that needs its frequency)."""
    k = len(counts)
    offset = None
    if loss.type in ("balanced_softmax", "logit_adjusted"):
        # Balanced softmax (Ren et al. 2020) adds log(prior) to the logits; the logit-adjusted
        # loss (Menon et al. 2021, eq. 10) adds tau * log(prior), so tau = 1 is the same loss.
        tau = loss.tau if loss.type == "logit_adjusted" else 1.0
        offset = tau * log_prior(counts, f"loss.type {loss.type!r}")
    drw = loss.type == "ldam" and loss.drw_epoch is not None
    return LossTerms(
        alpha=focal_alpha(loss, k) if uses_focal(loss) else None,
        margins=ldam_margins(counts, loss.max_margin) if loss.type == "ldam" else None,
        logit_offset=offset,
        class_weight=(
            effective_number(counts, loss.beta, "loss.type 'class_balanced'")
            if loss.type == "class_balanced"
            else np.ones(k)
        ),
        drw_class_weight=effective_number(counts, DRW_BETA, "loss.drw_epoch") if drw else None,
    )


def _class_index(key: str, class_names: Sequence[str]) -> int:
    # A key of digits in 0..k-1 is a class index in the job, as in the spec's example;
    # anything else must be a class name.
    if key.isascii() and key.isdigit() and int(key) < len(class_names):
        return int(key)
    if key in class_names:
        return list(class_names).index(key)
    listed = ", ".join(f"{c} ({name!r})" for c, name in enumerate(class_names))
    raise DatasetError(
        f"class_weight: class {key!r} is not in this job (classes: {listed}); "
        f"use an index 0..{len(class_names) - 1} or a class name"
    )


def _from_object(weights: dict[str, float], class_names: Sequence[str]) -> ClassWeights:
    values = [1.0] * len(class_names)
    keys_of: dict[int, str] = {}
    warnings = []
    for key, weight in weights.items():
        c = _class_index(key, class_names)
        if c in keys_of:
            raise DatasetError(
                f"class_weight: keys {keys_of[c]!r} and {key!r} both name class {c} "
                f"({class_names[c]!r})"
            )
        if not (math.isfinite(weight) and 0 <= weight <= FLOAT32_MAX):
            raise DatasetError(
                f"class_weight: the weight of {key!r} is {weight}; expected a number >= 0 "
                "that is finite in float32"
            )
        if key != class_names[c] and key in class_names:
            warnings.append(
                f"class_weight: key {key!r} is read as class index {c} ({class_names[c]!r}), "
                f"not as the class named {key!r} (index {list(class_names).index(key)}); "
                "keys that are numbers 0..k-1 are indices"
            )
        keys_of[c] = key
        values[c] = weight
    if not any(values):
        raise DatasetError("class_weight: every class has weight 0, so nothing would be learned")
    left_out = [c for c in range(len(class_names)) if c not in keys_of]
    return ClassWeights(values, left_out, warnings)


def resolve_class_weight(
    class_weight: ClassWeight | None, counts: Sequence[int], class_names: Sequence[str]
) -> ClassWeights:
    """One weight per class of the job, as the spec's `class_weight` asks (DESIGN.md §4)."""
    if class_weight is None:
        return ClassWeights([1.0] * len(counts), [], [])
    if isinstance(class_weight, dict):
        return _from_object(class_weight, class_names)
    if isinstance(class_weight, EffectiveNumber):
        rule = effective_number(
            counts, class_weight.effective_number, "class_weight.effective_number"
        )
    elif class_weight == "balanced":
        rule = balanced(counts)
    else:
        rule = inverse_sqrt(counts)
    return ClassWeights([float(w) for w in rule], [], [])


@dataclass(frozen=True, eq=False)
class JobWeights:
    class_weight: ClassWeights
    loss: LossTerms
    per_sample: Floats  # w_i = class_weight[y_i] * sample_weight_i, aligned with y_train
    effective: list[float]  # per class as training starts; see effective_class_weight


def effective_class_weight(
    class_weight: Sequence[float],
    loss: LossTerms,
    y: Labels,
    sample_weight: Floats | None,
) -> list[float]:
    """How much one training sample of each class weighs in the loss as training starts:
    class_weight * the loss's own class weights (class_balanced's; LDAM's before DRW, i.e. 1)
    * focal's alpha * the mean sample weight of the class's training rows."""
    k = len(class_weight)
    effective = np.asarray(class_weight) * loss.class_weight
    if loss.alpha is not None:
        effective = effective * loss.alpha
    if sample_weight is not None:
        counts = np.bincount(y, minlength=k)
        totals = np.bincount(y, weights=sample_weight, minlength=k)
        # A class with no training rows has no mean sample weight; it weighs nothing anyway.
        effective = effective * np.divide(totals, counts, out=np.ones(k), where=counts > 0)
    return [float(w) for w in effective]


def job_weights(spec: JobSpec, splits: TrainingSet) -> JobWeights:
    """The spec's class, loss and sample weights on its training split (DESIGN.md §4: the
    weight of sample i is class_weight[y_i] * sample_weight[i]). For sequence labeling the
    samples are the training words (padding left out): `per_sample` is aligned with
    `splits.train.tokens`, and the counts are words per tag. Raises DatasetError."""
    y, sample_weight = splits.train_labels, splits.train_sample_weight
    counts = splits.train_class_counts
    class_weight = resolve_class_weight(spec.class_weight, counts, splits.class_names)
    terms = loss_terms(spec.loss, counts)
    per_sample = np.asarray(class_weight.values, dtype=np.float64)[y]
    if sample_weight is not None:
        per_sample = per_sample * sample_weight
    effective = effective_class_weight(class_weight.values, terms, y, sample_weight)
    # Each factor fits float32, their product need not: refused here, at submit, rather
    # than as an infinite loss in the worker.
    overflow = not_float32(per_sample)
    if overflow.any() or not_float32(np.asarray(effective)).any():
        where = f"row {int(np.argmax(overflow))}" if overflow.any() else "a class"
        raise DatasetError(
            f"class_weight x sample_weight (x the loss's own class weights) overflows float32 "
            f"at {where}; scale the weights down (only their ratios matter to weighted_mean)"
        )
    if (spec.train.class_weight_from_epoch or 1) > 1:
        # Deferred re-weighting: as training starts every class weighs 1 (plan notes when
        # class_weight switches on).
        effective = effective_class_weight([1.0] * len(counts), terms, y, sample_weight)
    return JobWeights(class_weight, terms, per_sample.astype(np.float32), effective)
