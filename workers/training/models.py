"""Model architectures, built by name so that a model card can rebuild them.

Every model is a `Classifier`: it starts with a `Normalize` layer whose mean and
std are buffers fitted on the training split, so they travel in the state dict
(and the safetensors file) and the served model takes raw inputs in [0, 1].
To add an arch: subclass Classifier, register it in ARCHS, and say in
service.architectures which ModelSpec fields it takes (`arch_kwargs`) and how many
parameters it has (`count_parameters`, which the API checks without torch). The
tagger's are `tagger_kwargs` and `count_tagger_parameters` there.

Every model ends in a classifier head: a linear layer, or for loss LDAM the cosine head
(`CosineHead`, chosen by service.architectures.head_kwargs and recorded in the card's
model_kwargs as `head` and `head_scale`, so that a served model rebuilds with it).
Two-stage training re-draws the head and freezes the rest (`retrain_head`).

The convolutional archs take images (n, C, H, W) with any number of channels and
end in global average pooling, so one arch fits 8x8 digits, 28x28 MNIST and
32x32 CIFAR alike. They compute in the channels-last memory layout (NHWC), which
oneDNN on the CPU and cuDNN's tensor-core kernels on the GPU run fastest: small_cnn
trains about 1.25x faster on the CPU than in the default layout. The layout is
invisible from outside: inputs, outputs and the saved weights are ordinary tensors.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from counterweight.service.architectures import (
    RESNETS,
    SMALL_CNN_CHANNELS,
    ResNetShape,
    Shortcut,
    check_arch_input,
)
from counterweight.service.errors import NotAClassifier


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


class CosineHead(nn.Module):
    """Logits s * cos(x, w_c), one per class c: the normalised classifier of LDAM (Cao et al.
    2019, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss", and
    NormedLinear in their code), which the loss scales by s only after lowering the true
    class's cosine by its margin. `weight` is (num_classes, in_features), as nn.Linear's
    (NormedLinear keeps the transpose); no bias. Outputs lie in [-s, s].

    In float32 even under bfloat16 autocast: a bfloat16 cosine is off by up to 0.004, a
    tenth of a small class margin."""

    def __init__(self, in_features: int, num_classes: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """NormedLinear's initialisation: uniform in [-1, 1], then each class vector scaled
        to length 1 (its renorm_(2, 1, 1e-5).mul_(1e5))."""
        with torch.no_grad():
            self.weight.uniform_(-1, 1)
            self.weight.div_(self.weight.norm(dim=1, keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            features = F.normalize(x.float(), dim=-1)
            cosines = F.linear(features, F.normalize(self.weight.float(), dim=-1))
        return self.scale * cosines


Head = nn.Linear | CosineHead


def classifier_head(
    features: int, num_classes: int, head: str = "linear", head_scale: float = 1.0
) -> Head:
    """The last layer of every model: `head` and `head_scale` as head_kwargs gives them."""
    if head == "cosine":
        return CosineHead(features, num_classes, head_scale)
    if head == "linear":
        return nn.Linear(features, num_classes)
    raise ValueError(f"unknown head {head!r}; known: cosine, linear")


class Classifier(nn.Module):
    """Base of every arch: raw inputs (n, *input_shape) -> logits (n, num_classes). Each
    arch's `body` ends in its head (classifier_head)."""

    body: nn.Sequential

    def __init__(self, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.normalize = Normalize(input_shape)

    def __call__(self, x: Tensor) -> Tensor:  # typed, unlike nn.Module's
        out: Tensor = super().__call__(x)
        return out

    def head(self) -> Head:
        head = self.body[-1]
        assert isinstance(head, nn.Linear | CosineHead)
        return head


class MLP(Classifier):
    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        width: int = 256,
        depth: int = 2,
        **head: Any,
    ) -> None:
        super().__init__(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        features = math.prod(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(features, width), nn.ReLU()]
            features = width
        layers.append(classifier_head(features, num_classes, **head))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.body(self.normalize(x))
        return out


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    # No conv bias: the batch norm right after it has its own.
    return [nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False), nn.BatchNorm2d(c_out)]


