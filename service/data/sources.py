"""Where each dataset of DESIGN.md section 4 comes from. Nothing is ever downloaded.

- digits: scikit-learn's copy (always there). It has no official test split, so it
  gets a fixed one: a stratified 25% drawn with random_state 0, the same in every
  process and release. Float32 in [0, 1] (pixel / 16), (n, 1, 8, 8).
- mnist, fashion_mnist: torchvision's raw idx files in <data root>/MNIST/raw and
  <data root>/FashionMNIST/raw. uint8, (n, 1, 28, 28).
- cifar10: torchvision's python batches in <data root>/cifar-10-batches-py. uint8,
  (n, 3, 32, 32). Both read with numpy (service.data.torchvision_formats), so that
  the API never imports torch.
- image_folder: service.data.image_folder, under the data root.
- uploaded: service.data.uploads, under COUNTERWEIGHT_HOME/datasets. x as uploaded:
  (N, D) float32 features, (N, C, H, W) images, or (N, H, W) images given one
  channel here; uint8 0..255 or float32 in [0, 1].

Each dataset is decoded once per process and cached as read-only arrays, keyed by
a `Source`: the name, where it is read from, and a version that changes with the
content (file sizes and modification times; an upload's id, as uploads never
change). An edited folder is read again; an unchanged one never is. The cache is
bounded in bytes (service.data.cache). The API asks for labels only (`inputs=False`):
it checks specs against labels and shapes, so it never keeps a dataset's inputs, and
never even decompresses an upload's.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from counterweight.service.data import image_folder
from counterweight.service.data.arrays import BaseDataset
from counterweight.service.data.cache import BytesBoundedCache
from counterweight.service.data.paths import without_roots
from counterweight.service.data.torchvision_formats import (
    TORCHVISION_LAYOUTS,
    expected_files,
    read_cifar10,
    read_mnist,
)
from counterweight.service.data.uploads import load_upload_arrays
from counterweight.service.errors import DatasetError
from counterweight.service.settings import get_settings
from counterweight.service.spec import DatasetSpec

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0
# What reading a file that is there but damaged can raise.
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, TypeError, pickle.UnpicklingError)


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
            f"{layout.title} files ({', '.join(layout.files)}) in {layout.folder} under the "
            "data root"
        )
    stats = [file.stat() for file in files]
    return Source(
        dataset.name, data_root.resolve(), tuple((s.st_size, s.st_mtime_ns) for s in stats)
    )


@cache
def dataset_cache() -> BytesBoundedCache[BaseDataset]:
    """This process's decoded datasets (COUNTERWEIGHT_DATASET_CACHE_BYTES)."""
    # CIFAR-10, the largest built-in, is 184 MB as uint8.
    return BytesBoundedCache(get_settings().dataset_cache_bytes, lambda d: d.held_bytes)


def decode(source: Source, *, inputs: bool = True) -> BaseDataset:
    """The dataset `source` names, decoded (uncached: see load_base)."""
    if source.name == "digits":
        return _digits()
    if source.name == "uploaded":
        return _upload(source.location, source.label, inputs=inputs)
    if source.name == "image_folder":
        return image_folder.read_image_folder(source.location, source.label)
    layout = TORCHVISION_LAYOUTS[source.name]
    try:
        if source.name == "cifar10":
            return read_cifar10(source.location)
        return read_mnist(source.name, source.location)
    except _UNREADABLE as exc:
        # An OSError's message names the file as opened: relative to the root, as above.
        reason = without_roots(f"{type(exc).__name__}: {exc}", source.location)
        raise DatasetError(
            f"dataset.name: cannot read {source.name} from {layout.folder} under the data "
            f"root: {reason}"
        ) from exc


def load_base(
    dataset: DatasetSpec, data_root: Path, home: Path, *, inputs: bool = True
) -> BaseDataset:
    """`dataset` as stored, from the cache if its content has not changed. `inputs=False`:
    labels, weights, class names and the inputs' shape, without the inputs."""
    source = locate(dataset, data_root, home)

    def load() -> BaseDataset:
        base = decode(source, inputs=inputs)
        return base if inputs else base.without_inputs()

    return dataset_cache().get((source, inputs), load)


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


def _upload(home: Path, dataset_id: str, *, inputs: bool) -> BaseDataset:
    arrays = load_upload_arrays(home, dataset_id, inputs=inputs)
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
