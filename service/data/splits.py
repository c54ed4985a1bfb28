"""Datasets: a spec's data as train / validation / test splits (DESIGN.md section 4).

numpy only (no torch): the API imports this to check a spec against its data at
submit time, the worker to train. Where each dataset comes from and how it is
cached: service.data.sources.

From the dataset as stored (its train and test splits, in the loader's row order),
in this order, all deterministic given `imbalance.seed`:

1. `dataset.classes` keeps those classes, relabelled 0..k-1 in the given order,
   in both splits.
2. `imbalance` subsamples the training split (service.data.imbalance).
3. The validation split, stratified, is carved out of what is left: per class
   `val_fraction` of its samples (largest remainders round up so that the total is
   ceil(val_fraction * n), as scikit-learn's train_test_split), and at least one
   for validation and one for training. So every class needs 2 samples here.
4. The test split is never subsampled: only `dataset.classes` filters it.

`sample_weight` (inline, or an upload's with "from_dataset") has one weight per
row of the training split as stored; rows dropped by the steps above take their
weights with them, so `Splits.sample_weight` is aligned with `y_train`.

`plan_splits` is the cheap path: row numbers into the cached dataset, labels and
weights, with no image copied (the API's submit-time check). `load_splits` is
`plan_splits` and then `materialise`, which copies the rows out (the worker).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from counterweight.service.data import imbalance
from counterweight.service.data.arrays import (
    BaseDataset,
    Floats,
    Inputs,
    Labels,
    Rows,
    not_float32,
)
from counterweight.service.data.sources import load_base
from counterweight.service.errors import DatasetError
from counterweight.service.settings import get_settings
from counterweight.service.spec import JobSpec

VALIDATION_STREAM = 2  # see service.data.imbalance.IMBALANCE_STREAM


class _TrainingRows:
    """What Splits and SplitPlan share: the training labels and weights, as the
    re-balancing maths reads them (service.rebalance.weights.TrainingSet)."""

    y_train: Labels
    class_names: list[str]
    sample_weight: Floats | None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train_class_counts(self) -> list[int]:
        return _count(self.y_train, self.num_classes)

    @property
    def train_labels(self) -> Labels:
        return self.y_train

    @property
    def train_sample_weight(self) -> Floats | None:
        return self.sample_weight


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays has no single truth value
class Splits(_TrainingRows):
    """Inputs of shape (n, *input_shape), float32 in [0, 1] or uint8 0..255 meaning
    value / 255 (image datasets; see service.data.arrays); labels int64 in 0..k-1."""

    x_train: Inputs
    y_train: Labels
    x_val: Inputs
    y_val: Labels
    x_test: Inputs
    y_test: Labels
    class_names: list[str]
    input_shape: tuple[int, ...]
    # The spec's sample_weight, aligned with y_train (rows dropped by subsetting took
    # their weights with them); None when the spec gives none.
    sample_weight: Floats | None = None


@dataclass(frozen=True, eq=False)
class SplitPlan(_TrainingRows):
    """Which rows of the cached dataset go where, without copying any: the labels, class
    names and weights of `Splits`, and row numbers in place of the inputs."""

    base: BaseDataset
    train_rows: Rows  # rows of base.x_train
    val_rows: Rows  # rows of base.x_train
    test_rows: Rows  # rows of base.x_test
    y_train: Labels
    y_val: Labels
    y_test: Labels
    class_names: list[str]
    sample_weight: Floats | None  # aligned with y_train, as in Splits

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.base.input_shape

    @property
    def counts(self) -> dict[str, list[int]]:
        """Samples per class (job order) in each split."""
        k = self.num_classes
        return {
            "train": _count(self.y_train, k),
            "val": _count(self.y_val, k),
            "test": _count(self.y_test, k),
        }


def plan_splits(
    spec: JobSpec, data_root: Path, home: Path | None = None, *, inputs: bool = True
) -> SplitPlan:
    """The spec's splits as row numbers into the cached dataset; raises DatasetError for a
    bad request. `data_root` holds on-disk datasets; `home` is COUNTERWEIGHT_HOME, where
    uploads live (None: the environment's, as every process is configured). `inputs=False`
    (the API's checks): the plan's dataset carries no inputs and cannot be materialised."""
    dataset = spec.dataset
    home = get_settings().home if home is None else home
    base = load_base(dataset, data_root, home, inputs=inputs)
    label = dataset.id or dataset.path or dataset.name
    classes = dataset.classes if dataset.classes is not None else list(range(base.num_classes))
    unknown = [c for c in classes if not 0 <= c < base.num_classes]
    if unknown:
        raise DatasetError(
            f"dataset.classes: {unknown} not in {label} (classes are 0..{base.num_classes - 1})"
        )
    class_names = [base.class_names[c] for c in classes]
    stored_weights = _stored_sample_weight(spec, base, label)

    # 1. classes, on both splits.
    rows, y = _keep_classes(base.y_train, classes, base.num_classes)
    test_rows, y_test = _keep_classes(base.y_test, classes, base.num_classes)
    # 2. imbalance, on the training split.
    available = _count(y, len(classes))
    targets = imbalance.target_counts(spec.imbalance, available, class_names)
    _check_enough_to_validate(targets, available, class_names, spec.imbalance.profile, label)
    kept = imbalance.keep_rows(y, targets, spec.imbalance.seed)
    rows, y = rows[kept], y[kept]
    # 3. validation, carved out of what is left.
    train, val = _split_validation(y, dataset.val_fraction, spec.imbalance.seed)

    sample_weight = None
    if stored_weights is not None:
        sample_weight = stored_weights[rows[train]]
        if not np.any(sample_weight > 0):
            raise DatasetError(
                f"sample_weight: all {len(sample_weight)} training samples left after "
                "dataset.classes, imbalance and the validation split have weight 0; at least "
                "one must be positive"
            )
    return SplitPlan(
        base=base,
        train_rows=rows[train],
        val_rows=rows[val],
        test_rows=test_rows,
        y_train=y[train],
        y_val=y[val],
        y_test=y_test,
        class_names=class_names,
        sample_weight=sample_weight,
    )


def materialise(plan: SplitPlan) -> Splits:
    """Copy the planned rows out of the cached dataset: arrays the caller may own."""
    base = plan.base
    assert base.has_inputs, "a plan made with inputs=False holds no inputs to copy"
    return Splits(
        x_train=base.x_train[plan.train_rows],
        y_train=plan.y_train,
        x_val=base.x_train[plan.val_rows],
        y_val=plan.y_val,
        x_test=base.x_test[plan.test_rows],
        y_test=plan.y_test,
        class_names=plan.class_names,
        input_shape=plan.input_shape,
        sample_weight=plan.sample_weight,
    )


def load_splits(spec: JobSpec, data_root: Path, home: Path | None = None) -> Splits:
    """The spec's train / val / test splits (see plan_splits for the arguments)."""
    return materialise(plan_splits(spec, data_root, home))


def _count(y: Labels, k: int) -> list[int]:
    return [int(c) for c in np.bincount(y, minlength=k)]


def _keep_classes(y: Labels, classes: list[int], num_classes: int) -> tuple[Rows, Labels]:
    """Rows of `classes` only, in stored order, and their labels relabelled to their
    position in `classes`."""
    relabel = np.full(num_classes, -1, dtype=np.int64)
    relabel[classes] = np.arange(len(classes))
    new_y = relabel[y]
    rows = np.flatnonzero(new_y >= 0)
    return rows, new_y[rows]


def _stored_sample_weight(spec: JobSpec, base: BaseDataset, label: str) -> Floats | None:
    """The spec's sample weights, one per row of the stored training split, checked."""
    if spec.sample_weight is None:
        return None
    given = given_sample_weight(spec.sample_weight, base.sample_weight, label)
    n = len(base.y_train)
    if given.shape != (n,):
        raise DatasetError(
            f"sample_weight has shape {given.shape}; the training set has {n} samples, "
            f"so it must have shape ({n},)"
        )
    return checked_sample_weight(given)


def given_sample_weight(
    sample_weight: list[float] | list[list[float]] | str,
    stored: Floats | None,
    label: str,
) -> npt.NDArray[np.float64]:
    """A spec's sample_weight as given: inline, or with "from_dataset" the upload's own
    (`stored`). Its shape is for the caller to check."""
    if sample_weight == "from_dataset":
        if stored is None:
            raise DatasetError(
                "sample_weight: from_dataset needs an uploaded dataset with a sample_weight "
                f"array; dataset {label} has none"
            )
        return stored.astype(np.float64)
    lengths = {len(row) for row in sample_weight if isinstance(row, list)}
    if len(lengths) > 1:
        raise DatasetError(
            f"sample_weight: its rows have different lengths ({', '.join(map(str, lengths))}); "
            "per-step weights must have shape (N, T), one row of T weights per sentence"
        )
    return np.asarray(sample_weight, dtype=np.float64)


def checked_sample_weight(given: npt.NDArray[np.float64]) -> Floats:
    """`given` as float32, refusing weights that are negative, NaN or too large for it."""
    bad = np.argwhere(not_float32(given) | (given < 0))
    if bad.size:
        first = tuple(int(i) for i in bad[0])
        raise DatasetError(
            f"sample_weight[{', '.join(map(str, first))}] is {given[first]}; weights must be "
            f"finite (in float32) and >= 0 ({len(bad)} are not)"
        )
    return given.astype(np.float32)


def _check_enough_to_validate(
    kept: Sequence[int], available: Sequence[int], names: Sequence[str], profile: str, label: str
) -> None:
    """Every class needs one training and one validation sample."""
    for c, (n, has) in enumerate(zip(kept, available, strict=True)):
        if n >= 2:
            continue
        if n == has:
            raise DatasetError(
                f"dataset.classes: class {c} ({names[c]!r}) has {has} training samples in "
                f"{label}; every class needs at least 2, one to train on and one to validate"
            )
        raise DatasetError(
            f"imbalance: class {c} ({names[c]!r}) would keep {n} of its {has} training "
            f"samples under profile {profile!r}; every class needs at least 2, one to train "
            "on and one to validate: lower imbalance.ratio or raise imbalance.counts"
        )


def validation_counts(counts: Sequence[int], fraction: float) -> list[int]:
    """Validation samples per class: `fraction` of each class, the largest remainders
    rounded up so that the total is ceil(fraction * n); then at least 1 for validation
    and 1 for training in every class that has 2 or more."""
    have = np.asarray(counts, dtype=np.int64)
    quota = fraction * have
    val = np.floor(quota).astype(np.int64)
    # round(..., 9): 0.1 * 5050 is 505.00000000000006 in floating point, and must give 505.
    total = math.ceil(round(fraction * int(have.sum()), 9))
    largest_remainders = np.argsort(-(quota - val), kind="stable")
    val[largest_remainders[: max(total - int(val.sum()), 0)]] += 1
    val = np.where(have >= 2, np.clip(val, 1, have - 1), 0)
    return [int(v) for v in val]


def _split_validation(y: Labels, fraction: float, seed: int) -> tuple[Rows, Rows]:
    """Positions in `y` of the training and validation samples, each in original order."""
    rng = np.random.default_rng((seed, VALIDATION_STREAM))
    val = []
    for c, count in enumerate(validation_counts(np.bincount(y).tolist(), fraction)):
        val.append(rng.choice(np.flatnonzero(y == c), size=count, replace=False))
    is_val = np.zeros(len(y), dtype=bool)
    is_val[np.concatenate(val)] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
