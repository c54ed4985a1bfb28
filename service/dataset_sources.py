"""Where each dataset of DESIGN.md section 4 comes from. Nothing is ever downloaded.

- digits: scikit-learn's copy (always there). It has no official test split, so it
  gets a fixed one: a stratified 25% drawn with random_state 0, the same in every
  process and release. Float32 in [0, 1] (pixel / 16), (n, 1, 8, 8).
- mnist, fashion_mnist: read by torchvision from its raw idx files in
  <data root>/MNIST/raw and <data root>/FashionMNIST/raw. uint8, (n, 1, 28, 28).
- cifar10: read by torchvision from its python batches in
  <data root>/cifar-10-batches-py. uint8, (n, 3, 32, 32). These files are pickles:
  the data root is the operator's, never a client's (uploads live elsewhere and
  are never unpickled).
- image_folder: service.image_folder, under the data root.
- uploaded: service.uploads, under COUNTERWEIGHT_HOME/datasets. x as uploaded:
  (N, D) float32 features, (N, C, H, W) images, or (N, H, W) images given one
  channel here; uint8 0..255 or float32 in [0, 1].

Each dataset is decoded once per process and cached as read-only arrays, keyed by
a `Source`: the name, where it is read from, and a version that changes with the
content (file sizes and modification times; an upload's id, as uploads never
change). An edited folder is read again; an unchanged one never is.
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from service import image_folder
from service.dataset_arrays import BaseDataset, DatasetError
from service.spec import DatasetSpec
from service.uploads import load_upload_arrays

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0
# Decoded datasets a process keeps; CIFAR-10, the largest built-in, is 184 MB as uint8.
CACHED_DATASETS = 4
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Errors torchvision raises for files that are there but damaged; its idx reader checks
# the format with assert statements.
_UNREADABLE = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    RuntimeError,
    AssertionError,
    pickle.UnpicklingError,
)
_decoding = threading.Lock()


@dataclass(frozen=True)
class TorchvisionLayout:
    """Where torchvision keeps a dataset under its root, in torchvision's own layout."""

    title: str  # how torchvision's documentation names it
    folder: str  # relative to the data root
    files: tuple[str, ...]


TORCHVISION_LAYOUTS = {
    "mnist": TorchvisionLayout("MNIST", "MNIST/raw", _IDX_FILES),
    "fashion_mnist": TorchvisionLayout("FashionMNIST", "FashionMNIST/raw", _IDX_FILES),
    "cifar10": TorchvisionLayout(
        "CIFAR-10",
        "cifar-10-batches-py",
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
    ),
}


def expected_files(name: str, data_root: Path) -> list[Path]:
    """The files a torchvision dataset needs under `data_root` (none for digits)."""
    layout = TORCHVISION_LAYOUTS.get(name)
    if layout is None:
        return []
    return [data_root / layout.folder / file for file in layout.files]


@dataclass(frozen=True)
class Source:
    """What identifies a dataset's content: equal sources, equal arrays."""

    name: str
    location: Path  # the data root it is read from (an upload: the home)
    version: tuple[object, ...]  # changes when the content does
    label: str = ""  # how messages name it: dataset.path or the upload id


def locate(dataset: DatasetSpec, data_root: Path, home: Path) -> Source:
    """Where `dataset` is and which version of it; cheap (a few stat calls), and raises
    DatasetError naming what is missing."""
    if dataset.name == "digits":
        return Source("digits", Path("."), ())
    if dataset.name == "uploaded":
        assert dataset.id is not None  # the spec requires it for uploaded
        return Source("uploaded", home.resolve(), (dataset.id,), dataset.id)
    if dataset.name == "image_folder":
        assert dataset.path is not None  # the spec requires it for image_folder
        folder = image_folder.locate(data_root, dataset.path)
        version = (str(folder), *image_folder.content_version(folder))
        return Source("image_folder", data_root.resolve(), version, dataset.path)
    layout = TORCHVISION_LAYOUTS[dataset.name]
    files = expected_files(dataset.name, data_root)
    if not all(file.is_file() for file in files):
        raise DatasetError(
            f"dataset.name: {dataset.name} is not available: expected torchvision's "
            f"{layout.title} files ({', '.join(layout.files)}) in {data_root / layout.folder}"
        )
    stats = [file.stat() for file in files]
    return Source(
        dataset.name, data_root.resolve(), tuple((s.st_size, s.st_mtime_ns) for s in stats)
    )


