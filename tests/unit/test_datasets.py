"""Splits of the built-in digits dataset: classes, imbalance, validation, sample weights."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from counterweight.service.data import sources
from counterweight.service.data.arrays import BaseDataset
from counterweight.service.data.splits import load_splits, plan_splits, validation_counts
from counterweight.service.errors import DatasetError
from counterweight.service.spec import JobSpec

DIGITS_SIZE = 1797


def digits(**dataset: Any) -> JobSpec:
    seed = dataset.pop("seed", 0)
    return JobSpec.model_validate(
        {"dataset": {"name": "digits", **dataset}, "imbalance": {"seed": seed}}
    )


def test_split_sizes_and_types(tmp_path: Path) -> None:
    s = load_splits(digits(), tmp_path)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == DIGITS_SIZE
    assert len(s.y_test) == 450  # ceil(25% of 1797)
    assert len(s.y_val) == 135  # ceil(10% of the 1347 left)
    assert s.input_shape == (1, 8, 8)
    assert s.class_names == [str(d) for d in range(10)]
    assert sum(s.train_class_counts) == len(s.y_train)
    for x, y in ((s.x_train, s.y_train), (s.x_val, s.y_val), (s.x_test, s.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (len(y), 1, 8, 8)
        assert x.min() == 0.0 and x.max() == 1.0


def test_test_split_is_fixed(tmp_path: Path) -> None:
    a = load_splits(digits(), tmp_path)
    # Another validation share and seed, and a fresh decode: the test split stays put.
    sources.dataset_cache().clear()
    b = load_splits(digits(val_fraction=0.3, seed=7), tmp_path)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    # ... while the validation split does move with the seed.
    assert not np.array_equal(a.y_val, load_splits(digits(seed=1), tmp_path).y_val)
    # Stratified: every digit is 25% test, give or take one image.
    full = np.bincount(np.concatenate([a.y_train, a.y_val, a.y_test]))
    assert np.all(np.abs(np.bincount(a.y_test) - full * 0.25) <= 1)


def test_validation_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    s = load_splits(digits(val_fraction=0.2, seed=3), tmp_path)
    train, val = np.bincount(s.y_train), np.bincount(s.y_val)
    assert np.all(np.abs(val - (train + val) * 0.2) <= 1)
    again = load_splits(digits(val_fraction=0.2, seed=3), tmp_path)
    np.testing.assert_array_equal(s.x_val, again.x_val)
    np.testing.assert_array_equal(s.y_train, again.y_train)


def test_classes_are_kept_and_relabelled_in_order(tmp_path: Path) -> None:
    full = load_splits(digits(), tmp_path)
    s = load_splits(digits(classes=[8, 3]), tmp_path)
    assert s.class_names == ["8", "3"]
    assert set(np.unique(s.y_train)) == set(np.unique(s.y_test)) == {0, 1}
    # The test split holds exactly the full test split's 8s (as 0) and 3s (as 1), in order.
    np.testing.assert_array_equal(s.x_test[s.y_test == 0], full.x_test[full.y_test == 8])
    np.testing.assert_array_equal(s.x_test[s.y_test == 1], full.x_test[full.y_test == 3])
    total = np.bincount(np.concatenate([s.y_train, s.y_val]))
    assert total.tolist() == [
        int(np.sum(np.concatenate([full.y_train, full.y_val]) == d)) for d in (8, 3)
    ]


@pytest.mark.parametrize(("classes", "unknown"), [([3, 12], "[12]"), ([-1, 2], "[-1]")])
def test_unknown_class_is_a_dataset_error(tmp_path: Path, classes: list[int], unknown: str) -> None:
    with pytest.raises(DatasetError, match=re.escape(unknown)):
        load_splits(digits(classes=classes), tmp_path)


def spec_of(**fields: Any) -> JobSpec:
    return JobSpec.model_validate({"dataset": {"name": "digits"}, **fields})


def test_validation_counts_are_stratified_and_never_empty() -> None:
    # The DESIGN example: step ratio 100 on 5000 + 5000 keeps 5000 + 50; 10% of each is
    # held out, leaving 4500 + 45 to train on.
    assert validation_counts([5000, 50], 0.1) == [500, 5]
    # 10% of 105 is 10.5: the total rounds up (as scikit-learn's), to the class with the
    # largest remainder (3 * 0.1 = 0.3 beats 2 * 0.1 = 0.2); every class with 2 or more
    # samples then gets at least one for validation and keeps one to train on.
    assert validation_counts([100, 3, 2], 0.1) == [10, 1, 1]
    assert validation_counts([2, 2], 0.4) == [1, 1]


def test_imbalance_then_validation_split(tmp_path: Path) -> None:
    spec = spec_of(
        dataset={"name": "digits", "classes": [3, 8]},
        imbalance={"profile": "counts", "counts": [100, 20], "seed": 4},
    )
    s = load_splits(spec, tmp_path)
    # counts are what each class keeps before validation takes 10% of it.
    assert s.train_class_counts == [90, 18]
    assert np.bincount(s.y_val).tolist() == [10, 2]
    assert np.bincount(s.y_test).tolist() == [46, 43]  # the full test split of 3s and 8s
    assert s.x_train.shape == (108, 1, 8, 8)


def test_too_few_samples_to_validate_is_a_clear_error(tmp_path: Path) -> None:
    # Digits has about 135 training images per class: step ratio 100 leaves int(1.36) = 1.
    spec = spec_of(
        dataset={"name": "digits", "classes": [0, 1]},
        imbalance={"profile": "step", "ratio": 100},
    )
    with pytest.raises(DatasetError, match=r"imbalance: class 1 \('1'\) would keep 1 of its"):
        load_splits(spec, tmp_path)


def stored_digits(tmp_path: Path) -> BaseDataset:
    return plan_splits(spec_of(), tmp_path).base


def test_sample_weights_follow_their_rows(tmp_path: Path) -> None:
    base = stored_digits(tmp_path)
    n = len(base.y_train)
    # Each row's weight is its row number in the stored training split, so a surviving
    # weight says which row it came with.
    spec = spec_of(
        dataset={"name": "digits", "classes": [8, 3], "val_fraction": 0.2},
        imbalance={"profile": "step", "ratio": 4, "minority": [1], "seed": 5},
        sample_weight=[float(i) for i in range(n)],
    )
    s = load_splits(spec, tmp_path)
    assert s.sample_weight is not None and s.sample_weight.dtype == np.float32
    origin = s.sample_weight.astype(np.int64)
    assert len(origin) == len(s.y_train) and len(np.unique(origin)) == len(origin)
    np.testing.assert_array_equal(s.x_train, base.x_train[origin])
    np.testing.assert_array_equal(np.array([8, 3])[s.y_train], base.y_train[origin])
    # The imbalance and validation draws did drop rows of both classes.
    assert s.train_class_counts[1] < s.train_class_counts[0] // 3


def test_wrong_sample_weight_shape_states_given_and_accepted_shapes(tmp_path: Path) -> None:
    message = (
        "sample_weight has shape (7,); the training set has 1347 samples, "
        "so it must have shape (1347,)"
    )
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_splits(spec_of(sample_weight=[1.0] * 7), tmp_path)


@pytest.mark.parametrize(("bad", "shown"), [(-1.0, "-1.0"), (float("nan"), "nan"), (1e39, "1e+39")])
def test_negative_or_non_finite_weights_are_refused(tmp_path: Path, bad: float, shown: str) -> None:
    weights = [1.0] * 1347
    weights[3] = bad
    with pytest.raises(DatasetError, match=re.escape(f"sample_weight[3] is {shown}; weights must")):
        load_splits(spec_of(sample_weight=weights), tmp_path)


def test_weights_that_leave_nothing_to_train_on_are_refused(tmp_path: Path) -> None:
    base = stored_digits(tmp_path)
    # Only the 5s weigh anything, and the job keeps 0s and 1s.
    weights = (base.y_train == 5).astype(float).tolist()
    spec = spec_of(dataset={"name": "digits", "classes": [0, 1]}, sample_weight=weights)
    with pytest.raises(DatasetError, match="have weight 0; at least one must be positive"):
        load_splits(spec, tmp_path)
    assert load_splits(spec_of(sample_weight=weights), tmp_path).sample_weight is not None


def test_from_dataset_needs_an_upload_with_weights(tmp_path: Path) -> None:
    message = (
        "sample_weight: from_dataset needs an uploaded dataset with a sample_weight array; "
        "dataset digits has none"
    )
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_splits(spec_of(sample_weight="from_dataset"), tmp_path)


def test_plan_copies_nothing_and_matches_what_load_materialises(tmp_path: Path) -> None:
    spec = spec_of(dataset={"name": "digits", "classes": [2, 7]}, imbalance={"seed": 9})
    plan = plan_splits(spec, tmp_path)
    splits = load_splits(spec, tmp_path)
    assert plan.base is plan_splits(spec, tmp_path).base  # the cached arrays
    assert not plan.base.x_train.flags.writeable  # shared: read-only
    np.testing.assert_array_equal(plan.base.x_train[plan.val_rows], splits.x_val)
    np.testing.assert_array_equal(plan.y_train, splits.y_train)
    assert plan.counts["train"] == splits.train_class_counts
    assert plan.counts["test"] == np.bincount(splits.y_test).tolist()


def test_a_second_load_does_not_decode_again(tmp_path: Path) -> None:
    sources.dataset_cache().clear()
    first = load_splits(digits(), tmp_path)
    second = load_splits(digits(classes=[1, 2]), tmp_path)
    cache = sources.dataset_cache()
    assert (cache.misses, cache.hits) == (1, 1)
    assert first.x_train is not second.x_train  # each job gets its own copy of its rows
