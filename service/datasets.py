"""Datasets: load a spec's data as train / validation / test splits.

numpy and scikit-learn only (no torch): the API imports this to validate specs
and count classes, the worker to train.

Every split is deterministic. Digits has no official test split, so it gets a
fixed one: a stratified 25% of the 1797 images drawn with `random_state=0`,
the same in every process and every release. The validation split is carved
out of the training part, stratified, with `imbalance.seed`. The test split is
never subsampled: only `dataset.classes` filters it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import train_test_split

from service.spec import JobSpec

Floats = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


class DatasetError(ValueError):
    """The data the client asked for is wrong or missing; retrying will not help."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays has no single truth value
class Splits:
    """Inputs are float32 in [0, 1] of shape (n, *input_shape); labels int64 in 0..k-1."""

    x_train: Floats
    y_train: Labels
    x_val: Floats
    y_val: Labels
    x_test: Floats
    y_test: Labels
    class_names: list[str]
    input_shape: tuple[int, ...]
    # The spec's sample_weight, aligned with y_train (rows dropped by subsetting took
    # their weights with them); None when the spec gives none.
    sample_weight: Floats | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train_class_counts(self) -> list[int]:
        return [int(c) for c in np.bincount(self.y_train, minlength=self.num_classes)]


@dataclass(frozen=True, eq=False)
class _Base:
    """A dataset as shipped: train and test, all classes, original labels."""

    x_train: Floats
    y_train: Labels
    x_test: Floats
    y_test: Labels
    class_names: list[str]


@lru_cache(maxsize=1)
def _digits() -> _Base:
    # Imported here: scikit-learn's dataset module is slow to import and only digits needs it.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # (n, 1, 8, 8): channel-first images like every other image dataset, so a CNN can
    # take the same inputs as the MLP (which flattens).
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    base = _Base(x_train, y_train, x_test, y_test, [str(c) for c in range(10)])
    # Shared by every job in the process: make accidental in-place edits fail loudly.
    for array in (base.x_train, base.y_train, base.x_test, base.y_test):
        array.flags.writeable = False
    return base


def _keep_classes(
    x: Floats, y: Labels, classes: list[int], num_classes: int
) -> tuple[Floats, Labels]:
    """Rows of `classes` only, relabelled to their position in `classes`. Always copies."""
    relabel = np.full(num_classes, -1, dtype=np.int64)
    relabel[classes] = np.arange(len(classes))
    new_y = relabel[y]
    keep = new_y >= 0
    return x[keep], new_y[keep]


def load_splits(spec: JobSpec, data_root: Path) -> Splits:
    """The spec's train / val / test splits. `data_root` holds on-disk datasets (digits
    ships with scikit-learn and ignores it). Raises DatasetError for a bad request."""
    base = _digits()
    num_classes = len(base.class_names)
    classes = spec.dataset.classes
    if classes is None:
        classes = list(range(num_classes))
    unknown = [c for c in classes if not 0 <= c < num_classes]
    if unknown:
        raise DatasetError(
            f"dataset.classes: {unknown} not in {spec.dataset.name} "
            f"(classes are 0..{num_classes - 1})"
        )

    x_train, y_train = _keep_classes(base.x_train, base.y_train, classes, num_classes)
    x_test, y_test = _keep_classes(base.x_test, base.y_test, classes, num_classes)
    x_train, x_val, y_train, y_val = train_test_split(
        x_train,
        y_train,
        test_size=spec.dataset.val_fraction,
        stratify=y_train,
        random_state=spec.imbalance.seed,
    )
    return Splits(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        class_names=[base.class_names[c] for c in classes],
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
    )
