"""Class weight rules and loss terms on hand-checked counts (service.rebalance.weights)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from counterweight.service.data.splits import Splits
from counterweight.service.errors import DatasetError
from counterweight.service.rebalance.weights import (
    effective_number,
    focal_alpha,
    job_weights,
    ldam_margins,
    log_prior,
    loss_terms,
    resolve_class_weight,
)
from counterweight.service.spec import JobSpec, LossSpec

NAMES = ["3", "8"]  # digits with dataset.classes [3, 8]: index 0 is the class named "3"


def resolve(class_weight: Any, counts: list[int], names: list[str] = NAMES) -> list[float]:
    spec = JobSpec.model_validate({"dataset": {"name": "digits"}, "class_weight": class_weight})
    return resolve_class_weight(spec.class_weight, counts, names).values


def test_balanced_is_n_over_k_n_c() -> None:
    # 100 / (2 * 90) and 100 / (2 * 10)
    assert resolve("balanced", [90, 10]) == pytest.approx([0.5556, 5.0], abs=1e-4)
    assert resolve("balanced", [50, 30, 20], ["a", "b", "c"]) == pytest.approx(
        [100 / 150, 100 / 90, 100 / 60]
    )


def test_inverse_sqrt_is_scaled_so_that_the_weighted_count_is_n() -> None:
    # w_c = a / sqrt(n_c) with sum_c n_c w_c = 100: a = 100 / (sqrt 90 + sqrt 10), so
    # w_0 = 100 / (90 + 30) and w_1 = 100 / (30 + 10).
    weights = resolve("inverse_sqrt", [90, 10])
    assert weights == pytest.approx([5 / 6, 2.5])
    assert 90 * weights[0] + 10 * weights[1] == pytest.approx(100)


def test_effective_number_is_normalised_to_sum_to_k() -> None:
    # beta 0.9: raw = [0.1 / 0.1, 0.1 / 0.19] = [1, 10/19]; times 2 / (29/19) = [38/29, 20/29]
    assert resolve({"effective_number": 0.9}, [1, 2]) == pytest.approx([38 / 29, 20 / 29])
    assert effective_number([1, 2], 0.9, "f") == pytest.approx([38 / 29, 20 / 29])


def test_null_is_all_ones() -> None:
    assert resolve(None, [90, 10]) == [1.0, 1.0]


def test_object_keys_are_indices_or_names_and_left_out_classes_get_one() -> None:
    assert resolve({"1": 4.0}, [90, 10]) == [1.0, 4.0]
    assert resolve({"8": 4.0}, [90, 10]) == [1.0, 4.0]  # by name
    assert resolve({"0": 0.5, "8": 4.0}, [90, 10]) == [0.5, 4.0]  # mixed
    spec = JobSpec.model_validate({"dataset": {"name": "digits"}, "class_weight": {"cat": 2}})
    named = resolve_class_weight(spec.class_weight, [5, 5, 5], ["dog", "cat", "cow"])
    assert (named.values, named.left_out) == ([1.0, 2.0, 1.0], [0, 2])


def test_a_key_that_is_an_index_and_another_class_s_name_is_read_as_index_with_a_warning() -> None:
    spec = JobSpec.model_validate({"dataset": {"name": "digits"}, "class_weight": {"0": 3}})
    resolved = resolve_class_weight(spec.class_weight, [5, 5], ["1", "0"])
    assert resolved.values == [3.0, 1.0]
    assert len(resolved.warnings) == 1
    assert "read as class index 0" in resolved.warnings[0]


@pytest.mark.parametrize(
    ("class_weight", "message"),
    [
        ({"cat": 2}, "class_weight: class 'cat' is not in this job (classes: 0 ('3'), 1 ('8'))"),
        ({"5": 2}, "class_weight: class '5' is not in this job"),
        ({"-1": 2}, "class_weight: class '-1' is not in this job"),
        ({"0": 1, "3": 2}, "class_weight: keys '0' and '3' both name class 0 ('3')"),
        (
            {"0": -1},
            "class_weight: the weight of '0' is -1.0; expected a number >= 0 that is finite "
            "in float32",
        ),
        ({"0": math.nan}, "class_weight: the weight of '0' is nan"),
        ({"0": math.inf}, "class_weight: the weight of '0' is inf"),
        ({"0": 1e39}, "class_weight: the weight of '0' is 1e+39"),  # inf in float32
        ({"0": 0, "1": 0}, "class_weight: every class has weight 0"),
    ],
)
def test_bad_class_weight_objects_are_refused(class_weight: Any, message: str) -> None:
    with pytest.raises(DatasetError) as error:
        resolve(class_weight, [90, 10])
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("rule", ["balanced", "inverse_sqrt", {"effective_number": 0.99}])
def test_a_rule_refuses_a_class_without_training_samples(rule: Any) -> None:
    with pytest.raises(DatasetError, match=r"^class_weight.*class 1 has no training samples"):
        resolve(rule, [90, 0])


def test_ldam_margins_scale_as_n_to_the_minus_quarter_with_the_largest_at_max_margin() -> None:
    # n^-1/4 of [10000, 100, 1] = [0.1, 0.316, 1]; scaled so that the largest is 0.5
    margins = ldam_margins([10000, 100, 1], 0.5)
    assert margins == pytest.approx([0.05, 0.5 / math.sqrt(10), 0.5])


def test_log_prior() -> None:
    assert log_prior([3, 1], "f") == pytest.approx([math.log(0.75), math.log(0.25)])


def test_focal_alpha_must_have_one_value_per_class() -> None:
    loss = LossSpec(type="focal", alpha=[0.25, 0.5, 0.25])
    with pytest.raises(DatasetError) as error:
        focal_alpha(loss, 2)
    assert str(error.value) == "loss.alpha has 3 values; this job has 2 classes"
    assert focal_alpha(loss, 3) == pytest.approx([0.25, 0.5, 0.25])


@pytest.mark.parametrize("loss_type", ["class_balanced", "ldam", "balanced_softmax"])
def test_losses_that_need_frequencies_refuse_a_class_without_samples(loss_type: str) -> None:
    with pytest.raises(DatasetError, match=rf"^loss.type '{loss_type}'.*class 0 has no"):
        loss_terms(LossSpec.model_validate({"type": loss_type}), [0, 10])


def test_loss_terms_per_loss() -> None:
    counts = [30, 10]
    assert loss_terms(LossSpec(), counts).class_weight.tolist() == [1.0, 1.0]
    cb = loss_terms(LossSpec(type="class_balanced", beta=0.9), [1, 2])
    assert cb.class_weight == pytest.approx([38 / 29, 20 / 29])
    la = loss_terms(LossSpec(type="logit_adjusted", tau=2.0), counts)
    assert la.logit_offset == pytest.approx([2 * math.log(0.75), 2 * math.log(0.25)])
    ldam = loss_terms(LossSpec(type="ldam", drw_epoch=3), counts)
    assert ldam.class_weight.tolist() == [1.0, 1.0]
    assert ldam.drw_class_weight is not None
    assert ldam.drw_class_weight.sum() == pytest.approx(2.0)
    assert loss_terms(LossSpec(type="ldam"), counts).drw_class_weight is None


def splits_of(y: list[int], sample_weight: list[float] | None) -> Splits:
    y_train = np.array(y, dtype=np.int64)
    empty = np.zeros((0, 1), dtype=np.float32)
    return Splits(
        x_train=np.zeros((len(y), 1), dtype=np.float32),
        y_train=y_train,
        x_val=empty,
        y_val=np.zeros(0, dtype=np.int64),
        x_test=empty,
        y_test=np.zeros(0, dtype=np.int64),
        class_names=["a", "b"],
        input_shape=(1,),
        sample_weight=None if sample_weight is None else np.array(sample_weight, np.float32),
    )


def test_class_and_sample_weights_multiply_and_the_effective_weight_uses_the_class_mean() -> None:
    spec = JobSpec.model_validate({"dataset": {"name": "digits"}, "class_weight": {"a": 1, "b": 3}})
    weights = job_weights(spec, splits_of([0, 0, 1], [0.5, 2.0, 1.0]))
    assert weights.per_sample.dtype == np.float32
    assert weights.per_sample.tolist() == [0.5, 2.0, 3.0]
    # class a: 1 * mean(0.5, 2) = 1.25; class b: 3 * 1
    assert weights.effective == pytest.approx([1.25, 3.0])


def test_effective_weight_includes_the_loss_s_own_class_weights_and_alpha() -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "class_weight": {"a": 2},
            "loss": {"type": "class_balanced", "beta": 0.9, "base": "focal", "alpha": [0.5, 1]},
        }
    )
    weights = job_weights(spec, splits_of([0, 1, 1], None))
    # class_weight [2, 1] * effective number of [1, 2] at beta 0.9 [38/29, 20/29] * alpha
    assert weights.effective == pytest.approx([2 * 38 / 29 * 0.5, 20 / 29])
    # The loss's own weights are applied by the loss, not folded into the sample weights.
    assert weights.per_sample.tolist() == [2.0, 1.0, 1.0]
