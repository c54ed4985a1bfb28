"""Model architectures, built by name so that a model card can rebuild them.

Every model is a `Classifier`: it starts with a `Normalize` layer whose mean and
std are buffers fitted on the training split, so they travel in the state dict
(and the safetensors file) and the served model takes raw inputs in [0, 1].
To add an arch: subclass Classifier, register it in ARCHS, and say in
`arch_kwargs` which ModelSpec fields it takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from service.spec import ModelSpec


class Normalize(nn.Module):
    """(x - mean) / std per channel: dim 0 of the input shape, so one statistic per
    colour channel of an image, or per feature of a flat feature vector."""

    mean: Tensor
    std: Tensor

    def __init__(self, input_shape: Sequence[int]) -> None:
        super().__init__()
        stats_shape = (input_shape[0],) + (1,) * (len(input_shape) - 1)
        self.register_buffer("mean", torch.zeros(stats_shape))
        self.register_buffer("std", torch.ones(stats_shape))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Set mean and std from a batch of inputs shaped (n, *input_shape)."""
        dims = [0, *range(2, x.ndim)]
        mean = x.mean(dim=dims)
        std = x.std(dim=dims)
        # A constant channel carries no information; dividing by ~0 would only blow up noise.
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        self.mean.copy_(mean.view_as(self.mean))
        self.std.copy_(std.view_as(self.std))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Base of every arch: raw inputs (n, *input_shape) -> logits (n, num_classes)."""

    def __init__(self, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.normalize = Normalize(input_shape)

    def __call__(self, x: Tensor) -> Tensor:  # typed, unlike nn.Module's
        out: Tensor = super().__call__(x)
        return out


class MLP(Classifier):
    def __init__(
        self, input_shape: Sequence[int], num_classes: int, width: int = 256, depth: int = 2
    ) -> None:
        super().__init__(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        features = math.prod(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(features, width), nn.ReLU()]
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.body(self.normalize(x))
        return out


ARCHS: dict[str, Callable[..., Classifier]] = {"mlp": MLP}


def arch_kwargs(model: ModelSpec) -> dict[str, Any]:
    """The ModelSpec fields that `model.arch` takes, as build_model keyword arguments."""
    if model.arch == "mlp":
        return {"width": model.width, "depth": model.depth}
    raise ValueError(f"unknown arch {model.arch!r}")


def build_model(
    arch: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any
) -> Classifier:
    """A freshly initialised `arch` (weights from torch's global RNG; seed it first)."""
    try:
        cls = ARCHS[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCHS)}") from None
    return cls(tuple(input_shape), num_classes, **kwargs)


def model_from_card(card: dict[str, Any]) -> Classifier:
    """The card's architecture with untrained weights; load the safetensors file into it."""
    return build_model(card["arch"], **card["model_kwargs"])
