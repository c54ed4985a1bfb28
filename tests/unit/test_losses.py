"""Each loss against its formula, on small cases whose expected values are written out here
with numpy (never by calling the code under test)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from counterweight.service.errors import DatasetError
from counterweight.service.rebalance.weights import job_weights
from counterweight.service.spec import JobSpec, LossSpec
from counterweight.workers.training.losses import build_loss
from tests.unit.test_weights import splits_of

LOGITS = np.array([[2.0, -1.0], [0.5, 0.3], [-0.2, 1.7]])
Y = np.array([0, 0, 1])


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    shifted: np.ndarray = z - z.max(axis=1, keepdims=True)
    log_p: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return log_p


def np_ce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy: minus the log-softmax of the true class."""
    ce: np.ndarray = -np_log_softmax(z)[np.arange(len(y)), y]
    return ce


def call(
    counts: list[int],
    logits: np.ndarray = LOGITS,
    y: np.ndarray = Y,
    weight: list[float] | None = None,
    epoch: int = 0,
    **loss: Any,
) -> tuple[float, float]:
    """(sum of w * loss, denominator) of the loss that `loss` specifies."""
    fn = build_loss(LossSpec.model_validate(loss), counts)
    w = torch.ones(len(y)) if weight is None else torch.tensor(weight)
    total, denominator = fn(torch.tensor(logits), torch.tensor(y), w, epoch)
    return float(total), float(denominator)


def test_cross_entropy_with_both_reductions_and_weights() -> None:
    ce = np_ce(LOGITS, Y)
    w = np.array([0.5, 2.0, 3.0])
    total, denominator = call([2, 1], weight=w.tolist())
    assert total == pytest.approx(float((w * ce).sum()), rel=1e-6)
    assert denominator == pytest.approx(5.5)  # weighted_mean: sum(w), PyTorch's rule
    total, denominator = call([2, 1], weight=w.tolist(), reduction="mean")
    assert total == pytest.approx(float((w * ce).sum()), rel=1e-6)
    assert denominator == 3.0  # mean: N, Keras's rule


def test_weighted_mean_equals_pytorch_s_weighted_cross_entropy() -> None:
    class_weight = torch.tensor([1.0, 3.0])
    expected = F.cross_entropy(torch.tensor(LOGITS).float(), torch.tensor(Y), weight=class_weight)
    total, denominator = call([2, 1], weight=[1.0, 1.0, 3.0])
    assert total / denominator == pytest.approx(float(expected), rel=1e-6)


def test_class_weight_times_sample_weight_gives_the_hand_computed_weighted_mean() -> None:
    # class weights [1, 3], sample weights [0.5, 2, 1], labels [0, 0, 1]: w = [0.5, 2, 3]
    spec = JobSpec.model_validate({"dataset": {"name": "digits"}, "class_weight": {"0": 1, "1": 3}})
    weight = job_weights(spec, splits_of(Y.tolist(), [0.5, 2.0, 1.0])).per_sample
    ce = np_ce(LOGITS, Y)
    total, denominator = call([2, 1], weight=weight.tolist())
    expected = (0.5 * ce[0] + 2 * ce[1] + 3 * ce[2]) / 5.5
    assert total / denominator == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_mixes_in_the_mean_log_probability() -> None:
    eps = 0.2
    log_p = np_log_softmax(LOGITS)
    expected = (1 - eps) * np_ce(LOGITS, Y) + eps * -log_p.mean(axis=1)
    total, _ = call([2, 1], label_smoothing=eps)
    assert total == pytest.approx(float(expected.sum()), rel=1e-6)


def test_focal_with_gamma_zero_and_no_alpha_is_cross_entropy_exactly() -> None:
    logits = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 5, (64,), generator=torch.Generator().manual_seed(1))
    w = torch.rand(64, generator=torch.Generator().manual_seed(2))
    counts = [10] * 5
    focal = build_loss(LossSpec(type="focal", gamma=0.0), counts)(logits, y, w, 0)
    ce = build_loss(LossSpec(), counts)(logits, y, w, 0)
    assert torch.equal(focal[0], ce[0]) and torch.equal(focal[1], ce[1])


def test_focal_down_weights_easy_samples_and_alpha_is_part_of_the_value() -> None:
    p_t = np.exp(-np_ce(LOGITS, Y))
    focal = -((1 - p_t) ** 2) * np.log(p_t)
    total, denominator = call([2, 1], type="focal", gamma=2.0)
    assert total == pytest.approx(float(focal.sum()), rel=1e-6)
    alpha = np.array([0.25, 0.75])[Y]
    total, denominator = call([2, 1], type="focal", gamma=2.0, alpha=[0.25, 0.75])
    assert total == pytest.approx(float((alpha * focal).sum()), rel=1e-6)
    assert denominator == 3.0  # alpha is not a weight: the denominator is still sum(w)


def test_focal_ignores_label_smoothing() -> None:
    plain = call([2, 1], type="focal")
    assert call([2, 1], type="focal", label_smoothing=0.3) == plain


