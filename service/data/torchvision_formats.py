"""torchvision's on-disk datasets, read with numpy: where each lies under the data root,
MNIST's idx files, and CIFAR-10's python batches.

Reading them here rather than through torchvision keeps torch out of the API process:
the API splits a job's data at submit time, and importing torchvision imports torch
(about 1 GB and seconds of start-up) for what is a few lines of file parsing.

CIFAR-10's batches are pickles. The data root is the operator's, never a client's
(uploads live elsewhere and are never unpickled); still, a pickle can name any
function to call, so they are read with an unpickler that resolves only what a
pickled numpy array needs and refuses every other name before anything runs.
"""

from __future__ import annotations

import importlib
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from counterweight.service.data.arrays import BaseDataset

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_META = "batches.meta"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# What a pickled numpy array is rebuilt from: its class, its dtype and numpy's two
# reconstructors (pickle protocols 2-4, and 5). numpy 2 moved numpy.core to numpy._core;
# files written before name the old place. Python 3 writes bytes into a protocol 2
# pickle as a call of _codecs.encode (a str to bytes, nothing more).
ARRAY_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


@dataclass(frozen=True)
class TorchvisionLayout:
    """Where torchvision keeps a dataset under its root, in torchvision's own layout."""

    title: str  # how torchvision's documentation names it
    folder: str  # relative to the data root
    files: tuple[str, ...]


TORCHVISION_LAYOUTS = {
    "mnist": TorchvisionLayout("MNIST", "MNIST/raw", IDX_FILES),
    "fashion_mnist": TorchvisionLayout("FashionMNIST", "FashionMNIST/raw", IDX_FILES),
    "cifar10": TorchvisionLayout(
        "CIFAR-10", "cifar-10-batches-py", (*CIFAR10_BATCHES, "test_batch", CIFAR10_META)
    ),
}


def expected_files(name: str, data_root: Path) -> list[Path]:
    """The files a torchvision dataset needs under `data_root` (none for digits)."""
    layout = TORCHVISION_LAYOUTS.get(name)
    if layout is None:
        return []
    return [data_root / layout.folder / file for file in layout.files]


def read_idx(path: Path, ndim: int) -> npt.NDArray[np.uint8]:
    """An idx file of uint8 values (MNIST's): the bytes 0, 0, 0x08 (uint8) and the number
    of dimensions, each dimension as a big-endian int32, then the values, row-major.
    Raises ValueError for anything else."""
    raw = path.read_bytes()
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes([0, 0, 0x08, ndim]):
        raise ValueError(f"{path.name} is not an idx file of {ndim}-dimensional uint8 values")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if len(raw) - header != math.prod(shape):
        raise ValueError(f"{path.name} holds {len(raw) - header} values; its header says {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_mnist(name: str, data_root: Path) -> BaseDataset:
    """mnist or fashion_mnist: images (n, 1, 28, 28) uint8. MNIST's classes are its
    digits, named like digits'; FashionMNIST's are garments, named as torchvision names
    them. Raises ValueError for a damaged file."""
    raw = data_root / TORCHVISION_LAYOUTS[name].folder
    arrays: dict[str, npt.NDArray[Any]] = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(raw / f"{prefix}-images-idx3-ubyte", 3)
        labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte", 1)
        if len(images) != len(labels):
            raise ValueError(f"{prefix}: {len(images)} images but {len(labels)} labels")
        arrays[f"x_{split}"], arrays[f"y_{split}"] = images[:, None], labels.astype(np.int64)
    names = [str(d) for d in range(10)] if name == "mnist" else list(FASHION_MNIST_CLASSES)
    return BaseDataset(
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], class_names=names
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and numpy arrays; any other global in the
    file is refused (UnpicklingError) instead of imported and called."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("numpy.core."):
            module = "numpy._core." + module.removeprefix("numpy.core.")
        if (module, name) not in ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a numpy array")
        return getattr(importlib.import_module(module), name)


def _load_batch(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        # latin1: the official files are Python 2 pickles, whose byte strings hold the pixels.
        loaded = _ArrayUnpickler(file, encoding="latin1").load()
    if not isinstance(loaded, dict):
        raise ValueError(f"{path.name} does not hold a dict")
    return loaded


def read_cifar10(data_root: Path) -> BaseDataset:
    """Images (n, 3, 32, 32) uint8 from the python batches: each a dict of `data`, (n, 3072)
    rows of 1024 red, 1024 green and 1024 blue values, and `labels`; batches.meta has
    `label_names`. Raises ValueError (or pickle's errors) for a damaged file."""
    folder = data_root / TORCHVISION_LAYOUTS["cifar10"].folder
    arrays: dict[str, npt.NDArray[Any]] = {}
    for split, files in (("train", CIFAR10_BATCHES), ("test", ("test_batch",))):
        batches = [_load_batch(folder / file) for file in files]
        data = np.vstack([np.asarray(batch["data"], dtype=np.uint8) for batch in batches])
        labels = [label for batch in batches for label in batch["labels"]]
        if len(data) != len(labels) or data.shape[1:] != (3 * 32 * 32,):
            raise ValueError(f"{split}: {data.shape} pixels for {len(labels)} labels")
        arrays[f"x_{split}"] = data.reshape(-1, 3, 32, 32)
        arrays[f"y_{split}"] = np.asarray(labels, dtype=np.int64)
    names = [str(name) for name in _load_batch(folder / CIFAR10_META)["label_names"]]
    return BaseDataset(
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], class_names=names
    )