def init_conv_weights(model: nn.Module) -> None:
    """He (fan-out) initialisation of every conv, as torchvision's ResNet does; batch norms
    start as the identity (weight 1, bias 0, PyTorch's default)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


class ConvClassifier(Classifier):
    """Normalize, then `body`, in the channels-last layout (see the module docstring)."""

    def __init__(self, input_shape: Sequence[int], body: nn.Sequential) -> None:
        super().__init__(input_shape)
        self.body = body
        init_conv_weights(self)
        self.to(memory_format=torch.channels_last)  # the conv weights; the rest is not 4-D

    def forward(self, x: Tensor) -> Tensor:
        x = self.normalize(x).contiguous(memory_format=torch.channels_last)
        out: Tensor = self.body(x)
        return out


class SmallCNN(ConvClassifier):
    """Three conv-bn-relu-maxpool stages (32, 64, 128 channels), global average pooling
    and a linear layer: 94,762 weights and 10.3M multiply-adds per 32x32 colour image,
    so two CPU cores train it on CIFAR-10 at several hundred images per second."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, **head: Any) -> None:
        layers: list[nn.Module] = []
        c_in = input_shape[0]
        for c_out in SMALL_CNN_CHANNELS:
            layers += [*conv_bn(c_in, c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        head_layer = classifier_head(c_in, num_classes, **head)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), head_layer]
        super().__init__(input_shape, nn.Sequential(*layers))


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut (He et al. 2016). Where the shape changes,
    the shortcut is either a 1x1 conv + batch norm ("projection", option B, torchvision's
    ResNet-18) or stride-2 subsampling with zero channels appended ("pad", option A, the
    CIFAR ResNets, which adds no weights)."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: Shortcut) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            *conv_bn(c_in, c_out, stride), nn.ReLU(inplace=True), *conv_bn(c_out, c_out)
        )
        self.shortcut: nn.Module = nn.Identity()
        self.pad_channels = 0
        if stride != 1 or c_in != c_out:
            if shortcut == "projection":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
                )
            else:
                self.shortcut = nn.MaxPool2d(1, stride)  # keeps every stride-th pixel
                self.pad_channels = c_out - c_in

    def forward(self, x: Tensor) -> Tensor:
        identity = self.shortcut(x)
        if self.pad_channels:
            # Zero channels on both sides, as the LDAM and BBN code does.
            half = self.pad_channels // 2
            identity = F.pad(identity, (0, 0, 0, 0, half, self.pad_channels - half))
        out: Tensor = F.relu(self.residual(x) + identity)
        return out


class ResNet(ConvClassifier):
    """A 3x3 stride-1 stem conv, stages of BasicBlocks (each stage after the first halves
    the resolution and starts with a strided block), global average pooling, linear."""

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, shape: ResNetShape, **head: Any
    ) -> None:
        widths = shape.widths
        layers: list[nn.Module] = [*conv_bn(input_shape[0], widths[0]), nn.ReLU(inplace=True)]
        c_in = widths[0]
        for stage, c_out in enumerate(widths):
            for block in range(shape.blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(c_in, c_out, stride, shape.shortcut))
                c_in = c_out
        head_layer = classifier_head(c_in, num_classes, **head)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), head_layer]
        super().__init__(input_shape, nn.Sequential(*layers))


class ResNet18(ResNet):
    """torchvision's ResNet-18 (4 stages of 2 blocks, 64-512 channels, projection
    shortcuts) with the small-image stem: a 3x3 stride-1 conv and no max-pool instead of
    the 7x7 stride-2 conv and max-pool meant for 224x224. 11,173,962 weights for 3x32x32
    inputs and 10 classes."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, **head: Any) -> None:
        super().__init__(input_shape, num_classes, RESNETS["resnet18"], **head)


class ResNet32(ResNet):
    """The CIFAR ResNet-32 of He et al. 2016 section 4.2 (6n+2 layers, n=5: 3 stages of 5
    blocks, 16/32/64 channels) with option A shortcuts, as in the LDAM-DRW and BBN code.
    464,154 weights for 3x32x32 inputs and 10 classes."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, **head: Any) -> None:
        super().__init__(input_shape, num_classes, RESNETS["resnet32"], **head)


ARCHS: dict[str, Callable[..., Classifier]] = {
    "mlp": MLP,
    "small_cnn": SmallCNN,
    "resnet18": ResNet18,
    "resnet32": ResNet32,
}


def build_model(
    arch: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any
) -> Classifier:
    """A freshly initialised `arch` (weights from torch's global RNG; seed it first).
    Raises DatasetError if the inputs do not fit the arch (see check_arch_input)."""
    try:
        cls = ARCHS[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCHS)}") from None
    check_arch_input(arch, input_shape)
    return cls(tuple(input_shape), num_classes, **kwargs)


def retrain_head(model: Classifier, seed: int) -> Head:
    """Prepare classifier re-training (cRT, Kang et al. 2020): every parameter but the
    head's frozen, the head's drawn afresh as the arch first draws them, on the CPU from
    `seed` (the same weights on any device; the global RNG is left alone). Returns the head.
    The caller keeps the model in eval mode, so that batch norm statistics stay too."""
    head = model.head()
    model.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = copy.deepcopy(head).to("cpu")
        fresh.reset_parameters()
    head.load_state_dict(fresh.state_dict())
    head.requires_grad_(True)
    return head


def model_from_card(card: dict[str, Any]) -> Classifier:
    """The card's architecture with untrained weights; load the safetensors file into it.
    A bilstm_tagger card loads with workers.training.tagger_model.tagger_from_card."""
    if card["arch"] == "bilstm_tagger":
        raise NotAClassifier(
            "predict serves classification jobs; this job's model is a bilstm_tagger (task "
            "sequence_labeling): download it from GET /v1/jobs/{id}/model and rebuild it from "
            "GET /v1/jobs/{id}/model/card (workers.training.tagger_model.tagger_from_card)"
        )
    return build_model(card["arch"], **card["model_kwargs"])
