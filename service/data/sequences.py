"""A sequence labeling job's data: an uploaded sequence dataset as train / val / test.

numpy only (no torch): the API checks a spec against its data at submit time with
the same code the worker trains with. The upload's layout: service.data.sequence_uploads.

- The validation split is `dataset.val_fraction` of the training sentences (rounded
  up, at least one, and at least one left to train on), drawn at random with a fixed
  seed: every job on an upload validates on the same sentences. No imbalance
  profile applies (whole sentences hold many tags), and the test split is kept whole.
- `sample_weight` (inline, or an upload's with "from_dataset") is (N,), one weight
  per stored training sentence, broadcast to every step of it, or (N, T), one per
  step. Padding steps weigh 0 whatever was given for them: their values are never read
  (nor checked), as their tags are not.
- Tags at padding steps are stored as 0 here, so that they index any per-tag table;
  the padding mask (word id 0) is what keeps them out of every loss and metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from counterweight.service.data.arrays import Floats, Labels, Rows
from counterweight.service.data.cache import BytesBoundedCache
from counterweight.service.data.splits import checked_sample_weight, given_sample_weight
from counterweight.service.data.uploads import stored_upload, upload_path
from counterweight.service.errors import DatasetError
from counterweight.service.settings import get_settings
from counterweight.service.spec import JobSpec

Ids = npt.NDArray[np.int64]
VALIDATION_SEED = (0, 2)  # the seed and stream of classification's validation split


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays has no single truth value
class Sentences:
    """Sentences of one split: word ids (n, T), 0 = padding; character ids (n, T, C) or
    None; tags (n, T), 0 at padding."""

    words: Ids
    chars: Ids | None
    tags: Labels

    @property
    def mask(self) -> npt.NDArray[np.bool_]:
        real: npt.NDArray[np.bool_] = self.words != 0
        return real

    @property
    def tokens(self) -> Labels:
        """The tag of every word, padding left out, in row-major order."""
        return self.tags[self.mask]

    def rows(self, rows: Rows) -> Sentences:
        return Sentences(
            self.words[rows], None if self.chars is None else self.chars[rows], self.tags[rows]
        )


@dataclass(frozen=True, eq=False)
class SequenceUpload:
    """An upload as stored; shared by every job of a process, so read-only."""

    train: Sentences
    test: Sentences
    tag_names: list[str]
    vocab_size: int  # largest word id + 1
    char_vocab_size: int  # largest character id + 1; 0 without characters
    sample_weight: Floats | None  # the file's own, (N,) or (N, T)


@dataclass(frozen=True, eq=False)
class SequenceSplits:
    train: Sentences
    val: Sentences
    test: Sentences
    class_names: list[str]  # the tags
    vocab_size: int
    char_vocab_size: int
    # (n_train, T), aligned with train; 0 at padding. None when the spec gives none.
    sample_weight: Floats | None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train_class_counts(self) -> list[int]:
        """Training tokens per tag, padding never counted."""
        return self.counts["train"]

    @property
    def counts(self) -> dict[str, list[int]]:
        k = self.num_classes
        return {
            name: np.bincount(split.tokens, minlength=k).tolist()
            for name, split in (("train", self.train), ("val", self.val), ("test", self.test))
        }

    @property
    def train_labels(self) -> Labels:
        """The tag of every training word, padding left out."""
        return self.train.tokens

    @property
    def train_sample_weight(self) -> Floats | None:
        """The sample weight of every training word, aligned with `train_labels`."""
        return None if self.sample_weight is None else self.sample_weight[self.train.mask]


@cache
def upload_cache() -> BytesBoundedCache[SequenceUpload]:
    """This process's decoded sequence uploads (COUNTERWEIGHT_DATASET_CACHE_BYTES)."""
    return BytesBoundedCache(get_settings().dataset_cache_bytes, _held_bytes)


def _held_bytes(upload: SequenceUpload) -> int:
    arrays = [*vars(upload.train).values(), *vars(upload.test).values(), upload.sample_weight]
    return sum(a.nbytes for a in arrays if a is not None)


