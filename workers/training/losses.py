"""Losses for imbalanced classification, each as its paper or library defines it.

A loss is called with (logits, y, weight, epoch) and returns (sum of w * loss,
denominator): `weighted_mean` divides by sum(w) (PyTorch's rule), `mean` by the
batch size (Keras's rule). `weight` is the per-sample weight, already the
product class_weight[y] * sample_weight; `epoch` is the number of epochs
completed (LDAM's deferred re-weighting depends on it).

Class weights that a loss applies itself (class_balanced's, LDAM-DRW's) multiply
`weight`, so they enter weighted_mean's denominator exactly as
F.cross_entropy(weight=...) in the papers' code. Focal's alpha is part of the
loss value instead, as in torchvision.ops.sigmoid_focal_loss.

`label_smoothing` applies to the cross-entropy inside every loss but focal, which
is defined on the probability of the true class alone. The adjustments (margins,
priors) are for training only: the model's raw logits are what inference uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from counterweight.service.rebalance.weights import loss_terms, uses_focal
from counterweight.service.spec import LossSpec

Loss = Callable[[Tensor, Tensor, Tensor, int], tuple[Tensor, Tensor]]
PerSample = Callable[[Tensor, Tensor], Tensor]  # (logits, y) -> loss of each sample


def build_loss(
    spec: LossSpec, class_counts: Sequence[int], device: torch.device | str = "cpu"
) -> Loss:
    """The loss for `spec`, given the training split's per-class counts.

    Raises DatasetError where the spec does not fit the data (alpha of the wrong
    length, a class without samples for a loss that needs its frequency).
    """
    terms = loss_terms(spec, class_counts)

    def constant(values: npt.NDArray[np.float64]) -> Tensor:
        # Made once, on the device: no host-to-device copy per batch.
        return torch.as_tensor(values, dtype=torch.float32, device=device)

    def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y, reduction="none", label_smoothing=spec.label_smoothing)

    per_sample: PerSample = cross_entropy
    if uses_focal(spec):
        per_sample = _focal(spec.gamma, None if terms.alpha is None else constant(terms.alpha))
    elif terms.margins is not None:
        per_sample = _ldam(constant(terms.margins), spec)
    elif terms.logit_offset is not None:
        offset = constant(terms.logit_offset)

        def prior_adjusted(logits: Tensor, y: Tensor) -> Tensor:
            return cross_entropy(logits + offset, y)

        per_sample = prior_adjusted

    # The loss's own class weights change at most once: when LDAM's deferred re-weighting
    # starts, in epoch drw_epoch (1-based; `epoch` counts the epochs completed).
    early = constant(terms.class_weight)
    late = early if terms.drw_class_weight is None else constant(terms.drw_class_weight)
    switch_epoch = spec.drw_epoch or 1  # without DRW, late is early

    def loss(logits: Tensor, y: Tensor, weight: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        class_weight = late if epoch + 1 >= switch_epoch else early
        # float32 even under bf16 autocast: the log-probabilities of rare classes need it.
        return reduce(per_sample(logits.float(), y), weight * class_weight[y], spec)

    return loss


def _focal(gamma: float, alpha: Tensor | None) -> PerSample:
    """-alpha_t (1 - p_t)^gamma log p_t (Lin et al. 2017, "Focal Loss for Dense Object
    Detection", eq. 5), on the softmax; gamma = 0 without alpha is cross-entropy exactly."""

    def focal(logits: Tensor, y: Tensor) -> Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
        # 1 - p_t as -expm1(log p_t) keeps its precision when p_t is near 1, and the clamp keeps
        # the gradient of (1 - p_t)^gamma finite (not inf * 0 = NaN) when p_t is exactly 1.
        one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
        loss = -(one_minus_p**gamma) * log_p
        return loss if alpha is None else alpha[y] * loss

    return focal


def _ldam(margins: Tensor, spec: LossSpec) -> PerSample:
    """Cross-entropy on s * (z - Delta_y 1_y): the true class's logit lowered by its margin,
    then all logits scaled (Cao et al. 2019, eq. 13 and the reference LDAMLoss)."""

    def ldam(logits: Tensor, y: Tensor) -> Tensor:
        shift = F.one_hot(y, logits.shape[1]).to(logits.dtype) * margins[y].unsqueeze(1)
        return F.cross_entropy(
            spec.scale * (logits - shift),
            y,
            reduction="none",
            label_smoothing=spec.label_smoothing,
        )

    return ldam


def reduce(per_sample: Tensor, weight: Tensor, spec: LossSpec) -> tuple[Tensor, Tensor]:
    total = (weight * per_sample).sum()
    if spec.reduction == "weighted_mean":
        # A batch whose weights are all 0 (zero sample weights) contributes a loss of 0, not
        # 0 / 0 = NaN, which would poison the model.
        return total, weight.sum().clamp_min(torch.finfo(weight.dtype).tiny)
    return total, total.new_full((), float(len(per_sample)))
