"""Uploaded datasets: check an `.npz` (either layout), name its file, read it back.

An upload is untrusted bytes, read only through service.data.npz (no unpickling,
headers checked before data). `inspect_npz` is the one check for both layouts:
classification here, sequences in service.data.sequence_uploads. Files live under
<home>/datasets and are named by the server (`<id>.npz`); the client's filename is
kept for display only.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from counterweight.service.data.arrays import not_float32, shape_only
from counterweight.service.data.npz import (
    MAX_CLASSES,
    ArrayHeader,
    DatasetKind,
    UploadSummary,
    check_decompressed_size,
    check_keys,
    check_names,
    check_names_header,
    iter_values,
    open_npz,
    read_array,
    read_header,
)
from counterweight.service.data.sequence_uploads import inspect_sequences, is_sequence_upload
from counterweight.service.errors import DatasetError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("sample_weight", "class_names")
LAYOUTS = (
    "(N, D) float features, or (N, H, W) or (N, C, H, W) images with C = 1 or 3, "
    "uint8 0..255 or float in [0, 1]"
)
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def missing_upload(dataset_id: str) -> DatasetError:
    """What a job naming an upload that is not there, or not the caller's, gets (422)."""
    return DatasetError(
        f"dataset.id: no uploaded dataset {dataset_id!r}; upload one with POST /v1/datasets "
        "and use the id it returns"
    )


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays has no single truth value
class UploadArrays:
    """An upload as stored. x is float32 (features, or images in [0, 1]) or uint8 images
    (0..255); y is int64 in 0..k-1; sample_weight float32 aligned with x_train."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    sample_weight: np.ndarray | None
    class_names: list[str] | None


def uploads_dir(home: Path) -> Path:
    return home / "datasets"


def upload_path(home: Path, dataset_id: str) -> Path:
    return home / upload_key(dataset_id)


def upload_key(dataset_id: str) -> str:
    """The upload's key in the artifact store (service.storage), and its path under a home."""
    return f"datasets/{dataset_id}.npz"


def new_upload_file(home: Path) -> tuple[BinaryIO, Path]:
    """An empty temporary file beside the uploads, so that os.replace can publish it."""
    directory = uploads_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".incoming-", suffix=".npz")
    return os.fdopen(fd, "wb"), Path(name)


def inspect_npz(path: Path, max_array_bytes: int, max_vocabulary: int) -> UploadSummary:
    """Check an uploaded file against the accepted layouts (sequences: y_train (N, T), see
    service.data.sequence_uploads, whose word ids must be below `max_vocabulary`). Raises
    DatasetError naming the array at fault, or UploadTooLarge if its arrays would expand
    past `max_array_bytes`."""
    with open_npz(path) as archive:
        if is_sequence_upload(archive):
            return inspect_sequences(archive, max_array_bytes, max_vocabulary)
        keys = check_keys(archive, REQUIRED, OPTIONAL, "a classification upload")
        headers = {key: read_header(archive, key) for key in keys}
        kind = _check_layout(headers)
        check_decompressed_size(headers, max_array_bytes)
        class_names = None
        if "class_names" in headers:
            class_names = check_names(read_array(archive, "class_names"), "class_names", "class")
        y_train, y_test = read_array(archive, "y_train"), read_array(archive, "y_test")
        k = _num_classes(y_train, y_test, class_names)
        # In range now, so int64 holds them (bincount refuses uint64).
        y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)
        for name in ("x_train", "x_test"):
            _check_inputs(archive, name, headers[name], kind)
        if "sample_weight" in headers:
            _check_sample_weight(read_array(archive, "sample_weight"))
    return UploadSummary(
        kind=kind,
        shapes={key: list(header.shape) for key, header in headers.items()},
        class_counts={
            "train": np.bincount(y_train, minlength=k).tolist(),
            "test": np.bincount(y_test, minlength=k).tolist(),
        },
        num_classes=k,
        class_names=class_names,
        has_sample_weight="sample_weight" in headers,
    )


