"""The order in which an epoch visits the training samples (DESIGN.md `sampler`)."""

from __future__ import annotations

import torch
from torch import Tensor


def epoch_indices(sampler: str, y: Tensor, seed: int, epoch: int) -> Tensor:
    """Indices into the training split for epoch `epoch`, deterministic for (seed, epoch).

    Drawn on the CPU whatever the device, so the same seed gives the same batches
    everywhere and a resumed run replays the epoch it stopped in.
    """
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(len(y), generator=generator)
