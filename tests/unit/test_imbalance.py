"""Imbalance profiles: how many samples each class keeps, and which."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from counterweight.service.data.imbalance import (
    default_minority,
    exponential_counts,
    keep_rows,
    target_counts,
)
from counterweight.service.errors import DatasetError
from counterweight.service.spec import ImbalanceSpec


def profile(**options: Any) -> ImbalanceSpec:
    return ImbalanceSpec.model_validate(options)


def names(k: int) -> list[str]:
    return [f"c{i}" for i in range(k)]


def test_exponential_profile_of_the_long_tail_papers() -> None:
    # CIFAR-10-LT with imbalance ratio 100 (Cao et al. 2019): 5000 * 100^(-i/9).
    assert exponential_counts(5000, 100, 10) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert exponential_counts(600, 10, 3) == [600, 189, 60]  # 600 * 10^-0.5 = 189.7


def test_exponential_never_asks_a_class_for_more_than_it_has() -> None:
    # n_max is 100; targets 100, 50, 25; class 1 has only 10 and keeps them all.
    spec = profile(profile="exponential", ratio=4)
    assert target_counts(spec, [100, 10, 100], names(3)) == [100, 10, 25]


def test_step_shrinks_the_minority_classes_to_n_max_over_ratio() -> None:
    spec = profile(profile="step", ratio=10, minority=[0, 2])
    # n_max = 500: the minority classes keep 50, the majority class keeps its own 480.
    assert target_counts(spec, [500, 480, 300], names(3)) == [50, 480, 50]
    # A minority class already smaller than n_max / ratio keeps what it has.
    assert target_counts(profile(profile="step", ratio=10), [1000, 30], names(2)) == [1000, 30]


def test_step_default_minority_is_the_last_half() -> None:
    assert default_minority(2) == [1]
    assert default_minority(5) == [3, 4]
    assert default_minority(10) == [5, 6, 7, 8, 9]
    spec = profile(profile="step", ratio=100)
    assert target_counts(spec, [5000] * 4, names(4)) == [5000, 5000, 50, 50]


def test_step_minority_outside_the_job_is_refused() -> None:
    spec = profile(profile="step", ratio=10, minority=[1, 3])
    with pytest.raises(DatasetError, match=re.escape("imbalance.minority: [3] not in")):
        target_counts(spec, [100, 100], names(2))


def test_none_keeps_all_and_counts_keep_exactly_what_is_asked() -> None:
    assert target_counts(profile(), [7, 3, 9], names(3)) == [7, 3, 9]
    counts = profile(profile="counts", counts=[5, 0, 9])
    assert target_counts(counts, [7, 3, 9], names(3)) == [5, 0, 9]


def test_counts_must_fit_the_job() -> None:
    wrong_length = "imbalance.counts has 2 values; this job has 3 classes"
    with pytest.raises(DatasetError, match=re.escape(wrong_length)):
        target_counts(profile(profile="counts", counts=[1, 2]), [7, 3, 9], names(3))
    # Both numbers are in the message: what the class has and what was asked for.
    too_many = "imbalance.counts: class 1 ('c1') has 3 training samples; it cannot keep 4"
    with pytest.raises(DatasetError, match=re.escape(too_many)):
        target_counts(profile(profile="counts", counts=[1, 4, 2]), [7, 3, 9], names(3))


def test_keep_rows_draws_the_counts_from_each_class() -> None:
    y = np.repeat(np.arange(3), [50, 40, 30]).astype(np.int64)
    np.random.default_rng(0).shuffle(y)
    rows = keep_rows(y, [50, 10, 3], seed=7)
    assert np.bincount(y[rows]).tolist() == [50, 10, 3]
    assert np.all(np.diff(rows) > 0)  # distinct, in their original order
    # Class 0 keeps everything; the others a subset of their own rows.
    np.testing.assert_array_equal(rows[y[rows] == 0], np.flatnonzero(y == 0))


def test_keep_rows_is_deterministic_for_a_seed_and_varies_across_seeds() -> None:
    y = np.repeat(np.arange(2), [1000, 1000]).astype(np.int64)
    first = keep_rows(y, [1000, 10], seed=3)
    np.testing.assert_array_equal(first, keep_rows(y, [1000, 10], seed=3))
    others = {tuple(keep_rows(y, [1000, 10], seed=s)[1000:]) for s in range(4, 9)}
    assert tuple(first[1000:]) not in others and len(others) == 5
