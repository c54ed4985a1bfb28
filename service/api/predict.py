"""Predictions from a finished job's model, for POST /v1/jobs/{id}/predict.

The one module of the API that imports torch and the worker's model code; the
route imports it on the first predict, so that an API process that never predicts
never loads torch (about 1 GB and seconds of start-up).

A model is read once from the artifact store (card.json + model.safetensors,
never a pickle; fetched to this host if it lacks them, through
service.api.storage_calls) and kept in a small LRU per API process, keyed by the
home directory and the job id: a succeeded job's model never changes. Loads of
different models never wait for each other. It runs on the CPU in float32:
the API process has no GPU to count on, and float32 on the CPU is what the
worker used to score the test split, so predictions reproduce its metrics.

Inputs, each one of:
- nested lists in the card's input shape, float32 values (for images, in [0, 1]);
- for image models (input shape (C, H, W), C = 1 or 3), a base64 string of PNG or
  JPEG bytes: converted to L or RGB, exactly H x W (never resized), value / 255,
  the same conversion the worker applied to uint8 images.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load as load_safetensors
from starlette.concurrency import run_in_threadpool

from counterweight.service.api.storage_calls import StorageCalls
from counterweight.service.artifacts import CARD, MODEL
from counterweight.service.errors import PredictInputError, TooManyInputs
from counterweight.service.rebalance.decision import apply_decision
from counterweight.service.settings import Settings
from counterweight.workers.training.models import Classifier, model_from_card

IMAGE_FORMATS = ("PNG", "JPEG")
MODES = {1: "L", 3: "RGB"}  # channels -> the PIL mode an image is converted to


@dataclass(frozen=True)
class LoadedModel:
    model: Classifier  # eval mode, on the CPU
    input_shape: tuple[int, ...]
    class_names: list[str]
    # The job's decision rule as a bias on the logits, and the training counts that a
    # request's `priors` are measured against (service.rebalance.decision).
    bias: list[float]
    train_class_counts: list[int] | None

    @property
    def takes_images(self) -> bool:
        return len(self.input_shape) == 3 and self.input_shape[0] in MODES


class ModelCache:
    """The `capacity` most recently used models of one API process, used on its event
    loop. A model is loaded once however many requests ask for it at once (they await
    the same load), and loads of different models run side by side: one whose files
    are slow to come from the store delays only the requests for it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._models: OrderedDict[tuple[Path, str], LoadedModel] = OrderedDict()
        self._loading: dict[tuple[Path, str], asyncio.Future[LoadedModel]] = {}

    async def get(self, settings: Settings, job_id: str, storage: StorageCalls) -> LoadedModel:
        """ArtifactMissing if a file is gone from the store; StorageRetryLater if the
        store does not give them (service.api.storage_calls)."""
        key = (settings.home, job_id)
        loaded = self._models.get(key)
        if loaded is not None:
            self._models.move_to_end(key)
            return loaded
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.ensure_future(_fetch_and_load(settings, job_id, storage))
            self._loading[key] = loading
            loading.add_done_callback(lambda done: self._loaded(key, done))
        # Shielded: a request that goes away leaves the load to the others.
        return await asyncio.shield(loading)

    def _loaded(self, key: tuple[Path, str], loading: asyncio.Future[LoadedModel]) -> None:
        del self._loading[key]
        if loading.cancelled() or loading.exception() is not None:
            return  # nothing kept: the next request loads it afresh
        self._models[key] = loading.result()
        while len(self._models) > self.capacity:
            self._models.popitem(last=False)


async def _fetch_and_load(settings: Settings, job_id: str, storage: StorageCalls) -> LoadedModel:
    card = await storage.job_file(settings, job_id, CARD)
    weights = await storage.job_file(settings, job_id, MODEL)
    return await run_in_threadpool(load, card, weights)  # torch's work, off the event loop


def load(card_file: Path, weights_file: Path) -> LoadedModel:
    """A model from its card and safetensors weights."""
    card: dict[str, Any] = json.loads(card_file.read_text())
    weights = weights_file.read_bytes()
    model = model_from_card(card)
    model.load_state_dict(load_safetensors(weights))
    return LoadedModel(
        model=model.float().eval(),
        input_shape=tuple(card["input_shape"]),
        class_names=list(card["class_names"]),
        # Models from before decision rules decide by argmax.
        bias=card.get("decision", {}).get("bias") or [0.0] * len(card["class_names"]),
        train_class_counts=card.get("train_class_counts"),
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


def check_priors(priors: list[float] | None, loaded: LoadedModel) -> None:
    if priors is None:
        return
    k = len(loaded.class_names)
    if len(priors) != k or not all(math.isfinite(p) and p > 0 for p in priors):
        raise PredictInputError(
            f"priors: expected {k} finite numbers > 0, one per class in the card's order "
            f"{loaded.class_names}; they need not sum to 1"
        )
    if loaded.train_class_counts is None:
        raise PredictInputError("priors: this model's card has no training class counts")


def predict(
    loaded: LoadedModel, batch: torch.Tensor, priors: list[float] | None = None
) -> list[dict[str, Any]]:
    """Per input: the class the job's decision rule picks (or, given `priors`, the most
    probable under them), its name and every class's probability under that rule."""
    check_priors(priors, loaded)
    with torch.inference_mode():
        logits = loaded.model(batch).double().numpy()
    decided = apply_decision(logits, loaded.bias, loaded.train_class_counts, priors)
    probabilities = torch.from_numpy(decided).softmax(dim=1).float()
    # argmax over probabilities, as the worker's evaluation does, so that ties break alike.
    classes = probabilities.argmax(dim=1).tolist()
    return [
        {"class": c, "name": loaded.class_names[c], "probabilities": p}
        for c, p in zip(classes, probabilities.tolist(), strict=True)
    ]
