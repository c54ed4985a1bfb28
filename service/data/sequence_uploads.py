"""Uploaded sequence datasets (task sequence_labeling): checking the `.npz` on upload.

An upload is read as sequences when its y_train is 2-D (one tag per timestep), or
when it holds an array only sequences have (chars_train, chars_test, tag_names):

- x_train (N, T), x_test (M, T'): integer word ids, 0 = padding. Padding comes after
  a sentence's words, and every sentence has at least one word. The tagger's word
  embeddings have a row per id up to the largest, so ids are capped
  (COUNTERWEIGHT_MAX_VOCABULARY), and character ids at MAX_CHAR_ID.
- y_train (N, T), y_test (M, T'): integer tag ids 0..k-1 at the words; the values at
  padding steps are never read (0 or -100 alike).
- chars_train (N, T, C), chars_test (M, T', C'): optional, both or neither: character
  ids of each word, 0 = padding.
- sample_weight: optional, (N,) one weight per sentence or (N, T) one per step. As
  with tags, the values at padding steps are never read (padding weighs 0), so any
  number may fill them; at the words they must be finite and >= 0.
- tag_names: optional 1-D strings, one per tag; else k is the largest tag + 1.

The same rules as every upload hold (service.data.npz): opened without unpickling,
headers checked before any data is read, sizes capped.
"""

from __future__ import annotations

import numpy as np

from counterweight.service.data.arrays import not_float32
from counterweight.service.data.npz import (
    ArrayHeader,
    DatasetKind,
    UploadSummary,
    check_decompressed_size,
    check_keys,
    check_names,
    check_names_header,
    read_array,
    read_header,
)
from counterweight.service.errors import DatasetError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("chars_train", "chars_test", "sample_weight", "tag_names")
ONLY_SEQUENCES = ("chars_train", "chars_test", "tag_names")
# Embedding tables are sized by the largest id: a stray huge id must not make them huge.
# Word ids are capped by a setting (max_vocabulary); characters by Unicode's basic plane.
MAX_CHAR_ID = 65_535
MAX_TAGS = 1_000


def is_sequence_upload(archive: np.lib.npyio.NpzFile) -> bool:
    """Whether the archive is meant as sequences (see the module docstring)."""
    if any(key in archive.files for key in ONLY_SEQUENCES):
        return True
    return "y_train" in archive.files and len(read_header(archive, "y_train").shape) == 2


def inspect_sequences(
    archive: np.lib.npyio.NpzFile, max_array_bytes: int, max_vocabulary: int
) -> UploadSummary:
    """Check a sequence upload; raises DatasetError naming the array and its shape (or a
    word id of `max_vocabulary` or more), or UploadTooLarge if the arrays would expand past
    `max_array_bytes`."""
    keys = _keys(archive)
    headers = {key: read_header(archive, key) for key in keys}
    _check_shapes(headers)
    check_decompressed_size(headers, max_array_bytes)
    tag_names = None
    if "tag_names" in headers:
        check_names_header(headers["tag_names"], "tag_names", "tag", "['O', 'B-PER', 'I-PER']")
        tag_names = check_names(read_array(archive, "tag_names"), "tag_names", "tag", MAX_TAGS)
    tags = {}
    for split in ("train", "test"):
        words = read_array(archive, f"x_{split}")
        _check_words(f"x_{split}", words, max_vocabulary)
        if f"chars_{split}" in headers:
            chars = read_array(archive, f"chars_{split}")
            _check_ids(f"chars_{split}", chars, MAX_CHAR_ID, "character ids")
        tags[split] = np.ma.masked_array(read_array(archive, f"y_{split}"), mask=words == 0)
    k = _num_tags(tags, tag_names)
    if "sample_weight" in headers:
        padding = np.ma.getmaskarray(tags["train"])
        _check_sample_weight(read_array(archive, "sample_weight"), padding)
    return UploadSummary(
        kind=DatasetKind.sequences,
        shapes={key: list(header.shape) for key, header in headers.items()},
        # Tokens per tag, padding never counted.
        class_counts={
            split: np.bincount(y.compressed(), minlength=k).tolist() for split, y in tags.items()
        },
        num_classes=k,
        class_names=tag_names,
        has_sample_weight="sample_weight" in headers,
    )


def _keys(archive: np.lib.npyio.NpzFile) -> list[str]:
    keys = check_keys(archive, REQUIRED, OPTIONAL, "a sequence upload")
    if ("chars_train" in keys) != ("chars_test" in keys):
        given, absent = ("chars_train", "chars_test")[:: 1 if "chars_train" in keys else -1]
        raise DatasetError(f"{absent}: missing; {given} is given, so the model reads characters")
    return keys