def _decode(home: Path, dataset_id: str) -> SequenceUpload:
    with np.load(upload_path(home, dataset_id), allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if arrays["y_train"].ndim != 2:
        raise DatasetError(
            f"dataset.id: upload {dataset_id} holds classification data (y_train of shape "
            f"{arrays['y_train'].shape}); sequence_labeling needs y_train of shape (N, T)"
        )

    def split(name: str) -> Sentences:
        words = arrays[f"x_{name}"].astype(np.int64)
        chars = arrays.get(f"chars_{name}")
        tags = np.where(words != 0, arrays[f"y_{name}"], 0).astype(np.int64)
        return Sentences(words, None if chars is None else chars.astype(np.int64), tags)

    train, test = split("train"), split("test")
    names = arrays.get("tag_names")
    k = int(max(train.tokens.max(), test.tokens.max())) + 1
    weights = arrays.get("sample_weight")
    if weights is not None and weights.ndim == 2:
        weights = np.where(train.mask, weights, 0)  # padding weighs 0, whatever it holds
    upload = SequenceUpload(
        train=train,
        test=test,
        tag_names=[str(n) for n in names] if names is not None else [str(t) for t in range(k)],
        vocab_size=int(max(train.words.max(), test.words.max())) + 1,
        char_vocab_size=0
        if train.chars is None or test.chars is None
        else int(max(train.chars.max(), test.chars.max())) + 1,
        sample_weight=None if weights is None else weights.astype(np.float32),
    )
    for array in (*vars(train).values(), *vars(test).values(), upload.sample_weight):
        if array is not None:
            array.flags.writeable = False
    return upload


def load_sequence_upload(home: Path, dataset_id: str) -> SequenceUpload:
    """An uploaded sequence dataset, decoded once per process (uploads never change)."""
    stored_upload(home, dataset_id)  # DatasetError if there is none
    home = home.resolve()
    return upload_cache().get((home, dataset_id), lambda: _decode(home, dataset_id))


def plan_sequence_splits(spec: JobSpec, home: Path | None = None) -> SequenceSplits:
    """The spec's sequence splits; raises DatasetError for what cannot run. `home` is
    COUNTERWEIGHT_HOME, where uploads live (None: the environment's)."""
    assert spec.dataset.id is not None  # sequence_labeling requires an upload
    upload = load_sequence_upload(get_settings().home if home is None else home, spec.dataset.id)
    stored_weights = _stored_sample_weight(spec, upload)
    n = len(upload.train.words)
    if n < 2:
        raise DatasetError(
            f"dataset.id: the upload has {n} training sentence; at least 2 are needed, one to "
            "train on and one to validate"
        )
    n_val = min(max(math.ceil(round(spec.dataset.val_fraction * n, 9)), 1), n - 1)
    is_val = np.zeros(n, dtype=bool)
    is_val[np.random.default_rng(VALIDATION_SEED).choice(n, size=n_val, replace=False)] = True
    train_rows, val_rows = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    train = upload.train.rows(train_rows)
    sample_weight = None
    if stored_weights is not None:
        sample_weight = np.where(train.mask, stored_weights[train_rows], 0).astype(np.float32)
        if not np.any(sample_weight > 0):
            raise DatasetError(
                f"sample_weight: all {int(train.mask.sum())} words of the training sentences "
                "left after the validation split have weight 0; at least one must be positive"
            )
    return SequenceSplits(
        train=train,
        val=upload.train.rows(val_rows),
        test=upload.test,
        class_names=upload.tag_names,
        vocab_size=upload.vocab_size,
        char_vocab_size=upload.char_vocab_size,
        sample_weight=sample_weight,
    )


def _stored_sample_weight(spec: JobSpec, upload: SequenceUpload) -> Floats | None:
    """The spec's sample weights as (N, T), one per step of the stored training split."""
    if spec.sample_weight is None:
        return None
    assert spec.dataset.id is not None
    given = given_sample_weight(spec.sample_weight, upload.sample_weight, spec.dataset.id)
    n, t = upload.train.words.shape
    if given.shape not in ((n,), (n, t)):
        raise DatasetError(
            f"sample_weight has shape {given.shape}; the training set has {n} sentences of "
            f"{t} steps, so it must have shape ({n},), one weight per sentence, or ({n}, {t}), "
            "one weight per step"
        )
    if given.ndim == 2:
        # Padding steps weigh 0 whatever was given there: their values are never read.
        given = np.where(upload.train.words != 0, given, 0.0)
    weights = checked_sample_weight(given)
    return np.broadcast_to(weights[:, None], (n, t)) if weights.ndim == 1 else weights
