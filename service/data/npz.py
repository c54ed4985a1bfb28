"""Reading an untrusted `.npz` safely: the primitives both upload layouts' checks share
(service.data.uploads for classification, service.data.sequence_uploads for sequences),
and the summary either check returns.

The file is opened only with `np.load(allow_pickle=False)`, and each array's `.npy`
header (dtype and shape) is read before its data, so an object array (which would
need unpickling) or a shape that would expand past the cap is refused before
anything is unpickled or allocated. Every refusal is a DatasetError (HTTP 422)
naming the array at fault, or UploadTooLarge (HTTP 413).
"""

from __future__ import annotations

import enum
import math
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from counterweight.service.errors import DatasetError, UploadTooLarge

PICKLED = "the file holds pickled objects; only plain numeric arrays are accepted"
# Without names, k is the largest label + 1: a stray huge label must not make k huge.
MAX_CLASSES = 10_000
# How much of an array a check holds in memory at once (iter_values).
CHUNK_BYTES = 4 * 2**20
# Errors that reading a damaged or truncated zip member can raise.
UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


class DatasetKind(enum.StrEnum):
    features = "features"  # x is (N, D) float
    images = "images"  # x is (N, H, W) or (N, C, H, W), uint8 0..255 or float in [0, 1]
    sequences = "sequences"  # x is (N, T) word ids, 0 = padding; y is (N, T) tag ids


@dataclass(frozen=True)
class UploadSummary:
    """What an upload's checks found; its row in the database records it."""

    kind: DatasetKind
    shapes: dict[str, list[int]]
    class_counts: dict[str, list[int]]
    num_classes: int
    class_names: list[str] | None
    has_sample_weight: bool


@dataclass(frozen=True)
class ArrayHeader:
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool = False

    def row_of(self, flat_index: int) -> int:
        """The row (first index) of the value at `flat_index` in storage order."""
        if self.fortran_order:
            return flat_index % self.shape[0]
        return flat_index // max(1, math.prod(self.shape[1:]))


@contextmanager
def open_npz(path: Path) -> Iterator[np.lib.npyio.NpzFile]:
    # The file is opened here, not by np.load: np.load leaks its handle when the zip is bad.
    with path.open("rb") as file:
        magic = file.read(6)
        file.seek(0)
        if magic.startswith(b"\x93NUMPY"):
            raise DatasetError("file: this is a single .npy array; send an .npz (numpy.savez)")
        if magic.startswith(b"\x80"):  # the pickle protocol 2+ opcode
            raise DatasetError(f"file: {PICKLED}")
        if not magic.startswith(b"PK"):
            raise DatasetError("file: not an .npz archive (numpy.savez writes one)")
        try:
            archive = np.load(file, allow_pickle=False)
        except UNREADABLE as exc:
            raise DatasetError(f"file: the .npz archive is corrupted or truncated ({exc})") from exc
        assert isinstance(archive, np.lib.npyio.NpzFile)  # a zip always loads as one
        with archive:
            yield archive


def check_keys(
    archive: np.lib.npyio.NpzFile, required: Sequence[str], optional: Sequence[str], layout: str
) -> list[str]:
    """The archive's array names, if it has every required one and nothing else but
    optional ones; `layout` names what was expected ("a classification upload")."""
    keys = list(archive.files)
    expected = f"{', '.join(required)} and optionally {', '.join(optional)}"
    unknown = sorted(set(keys) - set(required) - set(optional))
    if unknown:
        raise DatasetError(f"{unknown[0]}: not an array {layout} may hold; expected {expected}")
    missing = [key for key in required if key not in keys]
    if missing:
        raise DatasetError(
            f"{missing[0]}: missing from the .npz (it holds {sorted(keys)}); {layout} needs "
            f"{expected}"
        )
    return keys


