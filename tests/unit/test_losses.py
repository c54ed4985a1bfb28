"""Each loss against its formula, on small cases whose expected values are written out here
with numpy (never by calling the code under test)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor

from counterweight.service.artifacts import CARD, MODEL
from counterweight.service.data.sequences import plan_sequence_splits
from counterweight.service.data.splits import load_splits
from counterweight.service.errors import DatasetError
from counterweight.service.rebalance.weights import job_weights
from counterweight.service.spec import JobSpec, LossSpec
from counterweight.workers.training.engine import train_job
from counterweight.workers.training.losses import build_loss
from counterweight.workers.training.models import model_from_card
from counterweight.workers.training.tagger_model import tagger_from_card
from counterweight.workers.training.tagging import SentenceTensors, word_logits
from tests.sequences import tagging_arrays
from tests.unit.test_sequence_training import sequence_spec, upload
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


def test_ldam_lowers_the_true_class_s_scaled_cosine_by_scale_times_its_margin() -> None:
    # counts [10000, 1]: n^-1/4 = [0.1, 1], so with max_margin 0.5 the margins are [0.05, 0.5].
    # The logits are the cosine head's, 30 * cos: here cosines [1, 2] (any numbers will do).
    logits = 30 * np.array([[1.0, 2.0], [1.0, 2.0]])
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
    scaled = 30 * LOGITS  # the cosine head's logits, 30 * cos
    for epoch in (0, 1):  # epochs 1 and 2: not yet re-weighted
        total, denominator = call(counts, scaled, epoch=epoch, **spec)
        assert denominator == 3.0
        assert total == pytest.approx(float(ce.sum()), rel=1e-5)
    for epoch in (2, 7):  # epoch 3 (1-based) on
        total, denominator = call(counts, scaled, epoch=epoch, **spec)
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


# Label smoothing with class weights: PyTorch's semantics (DESIGN.md section 4), checked
# against F.cross_entropy(weight=W, label_smoothing=eps) itself on random cases.


def random_batch(seed: int) -> tuple[Tensor, Tensor, list[float], float]:
    g = torch.Generator().manual_seed(seed)
    k = 2 + seed % 4
    logits = 3 * torch.randn(12, k, generator=g)
    y = torch.randint(0, k, (12,), generator=g)
    class_weight = (0.1 + 5 * torch.rand(k, generator=g)).tolist()
    return logits, y, class_weight, (0.05, 0.1, 0.3)[seed % 3]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("reduction", ["weighted_mean", "mean"])
def test_label_smoothing_weighs_each_smoothing_term_by_its_class_as_pytorch(
    seed: int, reduction: str
) -> None:
    logits, y, class_weight, eps = random_batch(seed)
    w = torch.tensor(class_weight)
    spec = LossSpec(label_smoothing=eps, reduction=reduction)  # type: ignore[arg-type]
    fn = build_loss(spec, [10] * len(class_weight), class_weight=class_weight)
    total, denominator = fn(logits, y, torch.ones(len(y)), 0)
    reference_sum = F.cross_entropy(logits, y, weight=w, label_smoothing=eps, reduction="sum")
    assert float(total) == pytest.approx(float(reference_sum), rel=1e-5)
    if reduction == "weighted_mean":
        reference = F.cross_entropy(logits, y, weight=w, label_smoothing=eps)
    else:
        reference = reference_sum / len(y)
    assert float(total / denominator) == pytest.approx(float(reference), rel=1e-5)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("reduction", ["weighted_mean", "mean"])
def test_integer_sample_weights_equal_repeating_the_samples(seed: int, reduction: str) -> None:
    # PyTorch has no sample weights; a weight of m is the sample m times (0: left out), so
    # the reference is F.cross_entropy on the batch with its rows repeated.
    logits, y, class_weight, eps = random_batch(seed)
    w = torch.tensor(class_weight)
    counts = torch.randint(0, 4, (len(y),), generator=torch.Generator().manual_seed(100 + seed))
    counts[0] = 2  # at least one row is kept
    spec = LossSpec(label_smoothing=eps, reduction=reduction)  # type: ignore[arg-type]
    fn = build_loss(spec, [10] * len(class_weight), class_weight=class_weight)
    total, denominator = fn(logits, y, counts.float(), 0)
    repeated = logits.repeat_interleave(counts, dim=0), y.repeat_interleave(counts)
    if reduction == "weighted_mean":
        reference = F.cross_entropy(*repeated, weight=w, label_smoothing=eps)
    else:  # Keras's mean: sum of s * loss over the batch size, rows with weight 0 included
        summed = F.cross_entropy(*repeated, weight=w, label_smoothing=eps, reduction="sum")
        reference = summed / len(y)
    assert float(total / denominator) == pytest.approx(float(reference), rel=1e-5)


def test_every_cross_entropy_based_loss_smooths_with_pytorch_s_class_weights() -> None:
    logits, y, class_weight, eps = random_batch(5)
    k = len(class_weight)
    counts = [400, 90, 30, 7][:k]
    w = np.array(class_weight)
    log_prior = np.log(np.array(counts) / sum(counts))

    def effective_number(beta: float) -> np.ndarray:
        raw = (1 - beta) / (1 - beta ** np.array(counts, dtype=float))
        weights: np.ndarray = raw / raw.sum() * k
        return weights

    def ours(epoch: int = 0, **loss: Any) -> float:
        fn = build_loss(LossSpec(label_smoothing=eps, **loss), counts, class_weight=class_weight)
        total, denominator = fn(logits, y, torch.ones(len(y)), epoch)
        return float(total / denominator)

    def pytorch(z: Tensor, weight: np.ndarray) -> float:
        reference = F.cross_entropy(
            z, y, weight=torch.tensor(weight, dtype=torch.float32), label_smoothing=eps
        )
        return float(reference)

    prior = torch.tensor(log_prior, dtype=torch.float32)
    assert ours(type="class_balanced", beta=0.99) == pytest.approx(
        pytorch(logits, w * effective_number(0.99)), rel=1e-5
    )
    assert ours(type="balanced_softmax") == pytest.approx(pytorch(logits + prior, w), rel=1e-5)
    assert ours(type="logit_adjusted", tau=1.5) == pytest.approx(
        pytorch(logits + 1.5 * prior, w), rel=1e-5
    )
    margins = np.array(counts, dtype=float) ** -0.25
    margins *= 0.5 / margins.max()
    # LDAM's logits are the cosine head's, s * cos: the loss lowers the true one by s * margin.
    shifted = logits - 30 * F.one_hot(y, k) * torch.tensor(margins, dtype=torch.float32)[y, None]
    ldam = {"type": "ldam", "max_margin": 0.5, "scale": 30.0, "drw_epoch": 2}
    assert ours(epoch=0, **ldam) == pytest.approx(pytorch(shifted, w), rel=1e-4)
    assert ours(epoch=1, **ldam) == pytest.approx(
        pytorch(shifted, w * effective_number(0.9999)), rel=1e-4
    )


def test_a_batch_of_a_class_weighted_zero_adds_nothing_though_its_smoothing_terms_count() -> None:
    # Class 0 weighs 0: its samples still have smoothing terms toward class 1 (PyTorch's
    # semantics), but nothing in weighted_mean's denominator. 0, not x / 0.
    logits = torch.tensor(LOGITS, dtype=torch.float32, requires_grad=True)
    fn = build_loss(LossSpec(label_smoothing=0.2), [2, 1], class_weight=[0.0, 1.0])
    total, denominator = fn(logits, torch.tensor([0, 0, 0]), torch.ones(3), 0)
    torch.autograd.backward(total / denominator)
    assert float((total / denominator).detach()) == 0.0
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # With a sample of class 1 in the batch, class 0's smoothing terms do count.
    total, denominator = (t.detach() for t in fn(logits, torch.tensor(Y), torch.ones(3), 0))
    # Every sample: 0.2 / 2 * (0 * -log p_0 + 1 * -log p_1); the class-1 sample adds 0.8 * nll.
    expected = 0.1 * -np_log_softmax(LOGITS)[:, 1].sum() + 0.8 * np_ce(LOGITS, Y)[2]
    assert float(denominator) == 1.0
    assert float(total) == pytest.approx(expected, rel=1e-5)


# Through a whole job: the worker hands the loss the job's class weights and the sample
# weights, and trains on PyTorch's smoothed weighted cross-entropy. An lr too small to move
# any float32 weight leaves the served model the one the epoch trained with, so the epoch's
# training loss is that model's loss over the training split, which F.cross_entropy gives.
TINY_LR = 1e-30
CLASS_WEIGHT = [0.5 + 0.4 * c for c in range(10)]


def weighted_smoothed_ce(
    logits: Tensor, y: Tensor, sample_weight: Tensor, class_weight: list[float], eps: float
) -> float:
    w = torch.tensor(class_weight)
    per_sample = F.cross_entropy(logits, y, weight=w, label_smoothing=eps, reduction="none")
    return float((sample_weight * per_sample).sum() / (sample_weight * w[y]).sum())


def test_a_classification_job_trains_on_the_smoothed_class_weighted_loss(tmp_path: Path) -> None:
    rows = 1797 - 450  # digits' training split as stored: one sample weight per row
    sample_weight = np.random.default_rng(0).integers(1, 4, size=rows).astype(float)
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": {"arch": "mlp", "width": 16, "depth": 1},
            "class_weight": {str(c): w for c, w in enumerate(CLASS_WEIGHT)},
            "sample_weight": sample_weight.tolist(),
            "loss": {"label_smoothing": 0.2},
            "train": {"epochs": 1, "lr": TINY_LR, "select_by": "last"},
        }
    )
    result = train_job(
        spec, tmp_path, device="cpu", data_root=tmp_path,
        report=lambda _: None, should_stop=lambda: False,
    )  # fmt: skip
    assert result is not None
    model = model_from_card(json.loads((tmp_path / CARD).read_text()))
    model.load_state_dict(load_file(tmp_path / MODEL))
    splits = load_splits(spec, tmp_path)
    assert splits.sample_weight is not None
    with torch.no_grad():
        logits = model(torch.tensor(splits.x_train))
    y, sample_weight = torch.tensor(splits.y_train), torch.tensor(splits.sample_weight)
    expected = weighted_smoothed_ce(logits, y, sample_weight, CLASS_WEIGHT, 0.2)
    train_loss = result.metrics["history"][0]["train_loss"]
    assert train_loss == pytest.approx(expected, rel=1e-4)
    # Keras's rule, W[y] times the whole smoothed loss, is another number: the test can tell.
    w = torch.tensor(CLASS_WEIGHT)[y] * sample_weight
    smoothed = F.cross_entropy(logits, y, label_smoothing=0.2, reduction="none")
    assert float((w * smoothed).sum() / w.sum()) != pytest.approx(expected, rel=1e-3)


def test_a_tagging_job_trains_on_the_smoothed_class_weighted_loss(tmp_path: Path) -> None:
    arrays = tagging_arrays(n_train=60, n_test=20)
    class_weight = CLASS_WEIGHT[:7]
    sentence_weight = np.random.default_rng(1).integers(1, 4, size=60).astype(float)
    spec = sequence_spec(
        upload(tmp_path, arrays),
        class_weight={str(c): w for c, w in enumerate(class_weight)},
        sample_weight=sentence_weight.tolist(),
        loss={"label_smoothing": 0.2},
        train={"epochs": 1, "batch_size": 16, "lr": TINY_LR, "select_by": "last"},
    )
    result = train_job(
        spec, tmp_path / "job", device="cpu", data_root=tmp_path, home=tmp_path,
        report=lambda _: None, should_stop=lambda: False,
    )  # fmt: skip
    assert result is not None
    model = tagger_from_card(json.loads((tmp_path / "job" / CARD).read_text()))
    model.load_state_dict(load_file(tmp_path / "job" / MODEL))
    splits = plan_sequence_splits(spec, tmp_path)
    words = splits.train_sample_weight  # each word's sentence weight
    assert words is not None
    logits = word_logits(model, SentenceTensors.of(splits.train, torch.device("cpu")))
    expected = weighted_smoothed_ce(
        logits,
        torch.tensor(splits.train.tokens),
        torch.tensor(words),
        class_weight,
        0.2,
    )
    assert result.metrics["history"][0]["train_loss"] == pytest.approx(expected, rel=1e-4)
