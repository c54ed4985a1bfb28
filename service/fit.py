"""Whether a spec's model and augmentation fit its data's inputs.

Pure rules on the input shape: the API applies them at submit time (a 422,
not a job that fails an hour later) and the worker applies them again.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.dataset_arrays import DatasetError
from service.spec import JobSpec

CONV_ARCHS = ("small_cnn", "resnet18", "resnet32")
SMALL_CNN_MIN_SIDE = 8  # three 2x2 max-pools: 8 -> 4 -> 2 -> 1
# Flipping a digit or a letter can change its class (and a crop can cut off a stroke).
NO_AUGMENT_BY_DEFAULT = ("digits", "mnist", "fashion_mnist")


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
    null means on for cifar10 and image_folder, off for digits, mnist and fashion_mnist,
    and for uploaded data on only for 3-channel images (colour photos, where crops and
    mirror images are still the same class; one channel may be digits or letters).
    Raises DatasetError when augmentation is asked for on inputs that are not images."""
    is_image = len(input_shape) == 3
    if spec.train.augment is not None:
        if spec.train.augment and not is_image:
            raise DatasetError(
                f"train.augment: random crop and flip need images (channels, height, "
                f"width); this dataset's inputs have shape {tuple(input_shape)}"
            )
        return spec.train.augment
    if spec.dataset.name in NO_AUGMENT_BY_DEFAULT:
        return False
    if spec.dataset.name == "uploaded":
        return is_image and input_shape[0] == 3
    return is_image
