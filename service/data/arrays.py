"""The arrays a dataset is made of.

numpy only, so that the loaders, the imbalance profiles and the splits can all
share these types without importing each other.

Inputs come in two encodings: float32 in [0, 1] (digits, feature vectors, float
uploads), or uint8 0..255 meaning value / 255 (every other image dataset). Images
stay uint8 in memory and in the cache, a quarter of the float32 size (CIFAR-10's
training split is 150 MB instead of 600 MB); the worker turns them into float32
on the training device (workers.training.engine). Images are channel-first,
(n, C, H, W); feature vectors are (n, D).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float32]
Pixels = npt.NDArray[np.uint8]
Inputs = Floats | Pixels  # float32 in [0, 1], or uint8 meaning value / 255
Labels = npt.NDArray[np.int64]
# The largest float32. Training computes in float32, where anything larger is infinite.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def not_float32(values: np.ndarray) -> npt.NDArray[np.bool_]:
    """Where `values` are NaN, infinite, or too large to be finite in float32."""
    bad: npt.NDArray[np.bool_] = ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)
    return bad


Rows = npt.NDArray[np.int64]  # row numbers into another array


def shape_only(shape: tuple[int, ...], dtype: np.dtype[Any] | type) -> Any:
    """An array of this shape and dtype that holds no data (one zero, broadcast; read-only):
    what the API plans splits with in place of inputs it never reads."""
    return np.broadcast_to(np.zeros((), dtype), shape)


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays has no single truth value
class BaseDataset:
    """A dataset as stored: its train and test splits, all classes, original labels,
    in the loader's row order. Shared by every job of a process, so read-only."""

    x_train: Inputs
    y_train: Labels
    x_test: Inputs
    y_test: Labels
    class_names: list[str]
    # An upload's own weights, one per x_train row (spec sample_weight "from_dataset").
    sample_weight: Floats | None = None
    # False when x_train and x_test only carry their shape and dtype (shape_only): the
    # API checks a spec against labels and shapes, and never holds a dataset's inputs.
    has_inputs: bool = True

    def __post_init__(self) -> None:
        # Shared by every job in the process: make accidental in-place edits fail loudly.
        for array in (self.x_train, self.y_train, self.x_test, self.y_test, self.sample_weight):
            if array is not None:
                array.flags.writeable = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def held_bytes(self) -> int:
        """Memory its arrays take (inputs without data take none)."""
        inputs = (self.x_train, self.x_test) if self.has_inputs else ()
        arrays = (*inputs, self.y_train, self.y_test, self.sample_weight)
        return sum(a.nbytes for a in arrays if a is not None)

    def without_inputs(self) -> BaseDataset:
        return replace(
            self,
            x_train=shape_only(self.x_train.shape, self.x_train.dtype),
            x_test=shape_only(self.x_test.shape, self.x_test.dtype),
            has_inputs=False,
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])
