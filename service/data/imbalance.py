"""Imbalance profiles (DESIGN.md section 4): how many training samples each class keeps,
and which ones.

Applied to the training split only, after `dataset.classes` has filtered and
relabelled it and before the validation split is carved out of what is left (so
a step profile of ratio 100 on 5000 + 5000 samples keeps 5000 + 50, and a 10%
validation split then leaves 4500 + 45 to train on). `n_max` is the largest
class count of the class-filtered training split; `k` the number of classes in
the job.

- none: every class keeps all its samples.
- step: the `minority` classes (indices in the job, default the last floor(k/2))
  keep int(n_max / ratio) samples each; the others keep all theirs (at most n_max,
  by definition of n_max).
- exponential: class i keeps int(n_max * ratio^(-i/(k-1))), the long-tailed profile
  of Cao et al. 2019 (LDAM) and Cui et al. 2019, where class 0 is the head.
- counts: the given number per class, in job class order.

step and exponential never ask a class for more than it has: a class already
smaller than its target keeps all it has (real data sets are rarely exactly
balanced: MNIST's classes range from 5421 to 6742). counts are explicit, so asking
for more than a class has is an error.

Which samples survive is a seeded random subset within each class, the same for
the same `imbalance.seed` in every process.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from counterweight.service.data.arrays import Labels, Rows
from counterweight.service.errors import DatasetError
from counterweight.service.spec import ImbalanceSpec

# The imbalance draw and the validation draw each get their own random stream from the
# one seed, so that changing one step never shifts the other's choices.
IMBALANCE_STREAM = 1


def exponential_counts(n_max: int, ratio: float, k: int) -> list[int]:
    """Class i keeps int(n_max * ratio^(-i/(k-1))): from n_max down to n_max / ratio."""
    if k == 1:
        return [n_max]
    return [int(n_max * ratio ** (-i / (k - 1))) for i in range(k)]


def step_counts(
    n_max: int, ratio: float, available: Sequence[int], minority: Sequence[int]
) -> list[int]:
    """The minority classes keep int(n_max / ratio), the others all they have."""
    minority_count = int(n_max / ratio)
    return [minority_count if c in minority else n for c, n in enumerate(available)]


def default_minority(k: int) -> list[int]:
    """The last floor(k/2) classes of the job."""
    return list(range(k - k // 2, k))


def target_counts(
    imbalance: ImbalanceSpec, available: Sequence[int], class_names: Sequence[str]
) -> list[int]:
    """How many training samples each class keeps, given how many it has (`available`,
    per class of the job, in job order). Raises DatasetError for counts that cannot be met."""
    k = len(available)
    n_max = max(available)
    if imbalance.profile == "none":
        return list(available)
    if imbalance.profile == "counts":
        assert imbalance.counts is not None  # the spec requires it for this profile
        return _checked_counts(imbalance.counts, available, class_names)
    assert imbalance.ratio is not None  # the spec requires it for step and exponential
    if imbalance.profile == "step":
        minority = imbalance.minority if imbalance.minority is not None else default_minority(k)
        outside = [c for c in minority if not 0 <= c < k]
        if outside:
            raise DatasetError(
                f"imbalance.minority: {outside} not in this job's classes 0..{k - 1} "
                "(indices after dataset.classes has relabelled them)"
            )
        targets = step_counts(n_max, imbalance.ratio, available, minority)
    else:
        targets = exponential_counts(n_max, imbalance.ratio, k)
    return [min(target, n) for target, n in zip(targets, available, strict=True)]


def _checked_counts(
    counts: Sequence[int], available: Sequence[int], class_names: Sequence[str]
) -> list[int]:
    if len(counts) != len(available):
        raise DatasetError(
            f"imbalance.counts has {len(counts)} values; this job has {len(available)} classes "
            f"({list(class_names)}), one count each in that order"
        )
    for c, (wanted, has) in enumerate(zip(counts, available, strict=True)):
        if wanted > has:
            raise DatasetError(
                f"imbalance.counts: class {c} ({class_names[c]!r}) has {has} training samples; "
                f"it cannot keep {wanted}"
            )
    return list(counts)


def keep_rows(y: Labels, counts: Sequence[int], seed: int) -> Rows:
    """Positions in `y` of a seeded random subset of counts[c] samples of each class c,
    in their original order."""
    rng = np.random.default_rng((seed, IMBALANCE_STREAM))
    kept = []
    for c, count in enumerate(counts):
        rows = np.flatnonzero(y == c)
        kept.append(rng.choice(rows, size=count, replace=False) if count < len(rows) else rows)
    return np.sort(np.concatenate(kept)).astype(np.int64, copy=False)
