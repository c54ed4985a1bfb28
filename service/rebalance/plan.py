"""What a spec resolves to on its split data, before anything trains: class counts,
effective weights, warnings.

Shared by `POST /v1/jobs` (refuse what cannot run, at submit time) and
`POST /v1/jobs/validate` (show the user what they asked for); the API splits the
data (service.api.admission) and hands the split here. Warnings are for specs that
are legal but likely wrong (DESIGN.md §4); notes say how a legal spec will behave
where that is easy to miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from counterweight.service.rebalance.decision import check_decision
from counterweight.service.rebalance.weights import (
    DRW_BETA,
    TrainingSet,
    effective_class_weight,
    job_weights,
)
from counterweight.service.spec import REBALANCING_LOSSES, JobSpec, LossSpec
from counterweight.service.spec_rules import small_validation

FEW_SAMPLES = 10
# The LossSpec options each loss type reads; `reduction` applies to all of them.
LOSS_OPTIONS: dict[str, set[str]] = {
    "cross_entropy": {"label_smoothing"},
    "focal": {"gamma", "alpha"},
    "class_balanced": {"beta", "base", "gamma", "alpha", "label_smoothing"},
    "ldam": {"max_margin", "scale", "drw_epoch", "label_smoothing"},
    "balanced_softmax": {"label_smoothing"},
    "logit_adjusted": {"tau", "label_smoothing"},
}
FOCAL_OPTIONS = {"gamma", "alpha"}


class PlannedSplits(TrainingSet, Protocol):
    """service.data's SplitPlan or SequenceSplits: a training set, and its counts."""

    @property
    def counts(self) -> dict[str, list[int]]:
        """Samples (words) per class in each split: train, val, test."""


@dataclass(frozen=True)
class Plan:
    class_names: list[str]
    counts: dict[str, list[int]]
    class_weight: list[float]  # effective, per class: see weights.effective_class_weight
    warnings: list[str]
    notes: list[str]


def _name(c: int, class_names: list[str]) -> str:
    return f"class {c} ({class_names[c]!r})"


def _rebalancing_loss(loss: LossSpec) -> str | None:
    """The loss's name if it re-balances the classes by itself, else None."""
    if loss.type in REBALANCING_LOSSES or (loss.type == "ldam" and loss.drw_epoch is not None):
        return f"loss {loss.type!r}" + (" with drw_epoch" if loss.type == "ldam" else "")
    return None


def _reweighted_twice(spec: JobSpec) -> list[str]:
    rebalancing_loss = _rebalancing_loss(spec.loss)
    ways = [
        *([f"sampler {spec.sampler!r}"] if spec.sampler != "none" else []),
        *(["class_weight"] if spec.class_weight is not None else []),
        *([rebalancing_loss] if rebalancing_loss else []),
    ]
    if len(ways) < 2:
        return []
    return [
        f"re-weighting twice: {' and '.join(ways)} each re-balance the classes; together they "
        "over-weight the rare classes. Use one of them"
    ]


def _reweighted_twice_in_stage2(spec: JobSpec) -> list[str]:
    stage2 = spec.train.stage2
    rebalancing_loss = _rebalancing_loss(spec.loss)
    ways = [
        *(["class_weight"] if spec.class_weight is not None else []),
        *([rebalancing_loss] if rebalancing_loss else []),
    ]
    if stage2 is None or stage2.sampler == "none" or not ways:
        return []
    return [
        f"re-weighting twice in stage two: train.stage2.sampler {stage2.sampler!r} and "
        f"{' and '.join(ways)} each re-balance the classes; set train.stage2.sampler 'none' "
        "to re-train the head with the loss's re-balancing alone"
    ]


def _schedule_notes(spec: JobSpec, before: list[float], after: list[float]) -> list[str]:
    """When deferred re-balancing switches on, and what stage two does."""
    train, notes = spec.train, []
    if (train.sampler_from_epoch or 1) > 1:
        notes.append(
            f"sampler {spec.sampler!r} applies from epoch {train.sampler_from_epoch} on "
            "(deferred re-sampling); the epochs before it visit every training sample once"
        )
    if (train.class_weight_from_epoch or 1) > 1:
        start, end = ([round(w, 4) for w in ws] for ws in (before, after))
        notes.append(
            f"class_weight applies from epoch {train.class_weight_from_epoch} on (deferred "
            f"re-weighting): the effective class weights switch from {start} to {end}; "
            "class_weight shows the weights before the switch"
        )
    stage2 = train.stage2
    if stage2 is not None:
        lr = train.lr if stage2.lr is None else stage2.lr
        notes.append(
            f"two stages: after epoch {train.epochs} (or an early stop) the model stage one "
            "selected keeps its layers, frozen with their batch norm statistics, and its "
            f"classifier head is re-initialised and trained for {stage2.epochs} epochs "
            f"(numbered {train.epochs + 1}..{train.epochs + stage2.epochs}) with sampler "
            f"{stage2.sampler!r} at lr {lr:g} ({stage2.schedule}); the model served is the "
            f"one stage two selects among its own epochs by {train.select_by}"
        )
    return notes