def test_focal_gradient_is_finite_for_a_certain_prediction() -> None:
    logits = torch.tensor([[200.0, 0.0], [0.0, 1.0]], requires_grad=True)
    fn = build_loss(LossSpec(type="focal", gamma=0.5), [1, 1])
    total, denominator = fn(logits, torch.tensor([0, 1]), torch.ones(2), 0)
    torch.autograd.backward(total / denominator)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_class_balanced_weights_enter_the_denominator() -> None:
    # counts [1, 2], beta 0.9: weights [38/29, 20/29] (see test_weights)
    v = np.array([38 / 29, 20 / 29])[Y]
    total, denominator = call([1, 2], type="class_balanced", beta=0.9)
    assert total == pytest.approx(float((v * np_ce(LOGITS, Y)).sum()), rel=1e-6)
    assert denominator == pytest.approx(float(v.sum()), rel=1e-6)
    p_t = np.exp(-np_ce(LOGITS, Y))
    focal = -((1 - p_t) ** 1.5) * np.log(p_t)
    total, _ = call([1, 2], type="class_balanced", beta=0.9, base="focal", gamma=1.5)
    assert total == pytest.approx(float((v * focal).sum()), rel=1e-6)


def test_balanced_softmax_is_cross_entropy_on_logits_plus_log_prior() -> None:
    counts = [30, 10]
    prior = np.array([0.75, 0.25])
    expected = np_ce(LOGITS + np.log(prior), Y).sum()
    total, denominator = call(counts, type="balanced_softmax")
    assert total == pytest.approx(float(expected), rel=1e-6)
    assert denominator == 3.0


def test_logit_adjusted_scales_the_prior_by_tau_and_equals_balanced_softmax_at_one() -> None:
    counts = [30, 10]
    assert call(counts, type="logit_adjusted", tau=1.0) == call(counts, type="balanced_softmax")
    expected = np_ce(LOGITS + 2.0 * np.log([0.75, 0.25]), Y).sum()
    total, _ = call(counts, type="logit_adjusted", tau=2.0)
    assert total == pytest.approx(float(expected), rel=1e-6)


def test_ldam_subtracts_the_class_margin_from_the_true_logit_then_scales() -> None:
    # counts [10000, 1]: n^-1/4 = [0.1, 1], so with max_margin 0.5 the margins are [0.05, 0.5].
    logits = np.array([[1.0, 2.0], [1.0, 2.0]])
    y = np.array([1, 0])
    # sample 0 (y=1): 30 * [1, 2 - 0.5] = [30, 45]; sample 1 (y=0): 30 * [0.95, 2] = [28.5, 60]
    expected = math.log1p(math.exp(30 - 45)) + (60 + math.log1p(math.exp(28.5 - 60)) - 28.5)
    total, denominator = call([10000, 1], logits, y, type="ldam", max_margin=0.5, scale=30.0)
    assert total == pytest.approx(expected, rel=1e-5)
    assert denominator == 2.0


def test_ldam_deferred_re_weighting_switches_on_in_drw_epoch() -> None:
    counts = [100, 10]
    # Effective number, beta 0.9999, normalised to sum to 2 (LDAM-DRW's reference code).
    raw = np.array([(1 - 0.9999) / (1 - 0.9999**n) for n in counts])
    drw = raw / raw.sum() * 2
    assert drw == pytest.approx([0.18256, 1.81744], abs=1e-5)
    ce = np_ce(30 * (LOGITS - np.array([[0.5 * 10**-0.25, 0], [0.5 * 10**-0.25, 0], [0, 0.5]])), Y)
    spec: dict[str, Any] = {"type": "ldam", "drw_epoch": 3}
    for epoch in (0, 1):  # epochs 1 and 2: not yet re-weighted
        total, denominator = call(counts, epoch=epoch, **spec)
        assert denominator == 3.0
        assert total == pytest.approx(float(ce.sum()), rel=1e-5)
    for epoch in (2, 7):  # epoch 3 (1-based) on
        total, denominator = call(counts, epoch=epoch, **spec)
        assert denominator == pytest.approx(float(drw[Y].sum()), rel=1e-5)
        assert total == pytest.approx(float((drw[Y] * ce).sum()), rel=1e-5)


def test_losses_compute_in_float32_from_bfloat16_logits() -> None:
    logits = torch.tensor(LOGITS, dtype=torch.bfloat16)
    total, _ = build_loss(LossSpec(), [2, 1])(logits, torch.tensor(Y), torch.ones(3), 0)
    assert total.dtype == torch.float32
    assert float(total) == pytest.approx(float(np_ce(logits.float().numpy(), Y).sum()), rel=1e-6)


def test_a_batch_whose_weights_are_all_zero_contributes_zero_not_nan() -> None:
    total, denominator = call([2, 1], weight=[0.0, 0.0, 0.0])
    assert total == 0.0 and total / denominator == 0.0


def test_alpha_of_the_wrong_length_is_a_dataset_error() -> None:
    with pytest.raises(DatasetError, match=r"^loss.alpha has 3 values; this job has 2 classes$"):
        build_loss(LossSpec(type="focal", alpha=[1, 2, 3]), [5, 5])
