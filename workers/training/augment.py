"""Data augmentation on the training device: random crop and horizontal flip.

The standard CIFAR recipe (RandomCrop(32, padding=4) then RandomHorizontalFlip),
applied to a whole batch of tensors at once with one gather, so it runs where
the batch already is and costs next to nothing next to the model. Padding is
zeros, as torchvision pads a PIL image: black in the raw [0, 1] inputs, before
the model's normalisation.

Determinism: each batch draws its offsets and flips on the CPU from a generator
seeded with (seed, epoch, batch index), so a resumed run replays the same
augmentation, and the same seed gives the same batches on any device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PADDING = 4
_STREAM = 0x617567  # keeps these draws apart from the sampler's, which use the same seed


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """A CPU generator for one batch's draws, seeded from (seed, epoch, batch index)."""
    state = np.random.SeedSequence([seed, epoch, batch, _STREAM]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


def crop_and_flip(
    x: Tensor, shift_y: Tensor, shift_x: Tensor, flip: Tensor, padding: int = PADDING
) -> Tensor:
    """Images (n, c, h, w) moved down by shift_y and right by shift_x pixels (each in
    [-padding, padding]; uncovered pixels are 0), then mirrored left-right where `flip`.
    This is RandomCrop(padding=padding) followed by RandomHorizontalFlip, with the crop's
    top-left corner at (padding - shift_y, padding - shift_x) of the padded image."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    width = w + 2 * padding
    cols = torch.arange(w, device=x.device)
    source_cols = torch.where(flip[:, None], w - 1 - cols, cols)  # (n, w)
    rows = torch.arange(h, device=x.device)[None, :] - shift_y[:, None] + padding  # (n, h)
    cols_in_padded = source_cols - shift_x[:, None] + padding  # (n, w)
    index = (rows[:, :, None] * width + cols_in_padded[:, None, :]).view(n, 1, h * w)
    return padded.flatten(2).gather(2, index.expand(n, c, h * w)).view(n, c, h, w)


def augment_batch(x: Tensor, generator: torch.Generator, padding: int = PADDING) -> Tensor:
    """A random crop (zero padding `padding`) and a random horizontal flip of each image
    in the batch (n, c, h, w), drawn from `generator` (a CPU one: see batch_generator)."""
    n = len(x)
    shifts = torch.randint(-padding, padding + 1, (2, n), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    shifts, flip = shifts.to(x.device), flip.to(x.device)
    return crop_and_flip(x, shifts[0], shifts[1], flip, padding)