@lru_cache(maxsize=CACHED_DATASETS)
def decode(source: Source) -> BaseDataset:
    """The dataset `source` names, decoded; cached, so only the first call decodes."""
    if source.name == "digits":
        return _digits()
    if source.name == "uploaded":
        return _upload(source.location, source.label)
    if source.name == "image_folder":
        return image_folder.read_image_folder(source.location, source.label)
    layout = TORCHVISION_LAYOUTS[source.name]
    try:
        if source.name == "cifar10":
            return _cifar10(source.location)
        return _mnist(source.name, source.location)
    except _UNREADABLE as exc:
        raise DatasetError(
            f"dataset.name: cannot read {source.name} from {source.location / layout.folder}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def load_base(dataset: DatasetSpec, data_root: Path, home: Path) -> BaseDataset:
    """`dataset` as stored, from the cache if its content has not changed."""
    source = locate(dataset, data_root, home)
    # One decode at a time: the API serves requests on many threads, and a burst of
    # submits naming a dataset not yet cached must decode it once, not once per request.
    with _decoding:
        return decode(source)


def _digits() -> BaseDataset:
    # Imported here: scikit-learn's dataset module is slow to import and only digits needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    return BaseDataset(x_train, y_train, x_test, y_test, [str(c) for c in range(10)])


def _mnist(name: str, root: Path) -> BaseDataset:
    # torchvision is imported on use: most API requests never need it.
    from torchvision.datasets import MNIST, FashionMNIST

    kind = MNIST if name == "mnist" else FashionMNIST
    train = kind(str(root), train=True, download=False)
    test = kind(str(root), train=False, download=False)
    # MNIST's classes are its digits, named like digits'; FashionMNIST's are garments.
    names = [str(d) for d in range(10)] if name == "mnist" else list(kind.classes)
    return BaseDataset(
        x_train=train.data.numpy()[:, None],
        y_train=train.targets.numpy().astype(np.int64),
        x_test=test.data.numpy()[:, None],
        y_test=test.targets.numpy().astype(np.int64),
        class_names=names,
    )


def _cifar10(root: Path) -> BaseDataset:
    from torchvision.datasets import CIFAR10

    class UnverifiedCIFAR10(CIFAR10):  # type: ignore[misc]  # torchvision is untyped
        # torchvision checks each file's md5 against the official release on every load
        # (reading 180 MB); an operator's copy is trusted as it is, so that any set of
        # files in CIFAR-10's layout can be served, tests' small ones included.
        train_list: ClassVar = [[file, None] for file, _ in CIFAR10.train_list]
        test_list: ClassVar = [[file, None] for file, _ in CIFAR10.test_list]
        meta: ClassVar = {**CIFAR10.meta, "md5": None}

    train = UnverifiedCIFAR10(str(root), train=True, download=False)
    test = UnverifiedCIFAR10(str(root), train=False, download=False)
    return BaseDataset(
        # torchvision gives (n, H, W, C); every dataset here is channel-first.
        x_train=np.ascontiguousarray(train.data.transpose(0, 3, 1, 2)),
        y_train=np.asarray(train.targets, dtype=np.int64),
        x_test=np.ascontiguousarray(test.data.transpose(0, 3, 1, 2)),
        y_test=np.asarray(test.targets, dtype=np.int64),
        class_names=[str(name) for name in train.classes],
    )


def _upload(home: Path, dataset_id: str) -> BaseDataset:
    arrays = load_upload_arrays(home, dataset_id)
    if arrays.y_train.ndim != 1:
        raise DatasetError(
            f"dataset.id: upload {dataset_id} holds sequences (y_train of shape "
            f"{arrays.y_train.shape}); train on it with task sequence_labeling"
        )

    def channel_first(x: np.ndarray) -> np.ndarray:
        return x[:, None] if x.ndim == 3 else x  # (N, H, W): one channel

    k = int(max(arrays.y_train.max(), arrays.y_test.max())) + 1
    return BaseDataset(
        x_train=channel_first(arrays.x_train),
        y_train=arrays.y_train,
        x_test=channel_first(arrays.x_test),
        y_test=arrays.y_test,
        class_names=arrays.class_names or [str(c) for c in range(k)],
        sample_weight=arrays.sample_weight,
    )
