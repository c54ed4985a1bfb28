"""Splits of the built-in digits dataset."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service import datasets
from service.datasets import DatasetError, load_splits
from service.spec import JobSpec

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
    datasets._digits.cache_clear()
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