def _check_shapes(headers: dict[str, ArrayHeader]) -> None:
    """Shapes and dtypes, from the headers alone: cheap, before any data is read."""
    for split in ("train", "test"):
        x, y = headers[f"x_{split}"], headers[f"y_{split}"]
        if len(x.shape) != 2 or 0 in x.shape:
            raise DatasetError(
                f"x_{split} has shape {x.shape}; sequences need word ids of shape (N, T), "
                "0 = padding"
            )
        if y.shape != x.shape:
            raise DatasetError(
                f"y_{split} has shape {y.shape} but x_{split} has {x.shape}; each word needs "
                "a tag: the shapes must be equal"
            )
        for name in (f"x_{split}", f"y_{split}", f"chars_{split}"):
            if name in headers and headers[name].dtype.kind not in "iu":
                raise DatasetError(f"{name} has dtype {headers[name].dtype}; expected integer ids")
        chars = headers.get(f"chars_{split}")
        if chars is not None and (len(chars.shape) != 3 or chars.shape[:2] != x.shape):
            raise DatasetError(
                f"chars_{split} has shape {chars.shape}; expected (N, T, C) = "
                f"({x.shape[0]}, {x.shape[1]}, C): the character ids of each word of x_{split}"
            )
    if "sample_weight" in headers:
        weights, (n, t) = headers["sample_weight"], headers["x_train"].shape
        if weights.shape not in ((n,), (n, t)):
            raise DatasetError(
                f"sample_weight has shape {weights.shape}; accepted: ({n},), one weight per "
                f"sentence of x_train, or ({n}, {t}), one per step"
            )
        if weights.dtype.kind not in "iuf":
            raise DatasetError(f"sample_weight has dtype {weights.dtype}; expected numbers")


def _check_sample_weight(weights: np.ndarray, padding: np.ndarray) -> None:
    """Finite (in float32) and >= 0 where read: every sentence's weight (N,), or the
    weights at the words (N, T); padding steps weigh 0 whatever they hold."""
    bad = not_float32(weights) | (weights < 0)
    if weights.ndim == 2:
        bad &= ~padding
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DatasetError(
            f"sample_weight has {int(bad.sum())} negative or non-finite values, the first "
            f"at {list(first)}; weights must be finite (in float32) and >= 0 (at padding "
            "steps, which weigh 0, any number is accepted)"
        )


def _check_ids(name: str, ids: np.ndarray, largest: int, what: str, why: str = "") -> None:
    bad = np.argwhere((ids < 0) | (ids > largest))
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        raise DatasetError(
            f"{name} has id {int(ids[where])} at {list(where)}; {what} must be 0..{largest} "
            f"(0 = padding){why}"
        )


def _check_words(name: str, words: np.ndarray, max_vocabulary: int) -> None:
    why = (
        f": the word embeddings have a row per id, and this service takes at most "
        f"{max_vocabulary} of them (COUNTERWEIGHT_MAX_VOCABULARY)"
    )
    _check_ids(name, words, max_vocabulary - 1, "word ids", why)
    real = words != 0
    empty = np.flatnonzero(~real.any(axis=1))
    if empty.size:
        raise DatasetError(
            f"{name} row {int(empty[0])} is all padding (0); every sentence needs a word"
        )
    # Words after padding: the padding is inside the sentence, not after it.
    gaps = np.argwhere(~real[:, :-1] & real[:, 1:])
    if gaps.size:
        row, step = (int(i) for i in gaps[0])
        raise DatasetError(
            f"{name} row {row} has padding (0) at step {step} and a word after it; padding "
            "must come after a sentence's words (give unknown words an id of their own)"
        )


def _num_tags(tags: dict[str, np.ma.MaskedArray], tag_names: list[str] | None) -> int:
    """k, from tag_names or else the largest tag + 1; every word's tag must be in 0..k-1.
    `tags` are y_train and y_test with their padding steps masked."""
    if tag_names is not None:
        k, source = len(tag_names), "k from tag_names"
    else:
        k = min(max(int(y.max()) for y in tags.values()) + 1, MAX_TAGS)
        source = f"without tag_names, k is the largest tag + 1, at most {MAX_TAGS}"
        if k < 2:
            raise DatasetError("y_train: only one tag (0) in the data; tagging needs 2 or more")
    for split, y in tags.items():
        bad = np.argwhere(np.ma.filled((y < 0) | (y >= k), False))
        if bad.size:
            row, step = (int(i) for i in bad[0])
            raise DatasetError(
                f"y_{split} has tag {int(y[row, step])} at row {row}, step {step}; tags must "
                f"be 0..{k - 1} ({source})"
            )
    return k
