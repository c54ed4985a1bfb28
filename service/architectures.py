"""What each `model.arch` is made of, without torch: the layer widths that
workers.training.models builds, the parameter count the API checks at submit
time, and whether an arch and augmentation fit a dataset's inputs.

The API never imports torch to admit a job: it counts an arch's parameters here,
from the same shapes the worker builds with (the tagger's vocabulary included: its
embedding tables have a row per id up to the data's largest), and
tests/unit/test_models.py holds the count to what torch counts on the built model.
Pure rules on the input shape: the API applies them at submit time (a 422, not a job
that fails an hour later) and the worker applies them again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from counterweight.service.errors import DatasetError
from counterweight.service.spec import AUGMENT_MIN_EPOCHS, JobSpec, LossSpec, ModelSpec

CONV_ARCHS = ("small_cnn", "resnet18", "resnet32")
SMALL_CNN_CHANNELS = (32, 64, 128)
SMALL_CNN_MIN_SIDE = 8  # three 2x2 max-pools: 8 -> 4 -> 2 -> 1
# Flipping a digit or a letter can change its class (and a crop can cut off a stroke).
NO_AUGMENT_BY_DEFAULT = ("digits", "mnist", "fashion_mnist")

Shortcut = Literal["projection", "pad"]


@dataclass(frozen=True)
class ResNetShape:
    """Stages of BasicBlocks after a 3x3 stem; each stage after the first halves the
    resolution. `shortcut`: a 1x1 conv + batch norm where the shape changes
    ("projection", option B) or zero channels appended ("pad", option A, no weights)."""

    widths: tuple[int, ...]
    blocks_per_stage: int
    shortcut: Shortcut


RESNETS = {
    # torchvision's ResNet-18 with the small-image stem.
    "resnet18": ResNetShape((64, 128, 256, 512), 2, "projection"),
    # The CIFAR ResNet-32 of He et al. 2016 section 4.2 (n = 5), as in LDAM-DRW and BBN.
    "resnet32": ResNetShape((16, 32, 64), 5, "pad"),
}


def arch_kwargs(model: ModelSpec) -> dict[str, int]:
    """The ModelSpec fields that `model.arch` takes, as build_model keyword arguments."""
    if model.arch == "mlp":
        return {"width": model.width, "depth": model.depth}
    if model.arch in CONV_ARCHS:
        return {}  # fixed architectures: nothing to choose
    if model.arch == "bilstm_tagger":
        raise ValueError("bilstm_tagger is not a classifier: see tagger_kwargs")
    raise ValueError(f"unknown arch {model.arch!r}")


def tagger_kwargs(model: ModelSpec) -> dict[str, int]:
    """bilstm_tagger's BiLSTMTagger keyword arguments from the spec; the vocabulary sizes
    and the tag count come from the data (see count_tagger_parameters)."""
    return {
        "embedding_dim": model.embedding_dim,
        "char_embedding_dim": model.char_embedding_dim,
        "hidden_size": model.width,
        "layers": model.depth,
    }


def head_kwargs(loss: LossSpec) -> dict[str, Any]:
    """The classifier head the loss trains on, as keyword arguments of build_model and
    BiLSTMTagger (and so of the card's model_kwargs). LDAM's is the cosine head of its
    paper and code (Cao et al. 2019, NormedLinear): logits = s * cos(feature, class
    vector), s = loss.scale, no bias. Every other loss: the linear layer, no arguments."""
    if loss.type == "ldam":
        return {"head": "cosine", "head_scale": loss.scale}
    return {}


def _conv_bn(c_in: int, c_out: int, kernel: int = 3) -> int:
    return c_in * c_out * kernel * kernel + 2 * c_out  # no conv bias; batch norm's scale, shift


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _head(features: int, num_classes: int, kwargs: Mapping[str, Any]) -> int:
    # The cosine head is a vector per class and nothing else: no bias.
    if kwargs.get("head") == "cosine":
        return features * num_classes
    return _linear(features, num_classes)


def count_parameters(
    arch: str, kwargs: Mapping[str, Any], input_shape: Sequence[int], num_classes: int
) -> int:
    """Trainable parameters of the classifier build_model(arch, input_shape, num_classes,
    **kwargs) makes (kwargs from arch_kwargs and head_kwargs), counted from its shapes
    (normalisation statistics are buffers)."""
    if arch == "mlp":
        features, total = math.prod(input_shape), 0
        for _ in range(kwargs["depth"]):
            total += _linear(features, kwargs["width"])
            features = kwargs["width"]
        return total + _head(features, num_classes, kwargs)
    c_in = input_shape[0]
    if arch == "small_cnn":
        total = 0
        for c_out in SMALL_CNN_CHANNELS:
            total += _conv_bn(c_in, c_out)
            c_in = c_out
        return total + _head(c_in, num_classes, kwargs)
    shape = RESNETS[arch]
    total = _conv_bn(c_in, shape.widths[0])
    c_in = shape.widths[0]
    for stage, c_out in enumerate(shape.widths):
        for block in range(shape.blocks_per_stage):
            total += _conv_bn(c_in, c_out) + _conv_bn(c_out, c_out)
            reshapes = (stage > 0 and block == 0) or c_in != c_out
            if reshapes and shape.shortcut == "projection":
                total += _conv_bn(c_in, c_out, kernel=1)
            c_in = c_out
    return total + _head(c_in, num_classes, kwargs)


def word_embedding_parameters(kwargs: Mapping[str, Any], vocab_size: int) -> int:
    """The tagger's word embedding table: a row of embedding_dim per word id, padding's
    (0) included, up to the largest id in the data."""
    return vocab_size * int(kwargs["embedding_dim"])


def count_tagger_parameters(
    kwargs: Mapping[str, Any], vocab_size: int, char_vocab_size: int, num_classes: int
) -> int:
    """Trainable parameters of BiLSTMTagger(vocab_size, num_classes, char_vocab_size=...,
    **kwargs), kwargs from tagger_kwargs and head_kwargs: the word embeddings, the character
    encoder when the data has characters, the BiLSTM and the head over its outputs."""
    hidden = kwargs["hidden_size"]
    total = word_embedding_parameters(kwargs, vocab_size)
    features = kwargs["embedding_dim"]
    if char_vocab_size:
        dim = kwargs["char_embedding_dim"]
        # Character embeddings, then a width-3 convolution (with bias) to 2 * dim channels.
        total += char_vocab_size * dim + dim * 2 * dim * 3 + 2 * dim
        features += 2 * dim
    for layer in range(kwargs["layers"]):
        n_in = features if layer == 0 else 2 * hidden  # above the first: both directions
        # Per direction, the four gates' input and recurrent weights and their two biases.
        total += 2 * (4 * hidden * (n_in + hidden) + 2 * 4 * hidden)
    return total + _head(2 * hidden, num_classes, kwargs)


def check_arch_input(arch: str, input_shape: Sequence[int]) -> None:
    """Raise DatasetError if `arch` cannot take inputs of `input_shape` (without the batch
    dimension): the conv archs need images (C, H, W), small_cnn at least 8x8."""
    if arch not in CONV_ARCHS:
        return
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise DatasetError(
            f"model.arch: {arch} needs images of shape (channels, height, width); this "
            f"dataset's inputs have shape {shape}; use arch 'mlp' for them"
        )
    if arch == "small_cnn" and min(shape[1:]) < SMALL_CNN_MIN_SIDE:
        raise DatasetError(
            f"model.arch: small_cnn needs images at least {SMALL_CNN_MIN_SIDE}x"
            f"{SMALL_CNN_MIN_SIDE}; this dataset's are {shape[1]}x{shape[2]}"
        )


def augment_enabled(spec: JobSpec, input_shape: Sequence[int]) -> bool:
    """Whether to augment this job's training batches. `train.augment` decides when set;
    null means on for jobs of at least AUGMENT_MIN_EPOCHS epochs on cifar10 and
    image_folder, never for digits, mnist and fashion_mnist, and for uploaded data only
    for 3-channel images (colour photos, where crops and mirror images are still the same
    class; one channel may be digits or letters).
    Raises DatasetError when augmentation is asked for on inputs that are not images."""
    is_image = len(input_shape) == 3
    if spec.train.augment is not None:
        if spec.train.augment and not is_image:
            raise DatasetError(
                f"train.augment: random crop and flip need images (channels, height, "
                f"width); this dataset's inputs have shape {tuple(input_shape)}"
            )
        return spec.train.augment
    if spec.dataset.name in NO_AUGMENT_BY_DEFAULT or spec.train.epochs < AUGMENT_MIN_EPOCHS:
        return False
    if spec.dataset.name == "uploaded":
        return is_image and input_shape[0] == 3
    return is_image
