"""Losses for imbalanced classification, each as its paper or library defines it.

A loss is called with (logits, y, sample_weight, epoch) and returns (sum of
s * loss, denominator), s the sample weights: `weighted_mean` divides by
sum(s * W[y]) (PyTorch's rule), `mean` by the batch size (Keras's rule). W is
the class weight vector, the job's class_weight (given to `build_loss`) times
the loss's own (class_balanced's, LDAM-DRW's); `epoch` is the number of epochs
completed (LDAM's deferred re-weighting depends on it). Focal's alpha is part of
the loss value instead, as in torchvision.ops.sigmoid_focal_loss.

The cross-entropy inside every loss but focal is F.cross_entropy(weight=W,
label_smoothing=eps, reduction="none") on its (adjusted) logits, PyTorch's
semantics: (1 - eps) W[y] (-log p_y) + eps/k sum_c W[c] (-log p_c), each
smoothing term weighed by its own class's weight, not Keras's W[y] times the
whole smoothed loss (DESIGN.md section 4). So with s = 1, weighted_mean is
F.cross_entropy(weight=W, label_smoothing=eps) exactly, as in the papers' code.
Focal ignores label_smoothing: it is defined on the probability of the true
class alone. The adjustments (margins, priors) are for training only: the
model's raw logits are what inference uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from counterweight.service.data.arrays import Floats
from counterweight.service.rebalance.weights import loss_terms, uses_focal
from counterweight.service.spec import LossSpec

Loss = Callable[[Tensor, Tensor, Tensor, int], tuple[Tensor, Tensor]]
# (logits, y, class weights W) -> the loss of each sample, class weights applied
PerSample = Callable[[Tensor, Tensor, Tensor], Tensor]


def build_loss(
    spec: LossSpec,
    class_counts: Sequence[int],
    device: torch.device | str = "cpu",
    class_weight: Sequence[float] | None = None,
) -> Loss:
    """The loss for `spec`, given the training split's per-class counts and the job's
    resolved class weights (None: 1 for every class).

    Raises DatasetError where the spec does not fit the data (alpha of the wrong
    length, a class without samples for a loss that needs its frequency).
    """
    terms = loss_terms(spec, class_counts)

    def constant(values: npt.NDArray[np.float64]) -> Tensor:
        # Made once, on the device: no host-to-device copy per batch.
        return torch.as_tensor(values, dtype=torch.float32, device=device)

    def cross_entropy(logits: Tensor, y: Tensor, w: Tensor) -> Tensor:
        return F.cross_entropy(
            logits, y, weight=w, reduction="none", label_smoothing=spec.label_smoothing
        )

    per_sample: PerSample = cross_entropy
    if uses_focal(spec):
        per_sample = _focal(spec.gamma, None if terms.alpha is None else constant(terms.alpha))
    elif terms.margins is not None:
        per_sample = _ldam(constant(terms.margins), spec)
    elif terms.logit_offset is not None:
        offset = constant(terms.logit_offset)

        def prior_adjusted(logits: Tensor, y: Tensor, w: Tensor) -> Tensor:
            return cross_entropy(logits + offset, y, w)

        per_sample = prior_adjusted

    # W, the job's class weights times the loss's own, changes at most once: when LDAM's
    # deferred re-weighting starts, in epoch drw_epoch (1-based; `epoch` counts the epochs
    # completed).
    given = np.ones(len(class_counts)) if class_weight is None else np.asarray(class_weight)
    early = constant(given * terms.class_weight)
    late = early if terms.drw_class_weight is None else constant(given * terms.drw_class_weight)
    switch_epoch = spec.drw_epoch or 1  # without DRW, late is early

    def loss(logits: Tensor, y: Tensor, sample_weight: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        w = late if epoch + 1 >= switch_epoch else early
        # float32 even under bf16 autocast: the log-probabilities of rare classes need it.
        return reduce(per_sample(logits.float(), y, w), sample_weight, w[y], spec)

    return loss


def _focal(gamma: float, alpha: Tensor | None) -> PerSample:
    """-alpha_t (1 - p_t)^gamma log p_t (Lin et al. 2017, "Focal Loss for Dense Object
    Detection", eq. 5), on the softmax; gamma = 0 without alpha is cross-entropy exactly."""

    def focal(logits: Tensor, y: Tensor, w: Tensor) -> Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
        # 1 - p_t as -expm1(log p_t) keeps its precision when p_t is near 1, and the clamp keeps
        # the gradient of (1 - p_t)^gamma finite (not inf * 0 = NaN) when p_t is exactly 1.
        one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
        loss = -(one_minus_p**gamma) * log_p
        return w[y] * (loss if alpha is None else alpha[y] * loss)

    return focal


def _ldam(margins: Tensor, spec: LossSpec) -> PerSample:
    """Cross-entropy on s * (cos - Delta_y 1_y): the true class's cosine lowered by its
    margin, then all scaled (Cao et al. 2019, eq. 13 and the reference LDAMLoss). The
    logits come from the cosine head (models.CosineHead), which has scaled the cosines by
    s = spec.scale already: s * (cos - Delta) = logits - s * Delta."""

    def ldam(logits: Tensor, y: Tensor, w: Tensor) -> Tensor:
        shift = F.one_hot(y, logits.shape[1]).to(logits.dtype) * margins[y].unsqueeze(1)
        return F.cross_entropy(
            logits - spec.scale * shift,
            y,
            weight=w,
            reduction="none",
            label_smoothing=spec.label_smoothing,
        )

    return ldam


def sample_weights(values: Floats | None, n: int) -> Tensor:
    """The `sample_weight` argument of a loss for `n` training samples (float32, on the CPU):
    the spec's sample weights, or 1 for every sample when it gives none. A copy: an upload's
    arrays are read-only and shared by every job of the process."""
    return torch.ones(n) if values is None else torch.tensor(values, dtype=torch.float32)


def reduce(
    per_sample: Tensor, sample_weight: Tensor, class_weight: Tensor, spec: LossSpec
) -> tuple[Tensor, Tensor]:
    """(sum of s * loss, denominator); `per_sample` has its class weights applied already and
    `class_weight` is W[y], each sample's class weight, for weighted_mean's denominator."""
    total = (sample_weight * per_sample).sum()
    if spec.reduction == "weighted_mean":
        denominator = (sample_weight * class_weight).sum()
        # A batch with nothing in the denominator (zero sample weights, or only samples of a
        # class weighted 0 whose smoothing terms still count) contributes a loss of 0, not
        # x / 0, which would poison the model. torch.where: no wait for the device.
        total = torch.where(denominator > 0, total, torch.zeros_like(total))
        return total, denominator.clamp_min(torch.finfo(denominator.dtype).tiny)
    return total, total.new_full((), float(len(per_sample)))