def read_header(archive: np.lib.npyio.NpzFile, key: str) -> ArrayHeader:
    """The dtype and shape of one array, read without reading (or unpickling) its data."""
    assert archive.zip is not None  # set while the archive is open
    try:
        with archive.zip.open(f"{key}.npy") as member:
            header = _member_header(member)
    except KeyError as exc:
        raise DatasetError(f"{key}: not a .npy array inside the .npz") from exc
    except UNREADABLE as exc:
        raise DatasetError(f"{key}: cannot be read, the file is corrupted ({exc})") from exc
    if header.dtype.hasobject:
        raise DatasetError(f"{key}: {PICKLED}")
    if header.dtype.names is not None:
        raise DatasetError(f"{key} has a structured dtype {header.dtype}; expected plain numbers")
    return header


def _member_header(member: Any) -> ArrayHeader:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f".npy format version {version} is not supported")
    return ArrayHeader(tuple(int(d) for d in shape), dtype, bool(fortran_order))


def iter_values(
    archive: np.lib.npyio.NpzFile, key: str, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[int, np.ndarray]]:
    """An array's values in storage order, a chunk at a time, each with the flat index of
    its first value: a check of every value holds one chunk, not the array (a small
    compressed file can expand to gigabytes). Call read_header first."""
    assert archive.zip is not None  # set while the archive is open
    try:
        with archive.zip.open(f"{key}.npy") as member:
            header = _member_header(member)
            itemsize = header.dtype.itemsize
            total, per_chunk = math.prod(header.shape), max(1, chunk_bytes // itemsize)
            for start in range(0, total, per_chunk):
                count = min(per_chunk, total - start)
                data = member.read(count * itemsize)
                if len(data) != count * itemsize:
                    raise EOFError(f"{key} ends after {start + len(data) // itemsize} values")
                yield start, np.frombuffer(data, dtype=header.dtype)
    except UNREADABLE as exc:
        raise DatasetError(
            f"{key}: cannot be read, the file is corrupted or truncated ({exc})"
        ) from exc


def read_array(archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        array: np.ndarray = archive[key]
    except UNREADABLE as exc:
        raise DatasetError(
            f"{key}: cannot be read, the file is corrupted or truncated ({exc})"
        ) from exc
    return array


def check_decompressed_size(headers: dict[str, ArrayHeader], max_array_bytes: int) -> None:
    """Refuse arrays that would expand past the cap, from their headers alone (a small
    compressed file can expand to any size)."""
    total = sum(h.dtype.itemsize * int(np.prod(h.shape)) for h in headers.values())
    if total > max_array_bytes:
        raise UploadTooLarge(
            f"the arrays take {total} bytes once decompressed; the limit is "
            f"{max_array_bytes} bytes (COUNTERWEIGHT_MAX_UPLOAD_ARRAY_BYTES)"
        )


def check_names_header(header: ArrayHeader, field: str, what: str, example: str) -> None:
    """A names array (class_names, tag_names) is 1-D strings, from its header alone."""
    if len(header.shape) != 1 or header.dtype.kind != "U":
        raise DatasetError(
            f"{field} has shape {header.shape} and dtype {header.dtype}; expected a 1-D "
            f"array of strings, one per {what}, e.g. numpy.array({example})"
        )


def check_names(array: np.ndarray, field: str, what: str, most: int = MAX_CLASSES) -> list[str]:
    """A names array (class_names, tag_names): distinct, non-empty, 2..`most` of them."""
    names = [str(name) for name in array]
    first_of: dict[str, int] = {}
    faults = []  # by index, not the name: a name may be as long as the file allows
    for index, name in enumerate(names):
        if "\x00" in name or not _encodable(name):
            raise DatasetError(
                f"{field}[{index}] holds a NUL character or a lone surrogate; names must be "
                "plain text"
            )
        first = first_of.setdefault(name, index)
        if name == "":
            faults.append(f"{field}[{index}] is empty")
        elif first != index:
            faults.append(f"{field}[{index}] repeats {field}[{first}]")
    if faults or not 2 <= len(names) <= most:
        raise DatasetError(
            f"{field} has {len(names)} names; expected one distinct, non-empty name "
            f"per {what}, 2 to {most} of them" + (f" ({faults[0]})" if faults else "")
        )
    return names


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
