"""The job spec (DESIGN.md section 4): what a client asks to be trained.

Every model forbids unknown fields so that a typo is a 422 naming the field,
not a silently ignored option. Types are strict ("yes" is not a boolean, 2.0 not an
integer), numbers finite (JSON's NaN and Infinity extensions are refused) and bounded:
a value that would overflow float32, where training computes, or run for ever is a
422 at submit, not a failure an hour later. Strings hold no NUL and no lone surrogate:
neither can be a file name or a database value. Checks that need only the spec live here; checks
that need the data (class ids in range, weight shapes) live in
service.data.splits and service.rebalance.plan, and also run at submit time.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    NonNegativeInt,
    PositiveInt,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from counterweight.service.labels import LABELS_HELP, Labels
from counterweight.service.notify_spec import NotifySpec
from counterweight.service.spec_rules import check_schedule, check_sequence_spec
from counterweight.service.spec_types import AnyFloat, StrictModel, Text

DatasetName = Literal["digits", "mnist", "fashion_mnist", "cifar10", "image_folder", "uploaded"]
LossType = Literal[
    "cross_entropy", "focal", "class_balanced", "ldam", "balanced_softmax", "logit_adjusted"
]
Arch = Literal["mlp", "small_cnn", "resnet18", "resnet32", "bilstm_tagger"]
Task = Literal["classification", "sequence_labeling"]
Decision = Literal["argmax", "logit_adjusted", "threshold"]
SelectBy = Literal["balanced_accuracy", "macro_f1", "g_mean", "minority_recall", "val_loss", "last"]
Sampler = Literal["none", "oversample", "undersample"]
# Losses that re-balance by themselves: class weights on top weigh the rare classes twice.
REBALANCING_LOSSES = ("class_balanced", "balanced_softmax", "logit_adjusted")

TAG_WEIGHT_HELP = (
    'an object mapping tag to weight, e.g. {"0": 1.0, "3": 20.0} (keys: tag id, or tag '
    'name from tag_names), or "balanced" (counted over non-padding tokens), or "inverse_sqrt", '
    'or {"effective_number": 0.999}'
)
CLASS_WEIGHT_HELP = (
    'an object mapping class to weight, e.g. {"0": 1.0, "1": 50.0} (keys: class index in '
    'the job, or class name), or "balanced", or "inverse_sqrt", or {"effective_number": 0.999}'
)


# Epochs, milestones, patience: as many as anyone trains for.
MAX_EPOCHS = 10_000
# Random crops and flips pay off only once the model has had the epochs to fit them: on
# the step-imbalanced CIFAR-10 pair (BENCHMARKS.md), balanced class weights lose 5 points
# of balanced accuracy to them at 10 epochs, and gain 4 at 20 and 11 at 30. Below this
# many epochs `train.augment: null` is off (service.architectures.augment_enabled).
AUGMENT_MIN_EPOCHS = 20


class DatasetSpec(StrictModel):
    name: DatasetName = Field(
        description="digits (ships with scikit-learn), mnist, fashion_mnist, cifar10 (on disk "
        "under the data root), image_folder (`path`) or uploaded (`id`)."
    )
    path: Text | None = Field(
        None, description="image_folder: folder under the data root holding train/ and test/."
    )
    id: Text | None = Field(None, description="uploaded: the id from POST /v1/datasets.")
    classes: list[int] | None = Field(
        None,
        min_length=2,
        description="Classes to keep, relabelled 0..k-1 in this order; null keeps all.",
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="Stratified share of training data held out for validation."
    )

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("classes must be distinct")
        return value

    @model_validator(mode="after")
    def _source(self) -> DatasetSpec:
        if (self.name == "image_folder") != (self.path is not None):
            raise ValueError("dataset.path is required for image_folder and only for it")
        if (self.name == "uploaded") != (self.id is not None):
            raise ValueError("dataset.id is required for uploaded and only for it")
        return self


class ImbalanceSpec(StrictModel):
    """How to subsample the training split (validation is carved out afterwards)."""

    profile: Literal["none", "step", "exponential", "counts"] = "none"
    ratio: float | None = Field(
        None, ge=1, le=1e9, description="step, exponential: n_max / n_min (required for them)."
    )
    minority: list[int] | None = Field(
        None,
        min_length=1,
        description="step: the minority classes (indices in the job, 0..k-1); "
        "default the last half.",
    )
    counts: list[NonNegativeInt] | None = Field(
        None, description="counts: training samples to keep per class, in job class order."
    )
    seed: int = Field(0, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _options_fit_profile(self) -> ImbalanceSpec:
        if self.profile in ("step", "exponential") and self.ratio is None:
            raise ValueError(f"imbalance.ratio is required for profile {self.profile!r}")
        if self.profile not in ("step", "exponential") and self.ratio is not None:
            raise ValueError(f"imbalance.ratio does not apply to profile {self.profile!r}")
        if self.minority is not None and self.profile != "step":
            raise ValueError("imbalance.minority applies only to profile 'step'")
        if (self.profile == "counts") != (self.counts is not None):
            raise ValueError("imbalance.counts is required for profile 'counts' and only for it")
        return self


class LossSpec(StrictModel):
    type: LossType = "cross_entropy"
    gamma: float = Field(
        2.0, ge=0, le=100, description="focal (and class_balanced with base focal)."
    )
    alpha: list[AnyFloat] | None = Field(
        None, description="focal: per-class alpha, one per class in the job."
    )
    beta: float = Field(0.999, ge=0, lt=1, description="class_balanced: effective-number beta.")
    base: Literal["cross_entropy", "focal"] = Field(
        "cross_entropy", description="class_balanced: the loss it re-weights."
    )
    max_margin: float = Field(0.5, gt=0, le=10, description="ldam: margin of the rarest class.")
    scale: float = Field(30.0, gt=0, le=1000, description="ldam: logit scale s.")
    drw_epoch: PositiveInt | None = Field(
        None,
        le=MAX_EPOCHS,
        description="ldam: from this epoch (1-based) on, re-weight by effective number (beta "
        "0.9999, LDAM-DRW); at most train.epochs. The reference code's switch after 160 of "
        "200 epochs is 161.",
    )
    tau: float = Field(1.0, ge=0, le=100, description="logit_adjusted: strength of the prior term.")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    reduction: Literal["weighted_mean", "mean"] = Field(
        "weighted_mean",
        description="weighted_mean: sum(w*l)/sum(w) (PyTorch); mean: sum(w*l)/N (Keras).",
    )


class EffectiveNumber(StrictModel):
    effective_number: float = Field(gt=0, lt=1, description="beta of (1 - beta^n) / (1 - beta).")


def _class_weight_kind(value: Any) -> str:
    # {"effective_number": beta} is also a valid {class: weight} object: without this
    # discriminator pydantic would read the rule as weights for a class named "effective_number".
    if isinstance(value, EffectiveNumber) or (
        isinstance(value, dict) and "effective_number" in value
    ):
        return "effective_number"
    return "rule" if isinstance(value, str) else "object"


ClassWeight = Annotated[
    Annotated[EffectiveNumber, Tag("effective_number")]
    | Annotated[Literal["balanced", "inverse_sqrt"], Tag("rule")]
    # Plain floats: checked against the job's classes (service.rebalance.weights), which
    # names the class whose weight is at fault.
    | Annotated[dict[Text, AnyFloat], Tag("object")],
    Discriminator(_class_weight_kind),
]


class ModelSpec(StrictModel):
    arch: Arch = Field(
        "mlp", description="Default mlp; bilstm_tagger (the only one) for sequence_labeling."
    )
    width: PositiveInt = Field(
        256,
        le=4096,
        description="mlp: hidden units per layer; bilstm_tagger: LSTM units per direction "
        "(default 100 there).",
    )
    depth: PositiveInt = Field(
        2, le=8, description="mlp: hidden layers; bilstm_tagger: stacked BiLSTM layers (default 1)."
    )
    embedding_dim: PositiveInt = Field(64, le=1024, description="bilstm_tagger: word vector size.")
    char_embedding_dim: PositiveInt = Field(
        16,
        le=256,
        description="bilstm_tagger, with characters: character vector size; each word's "
        "character encoder (a CNN, max-pooled) outputs twice this.",
    )


class Stage2Spec(StrictModel):
    """Classifier re-training, cRT (Kang et al. 2020, "Decoupling Representation and
    Classifier for Long-Tailed Recognition"): after stage one, the classifier head of the
    model stage one selected is re-initialised, everything else frozen (batch norm
    statistics included), and the head alone trained for `epochs` more epochs."""

    epochs: PositiveInt = Field(le=MAX_EPOCHS, description="Epochs of stage two.")
    sampler: Sampler = Field(
        "oversample",
        description="Stage two's sampler; oversample is class-balanced sampling, as in cRT.",
    )
    lr: float | None = Field(None, gt=0, le=10, description="Stage two's lr; null: train.lr.")
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="Stage two's lr schedule over its own epochs (cRT: cosine)."
    )


class TrainSpec(StrictModel):
    epochs: PositiveInt = Field(10, le=MAX_EPOCHS)
    batch_size: PositiveInt = Field(128, le=65_536)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0, le=1)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only.")
    schedule: Literal["constant", "cosine", "step"] = Field(
        "cosine",
        description="Learning rate after warm-up: cosine (to 0 at the last step; steadier "
        "rare-class decisions than constant, BENCHMARKS.md), constant, or step.",
    )
    warmup_epochs: NonNegativeInt = Field(
        0,
        le=MAX_EPOCHS,
        description="Linear warm-up of the learning rate; fewer than `epochs`, so that the "
        "learning rate is reached.",
    )
    step_milestones: list[Annotated[int, Field(ge=1, le=MAX_EPOCHS)]] | None = Field(
        None,
        max_length=100,
        description="step schedule: epochs after which lr is multiplied by step_gamma.",
    )
    step_gamma: float = Field(0.1, gt=0, le=1)
    augment: bool | None = Field(
        None,
        description="Random crop (4 px padding) and horizontal flip on the device; "
        "null: on for colour images (not digits, mnist, fashion_mnist) when `epochs` is "
        f"{AUGMENT_MIN_EPOCHS} or more; shorter runs gain more from fitting the images as "
        "they are.",
    )
    amp: bool = Field(True, description="Mixed precision (bfloat16) when training on CUDA.")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    select_by: SelectBy = "balanced_accuracy"
    early_stopping_patience: PositiveInt | None = Field(
        None,
        le=MAX_EPOCHS,
        description="Stop after this many epochs without improving `select_by`.",
    )
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda or cuda:N."
    )
    sampler_from_epoch: PositiveInt | None = Field(
        None,
        le=MAX_EPOCHS,
        description="Deferred re-sampling (DRS): `sampler` (oversample) applies from this "
        "epoch (1-based) on; the epochs before it visit every sample once. At most `epochs`.",
    )
    class_weight_from_epoch: PositiveInt | None = Field(
        None,
        le=MAX_EPOCHS,
        description="Deferred re-weighting (DRW): `class_weight` applies from this epoch "
        "(1-based) on; before it every class weighs 1 (sample weights still apply). At most "
        "`epochs`.",
    )
    stage2: Stage2Spec | None = Field(
        None,
        description="Classifier re-training after these epochs (two-stage training, "
        "DESIGN.md section 4); null: one stage.",
    )

    @model_validator(mode="after")
    def _warmup_ends(self) -> TrainSpec:
        if self.warmup_epochs and self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"train.warmup_epochs: {self.warmup_epochs} is not fewer than train.epochs "
                f"({self.epochs}); the learning rate would never reach train.lr"
            )
        for name in ("sampler_from_epoch", "class_weight_from_epoch"):
            start = getattr(self, name)
            if start is not None and start > self.epochs:
                raise ValueError(
                    f"train.{name}: {start} is after the last epoch (train.epochs {self.epochs}); "
                    "the deferred re-balancing would never start"
                )
        return self


class JobSpec(StrictModel):
    task: Task = Field(
        "classification",
        description="classification, or sequence_labeling (one tag per timestep of an "
        "uploaded sequence dataset; DESIGN.md section 4).",
    )
    dataset: DatasetSpec
    imbalance: ImbalanceSpec = Field(default_factory=ImbalanceSpec)
    loss: LossSpec = Field(default_factory=LossSpec)
    class_weight: ClassWeight | None = Field(None, description=f"null, or {CLASS_WEIGHT_HELP}.")
    # Plain floats: each is checked with its row and position against the data
    # (service.data.splits.checked_sample_weight), which says which one is at fault.
    sample_weight: list[AnyFloat] | list[list[AnyFloat]] | Literal["from_dataset"] | None = Field(
        None,
        description="One weight per row of the dataset's training split as stored, before "
        "any subsetting, (N,); for sequence_labeling also one per timestep, (N, T); or "
        "from_dataset (an upload's sample_weight array).",
    )
    sampler: Sampler = "none"
    decision: Decision = Field(
        "argmax",
        description="How logits become a class, tuned on validation after training "
        "(DESIGN.md section 4): argmax; logit_adjusted (subtract tau x log prior, tau chosen "
        "for the select_by metric); threshold (two classes: the cut on p(class 1)).",
    )
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first.")
    max_attempts: int = Field(3, ge=1, le=20)
    labels: Labels = Field(default_factory=dict, description=LABELS_HELP)
    notify: NotifySpec | None = Field(
        None,
        description="POST this job's events to a URL, signed with the tenant's webhook "
        "secret (POST /v1/webhooks/secret); null: none.",
    )

    @field_validator("class_weight", mode="before")
    @classmethod
    def _class_weight_is_not_a_list(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, list):
            if info.data.get("task") == "sequence_labeling":
                raise ValueError(f"a list is ambiguous here; send {TAG_WEIGHT_HELP}")
            raise ValueError(f"a list is ambiguous here; send {CLASS_WEIGHT_HELP}")
        return value

    @model_validator(mode="after")
    def _fits_task(self) -> JobSpec:
        if self.task == "sequence_labeling":
            check_sequence_spec(self)
            return self
        if self.model.arch == "bilstm_tagger":
            raise ValueError("model.arch: bilstm_tagger is for task sequence_labeling")
        if isinstance(self.sample_weight, list) and any(
            isinstance(w, list) for w in self.sample_weight
        ):
            raise ValueError(
                "sample_weight: per-timestep weights (N, T) are for task sequence_labeling; "
                "classification takes one weight per training row, (N,)"
            )
        return self

    @model_validator(mode="after")
    def _schedule_fits(self) -> JobSpec:
        check_schedule(self)
        return self

    def fingerprint(self) -> str:
        """Hash of the spec with defaults filled in: equal specs, equal hash."""
        spec = self.model_dump(mode="json")
        if not spec["labels"]:
            del spec["labels"]  # the hash of a job sent before labels existed stays the same
        canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
