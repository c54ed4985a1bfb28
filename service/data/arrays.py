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

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float32]
Pixels = npt.NDArray[np.uint8]
Inputs = Floats | Pixels  # float32 in [0, 1], or uint8 meaning value / 255
Labels = npt.NDArray[np.int64]
Rows = npt.NDArray[np.int64]  # row numbers into another array


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

    def __post_init__(self) -> None:
        # Shared by every job in the process: make accidental in-place edits fail loudly.
        for array in (self.x_train, self.y_train, self.x_test, self.y_test, self.sample_weight):
            if array is not None:
                array.flags.writeable = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])