def _grows_with_frequency(train: list[int], weight: list[float], names: list[str]) -> list[str]:
    """The majority class has the largest effective weight: frequencies used as weights."""
    majority = int(np.argmax(train))
    if len(set(train)) == 1 or len(set(weight)) == 1 or weight[majority] != max(weight):
        return []
    return [
        f"class weights grow with class frequency: {_name(majority, names)} has the most "
        f"training samples ({train[majority]}) and the largest effective weight "
        f"({weight[majority]:.4g}); weights should be inverse to frequency: use "
        'class_weight "balanced" (n / (k * n_c)) rather than the class frequencies'
    ]


def _ignored_loss_options(loss: LossSpec) -> list[str]:
    used = LOSS_OPTIONS[loss.type] | {"reduction"}
    if loss.type == "class_balanced":
        used -= {"label_smoothing"} if loss.base == "focal" else FOCAL_OPTIONS
    ignored = sorted(loss.model_fields_set - used - {"type"})
    return [
        f"loss.{option} does not apply to loss {loss.type!r}; it is ignored" for option in ignored
    ]


def _smoothing_above_prior(loss: LossSpec, train: list[int], names: list[str]) -> list[str]:
    """Label smoothing gives every class at least label_smoothing / k of each target; a loss
    that adds the log prior to the logits then teaches the model, whose raw logits decide,
    to give a class rarer than that more than its share: it predicts the rare class
    everywhere (BENCHMARKS.md: argmax balanced accuracy 0.500 at smoothing 0.1)."""
    if loss.type not in ("logit_adjusted", "balanced_softmax") or loss.label_smoothing == 0:
        return []
    floor = loss.label_smoothing / len(train)
    rarest = int(np.argmin(train))
    share = train[rarest] / max(sum(train), 1)
    if floor <= share:
        return []
    return [
        f"loss.label_smoothing: {loss.label_smoothing:g} gives every class at least "
        f"{floor:.3g} of each target, more than {_name(rarest, names)}'s share of the "
        f"training samples ({share:.3g}); with loss {loss.type!r} the model then predicts "
        f"{_name(rarest, names)} for most inputs. Lower label_smoothing below "
        f"{share * len(train):.3g} or leave it out"
    ]


def plan(spec: JobSpec, splits: PlannedSplits) -> Plan:
    """The weights the worker will train with on `splits`, and what is likely wrong with
    them; raises DatasetError for what cannot run. For sequence labeling the classes are
    the tags and the counts are words (never padding)."""
    weights = job_weights(spec, splits)
    check_decision(spec.decision, len(splits.class_names))
    samples = "words" if spec.task == "sequence_labeling" else "samples"
    names = splits.class_names
    counts = splits.counts
    train = counts["train"]
    warnings = [
        f"{_name(c, names)} has only {n} training {samples} "
        f"(fewer than {FEW_SAMPLES}); its metrics will be noisy"
        for c, n in enumerate(train)
        if n < FEW_SAMPLES
    ]
    warnings += [
        f"class_weight does not name {_name(c, names)}; it gets weight 1.0"
        for c in weights.class_weight.left_out
    ]
    warnings += weights.class_weight.warnings
    # The weights once every deferred re-weighting has switched on (the check is about them).
    after = effective_class_weight(
        weights.class_weight.values, weights.loss, splits.train_labels, splits.train_sample_weight
    )
    warnings += _grows_with_frequency(train, after, names)
    warnings += _reweighted_twice(spec)
    warnings += _reweighted_twice_in_stage2(spec)
    warnings += _ignored_loss_options(spec.loss)
    warnings += _smoothing_above_prior(spec.loss, train, names)
    if spec.train.select_by != "last":
        small = small_validation(counts["val"], names)
        warnings += [f"train.select_by: {small}"] if small else []
    notes = []
    if weights.loss.drw_class_weight is not None:
        drw = [round(float(w), 4) for w in weights.loss.drw_class_weight]
        notes.append(
            f"loss 'ldam' re-weights from epoch {spec.loss.drw_epoch} on (deferred "
            f"re-weighting): its class weights switch from 1 to {drw} (effective number, "
            f"beta {DRW_BETA}); class_weight shows the weights before the switch"
        )
    notes += _schedule_notes(spec, weights.effective, after)
    return Plan(names, counts, weights.effective, warnings, notes)
