"""Predictions from a finished job's model, for POST /v1/jobs/{id}/predict.

The one module of the API that imports torch and the worker's model code; the
route imports it on the first predict, so that an API process that never predicts
never loads torch (about 1 GB and seconds of start-up).

A model is read once from the artifact store (card.json + model.safetensors,
never a pickle; fetched to this host if it lacks them) and kept in a small LRU,
keyed by the home directory and the job id: a succeeded job's model never
changes. It runs on the CPU in float32:
the API process has no GPU to count on, and float32 on the CPU is what the
worker used to score the test split, so predictions reproduce its metrics.

Inputs, each one of:
- nested lists in the card's input shape, float32 values (for images, in [0, 1]);
- for image models (input shape (C, H, W), C = 1 or 3), a base64 string of PNG or
  JPEG bytes: converted to L or RGB, exactly H x W (never resized), value / 255,
  the same conversion the worker applied to uint8 images.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load as load_safetensors

from counterweight.service.artifacts import CARD, MODEL
from counterweight.service.errors import PredictInputError, TooManyInputs
from counterweight.service.settings import Settings
from counterweight.service.storage.jobs import job_file
from counterweight.workers.training.models import Classifier, model_from_card

IMAGE_FORMATS = ("PNG", "JPEG")
MODES = {1: "L", 3: "RGB"}  # channels -> the PIL mode an image is converted to


@dataclass(frozen=True)
class LoadedModel:
    model: Classifier  # eval mode, on the CPU
    input_shape: tuple[int, ...]
    class_names: list[str]

    @property
    def takes_images(self) -> bool:
        return len(self.input_shape) == 3 and self.input_shape[0] in MODES


class ModelCache:
    """The `capacity` most recently used models. Loading happens under the lock, so
    concurrent first requests for a job load it once."""

    def __init__(self) -> None:
        self._models: OrderedDict[tuple[Path, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, settings: Settings, job_id: str, capacity: int) -> LoadedModel:
        key = (settings.home, job_id)
        with self._lock:
            loaded = self._models.get(key)
            if loaded is None:
                loaded = load(settings, job_id)
                self._models[key] = loaded
            self._models.move_to_end(key)
            while len(self._models) > capacity:
                self._models.popitem(last=False)
            return loaded


MODELS = ModelCache()  # one per API process


def load(settings: Settings, job_id: str) -> LoadedModel:
    """A job's model from the artifact store; ArtifactMissing if a file is gone."""
    card: dict[str, Any] = json.loads(job_file(settings, job_id, CARD).read_text())
    weights = job_file(settings, job_id, MODEL).read_bytes()
    model = model_from_card(card)
    model.load_state_dict(load_safetensors(weights))
    return LoadedModel(
        model=model.float().eval(),
        input_shape=tuple(card["input_shape"]),
        class_names=list(card["class_names"]),
    )


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ")"


def _from_lists(index: int, value: Any, loaded: LoadedModel) -> torch.Tensor:
    where = f"inputs[{index}]"
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        # numpy refuses ragged nesting: the lists are not one rectangular shape.
        raise PredictInputError(
            f"{where}: nested lists of unequal lengths; expected shape {_shape(loaded.input_shape)}"
        ) from None
    if array.shape != loaded.input_shape:
        raise PredictInputError(
            f"{where}: expected shape {_shape(loaded.input_shape)}, got {_shape(array.shape)}"
        )
    # Only numbers: numpy would otherwise turn "0.5" or true into floats without a word.
    if array.dtype.kind not in "iuf":
        raise PredictInputError(f"{where}: values must be numbers (got {array.dtype.kind!r} data)")
    floats = array.astype(np.float32)
    if not np.isfinite(floats).all():
        raise PredictInputError(f"{where}: values must be finite (no NaN or infinity)")
    if loaded.takes_images and (floats.min() < 0 or floats.max() > 1):
        raise PredictInputError(
            f"{where}: image values must be in [0, 1] (pixel / 255), "
            f"got [{floats.min():g}, {floats.max():g}]"
        )
    return torch.from_numpy(floats)


def _from_image(index: int, encoded: str, loaded: LoadedModel) -> torch.Tensor:
    where = f"inputs[{index}]"
    if not loaded.takes_images:
        raise PredictInputError(
            f"{where}: a string (base64 image) given, but this model takes nested lists of "
            f"shape {_shape(loaded.input_shape)}"
        )
    channels, height, width = loaded.input_shape
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise PredictInputError(f"{where}: not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as image:
            # Checked before the pixels are decoded: an oversized image costs nothing.
            if image.size != (width, height):
                given_w, given_h = image.size
                raise PredictInputError(
                    f"{where}: image is {given_w}x{given_h} (width x height); this model "
                    f"takes {width}x{height}, and images are never resized"
                )
            pixels = np.asarray(image.convert(MODES[channels]), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise PredictInputError(f"{where}: not a readable PNG or JPEG image") from None
    chw = pixels.reshape(height, width, channels).transpose(2, 0, 1)
    # As the worker converts uint8 images: float32, then / 255 in float32.
    return torch.from_numpy(np.ascontiguousarray(chw)).float().div_(255)


def to_batch(inputs: list[Any], loaded: LoadedModel, max_inputs: int) -> torch.Tensor:
    """The inputs as one float32 tensor (n, *input_shape); PredictInputError names the
    first bad input, TooManyInputs refuses more than `max_inputs`."""
    if len(inputs) > max_inputs:
        raise TooManyInputs(
            f"inputs: {len(inputs)} given; at most {max_inputs} per request "
            "(COUNTERWEIGHT_MAX_PREDICT_INPUTS)"
        )
    if not inputs:
        raise PredictInputError("inputs: at least one input is needed")
    tensors = [
        _from_image(i, item, loaded) if isinstance(item, str) else _from_lists(i, item, loaded)
        for i, item in enumerate(inputs)
    ]
    return torch.stack(tensors)


def predict(loaded: LoadedModel, batch: torch.Tensor) -> list[dict[str, Any]]:
    """Per input: the most probable class, its name and every class's probability."""
    with torch.inference_mode():
        probabilities = loaded.model(batch).softmax(dim=1)
    # argmax over probabilities, as the worker's evaluation does, so that ties break alike.
    classes = probabilities.argmax(dim=1).tolist()
    return [
        {"class": c, "name": loaded.class_names[c], "probabilities": p}
        for c, p in zip(classes, probabilities.tolist(), strict=True)
    ]
