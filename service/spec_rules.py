"""The job spec's rules across fields (DESIGN.md section 4): what sequence labeling fills in
and refuses, which deferred and two-stage options can take effect, and when the validation
split is too small to select an epoch by. Pure functions of a validated JobSpec, called by
its validators (service.spec) and by the plan and the worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from counterweight.service.spec import JobSpec

# Fewer validation samples than this in any class, and the validation split cannot rank
# epochs (one sample moves that class's recall by 1/n, more than 10 points below 10): the
# job keeps its last epoch (workers.training.selection) and validate warns.
MIN_VALIDATION_PER_CLASS = 10

# Sequence labeling: what a spec may leave out and gets instead of the classification default.
SEQUENCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"arch": "bilstm_tagger", "width": 100, "depth": 1},
    # A constant rate, as Keras's Adam: the tagger's accuracy is measured against Keras's
    # (BENCHMARKS.md, "Sequence labeling").
    "train": {"select_by": "macro_f1", "schedule": "constant"},
}


def small_validation(val_counts: list[int], class_names: list[str]) -> str | None:
    """Why the validation split is too small to select an epoch by, or None."""
    small = [(c, n) for c, n in enumerate(val_counts) if n < MIN_VALIDATION_PER_CLASS]
    if not small:
        return None
    shown = ", ".join(f"{class_names[c]!r}: {n}" for c, n in small[:5])
    more = f" and {len(small) - 5} more" if len(small) > 5 else ""
    return (
        f"validation holds fewer than {MIN_VALIDATION_PER_CLASS} samples of "
        f"{len(small)} class(es) ({shown}{more}): too few to rank epochs, so the job keeps "
        "its last epoch and does not stop early; raise dataset.val_fraction (or keep more "
        "of the rare classes) to select by validation"
    )


def check_schedule(spec: JobSpec) -> None:
    """Refuse deferred re-balancing and two-stage options that cannot take effect as given
    (ValueError, a 422 naming the field). Their epoch bounds are TrainSpec's."""
    train = spec.train
    if spec.task == "sequence_labeling":
        for name in ("sampler_from_epoch", "class_weight_from_epoch", "stage2"):
            if getattr(train, name) is not None:
                raise ValueError(
                    f"train.{name} does not apply to sequence_labeling (classification only); "
                    "to defer re-weighting of rare tags use loss 'ldam' with loss.drw_epoch"
                )
    if train.sampler_from_epoch is not None and spec.sampler != "oversample":
        raise ValueError(
            f"train.sampler_from_epoch: deferred re-sampling defers sampler 'oversample'; "
            f"sampler is {spec.sampler!r}"
            + (
                " (an undersampled epoch is shorter than the epochs before the switch, which "
                "the learning-rate schedule cannot follow)"
                if spec.sampler == "undersample"
                else ""
            )
        )
    if train.class_weight_from_epoch is not None and spec.class_weight is None:
        raise ValueError(
            "train.class_weight_from_epoch: deferred re-weighting defers class_weight, but "
            'class_weight is null; set it (LDAM-DRW\'s is {"effective_number": 0.9999}) or '
            "leave train.class_weight_from_epoch out"
        )
    drw = spec.loss.drw_epoch
    if spec.loss.type == "ldam" and drw is not None and drw > train.epochs:
        raise ValueError(
            f"loss.drw_epoch: {drw} is after the last epoch (train.epochs {train.epochs}); "
            "the deferred re-weighting would never start"
        )


def check_sequence_spec(spec: JobSpec) -> None:
    """Fill in the sequence labeling defaults the client left out and refuse the options that
    do not apply to sequences (ValueError, a 422 naming the field)."""
    for part, defaults in SEQUENCE_DEFAULTS.items():
        section = getattr(spec, part)
        for name, value in defaults.items():
            if name not in section.model_fields_set:
                setattr(section, name, value)
    if spec.dataset.name != "uploaded":
        raise ValueError(
            f"dataset.name: sequence_labeling trains on uploaded sequences (POST /v1/datasets "
            f"with y_train of shape (N, T)); {spec.dataset.name!r} holds no sequences"
        )
    if spec.dataset.classes is not None:
        raise ValueError(
            "dataset.classes does not apply to sequence_labeling: every tag of a sentence is "
            "kept; weigh tags with class_weight instead"
        )
    if spec.model.arch != "bilstm_tagger":
        raise ValueError(
            f"model.arch: sequence_labeling needs bilstm_tagger; {spec.model.arch!r} "
            "classifies whole samples"
        )
    # Compared with the defaults, not by the fields set: a stored spec has every field set.
    default = type(spec.imbalance)()
    given = [
        name
        for name in type(spec.imbalance).model_fields
        if getattr(spec.imbalance, name) != getattr(default, name)
    ]
    if given:
        raise ValueError(
            f"imbalance.{given[0]}: no imbalance options apply to sequence_labeling (none "
            "do: subsampling drops whole sentences, each holding many tags); leave imbalance "
            "out and weigh rare tags with class_weight or sample_weight"
        )
    if spec.sampler != "none":
        raise ValueError(
            f"sampler: {spec.sampler!r} balances whole samples by class and does not apply to "
            "sequence_labeling; use 'none' and weigh rare tags with class_weight"
        )
    if spec.decision != "argmax":
        raise ValueError(
            f"decision: {spec.decision!r} is tuned for classification; sequence_labeling "
            "decides each word by argmax"
        )