def _check_layout(headers: dict[str, ArrayHeader]) -> DatasetKind:
    """Shapes and dtypes, from the headers alone: cheap, before any data is read."""
    for split in ("train", "test"):
        x, y = headers[f"x_{split}"], headers[f"y_{split}"]
        if len(y.shape) != 1:
            raise DatasetError(f"y_{split} has shape {y.shape}; expected class labels, (N,)")
        if y.dtype.kind not in "iu":
            raise DatasetError(f"y_{split} has dtype {y.dtype}; expected integer labels 0..k-1")
        if len(x.shape) not in (2, 3, 4):
            raise DatasetError(f"x_{split} has shape {x.shape}; expected {LAYOUTS}")
        if x.shape[0] != y.shape[0]:
            raise DatasetError(
                f"y_{split} has {y.shape[0]} labels but x_{split} has {x.shape[0]} rows"
            )
        if 0 in x.shape:
            raise DatasetError(
                f"x_{split} has shape {x.shape}; it needs samples, none of them empty"
            )
    x_train, x_test = headers["x_train"], headers["x_test"]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(
            f"x_test has samples of shape {x_test.shape[1:]} but x_train has "
            f"{x_train.shape[1:]}; both splits must share one layout"
        )
    if x_train.dtype.kind != x_test.dtype.kind:
        raise DatasetError(
            f"x_test has dtype {x_test.dtype} but x_train has {x_train.dtype}; "
            "both splits must use the same encoding"
        )
    kind = DatasetKind.features if len(x_train.shape) == 2 else DatasetKind.images
    if kind is DatasetKind.features and x_train.dtype.kind != "f":
        raise DatasetError(f"x_train has dtype {x_train.dtype}; features (N, D) must be float")
    if kind is DatasetKind.images and x_train.dtype != np.uint8 and x_train.dtype.kind != "f":
        raise DatasetError(
            f"x_train has dtype {x_train.dtype}; images must be uint8 (0..255) or float in [0, 1]"
        )
    if len(x_train.shape) == 4 and x_train.shape[1] not in (1, 3):
        hint = "; it looks channel-last: transpose it" if x_train.shape[3] in (1, 3) else ""
        raise DatasetError(
            f"x_train has shape {x_train.shape}: images (N, C, H, W) must be channel-first "
            f"with C = 1 or 3{hint}"
        )
    if "sample_weight" in headers:
        weights, rows = headers["sample_weight"], x_train.shape[0]
        if weights.shape != (rows,):
            raise DatasetError(
                f"sample_weight has shape {weights.shape}; x_train has {rows} rows, "
                f"so it must have shape ({rows},)"
            )
        if weights.dtype.kind not in "iuf":
            raise DatasetError(f"sample_weight has dtype {weights.dtype}; expected numbers")
    if "class_names" in headers:
        check_names_header(headers["class_names"], "class_names", "class", "['cat', 'dog']")
    return kind


def _num_classes(y_train: np.ndarray, y_test: np.ndarray, class_names: list[str] | None) -> int:
    """k, from class_names or else the largest label + 1; every label must be in 0..k-1."""
    if class_names is not None:
        k, source = len(class_names), "k from class_names"
    else:
        k = min(int(max(y_train.max(), y_test.max())) + 1, MAX_CLASSES)
        source = f"without class_names, k is the largest label + 1, at most {MAX_CLASSES}"
        if k < 2:
            raise DatasetError(
                "y_train: only one class (0) in the data; classification needs 2 or more"
            )
    for name, y in (("y_train", y_train), ("y_test", y_test)):
        bad = np.flatnonzero((y < 0) | (y >= k))
        if bad.size:
            row = int(bad[0])
            raise DatasetError(
                f"{name} has label {int(y[row])} at row {row}; labels must be 0..{k - 1} ({source})"
            )
    return k


def _check_inputs(
    archive: np.lib.npyio.NpzFile, name: str, header: ArrayHeader, kind: DatasetKind
) -> None:
    """Every value of a float x is finite in float32 (training's type: float64 1e300 would
    be infinite there), and an image's in [0, 1]; read a chunk at a time."""
    if header.dtype.kind != "f":
        return  # uint8 images: every value is a valid pixel
    low, high = np.inf, -np.inf
    for start, values in iter_values(archive, name):
        bad = not_float32(values)
        if bad.any():
            raise DatasetError(
                f"{name} has NaN or infinite values, or values too large for float32, the "
                f"first in row {header.row_of(start + int(np.argmax(bad)))}; all values must "
                "be finite in float32"
            )
        low, high = min(low, float(values.min())), max(high, float(values.max()))
    if kind is DatasetKind.images and (low < 0 or high > 1):
        raise DatasetError(
            f"{name} holds float images with values from {low:g} to {high:g}; float "
            "images must be in [0, 1] (or send uint8 0..255)"
        )


def _check_sample_weight(weights: np.ndarray) -> None:
    bad = not_float32(weights) | (weights < 0)
    if bad.any():
        raise DatasetError(
            f"sample_weight has {int(bad.sum())} negative or non-finite values, the first at "
            f"row {int(np.argmax(bad))}; weights must be finite (in float32) and >= 0"
        )


def stored_upload(home: Path, dataset_id: str) -> Path:
    """The file of upload `dataset_id` under `home`; DatasetError if there is none."""
    # Only ids this service made name a file: nothing a client sends can reach elsewhere.
    path = upload_path(home, dataset_id)
    if not UPLOAD_ID.fullmatch(dataset_id) or not path.is_file():
        raise missing_upload(dataset_id)
    return path


def load_upload_arrays(home: Path, dataset_id: str, *, inputs: bool = True) -> UploadArrays:
    """An upload's arrays, from the file alone (workers need no database row for it).
    `inputs=False`: x_train and x_test are read from their headers only (shape_only), never
    decompressed. Raises DatasetError if there is no such upload."""
    with np.load(stored_upload(home, dataset_id), allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files if inputs or key[:2] != "x_"}
        if not inputs:
            for key in ("x_train", "x_test"):
                header = read_header(archive, key)
                dtype = np.uint8 if header.dtype == np.uint8 else np.float32
                arrays[key] = shape_only(header.shape, dtype)

    def as_inputs(x: np.ndarray) -> np.ndarray:
        return x if x.dtype == np.uint8 else x.astype(np.float32, copy=False)

    weights = arrays.get("sample_weight")
    names = arrays.get("class_names")
    return UploadArrays(
        x_train=as_inputs(arrays["x_train"]),
        y_train=arrays["y_train"].astype(np.int64, copy=False),
        x_test=as_inputs(arrays["x_test"]),
        y_test=arrays["y_test"].astype(np.int64, copy=False),
        sample_weight=None if weights is None else weights.astype(np.float32, copy=False),
        class_names=None if names is None else [str(name) for name in names],
    )
