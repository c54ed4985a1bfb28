"""Losses for imbalanced classification, each as its paper or library defines it.

A loss is called with (logits, y, weight, epoch) and returns (sum of w * loss,
denominator): `weighted_mean` divides by sum(w) (PyTorch's rule), `mean` by the
batch size (Keras's rule). `weight` is the per-sample weight, already the
product class_weight[y] * sample_weight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from service.spec import LossSpec

Loss = Callable[[Tensor, Tensor, Tensor, int], tuple[Tensor, Tensor]]


def build_loss(spec: LossSpec, class_counts: list[int]) -> Loss:
    """The loss for `spec`, given the training split's per-class counts."""

    def cross_entropy(
        logits: Tensor, y: Tensor, weight: Tensor, epoch: int
    ) -> tuple[Tensor, Tensor]:
        per_sample = F.cross_entropy(
            logits, y, reduction="none", label_smoothing=spec.label_smoothing
        )
        return reduce(per_sample, weight, spec)

    return cross_entropy


def reduce(per_sample: Tensor, weight: Tensor, spec: LossSpec) -> tuple[Tensor, Tensor]:
    total = (weight * per_sample).sum()
    if spec.reduction == "weighted_mean":
        return total, weight.sum()
    return total, total.new_full((), float(len(per_sample)))
