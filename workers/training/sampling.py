"""The order in which an epoch visits the training samples (DESIGN.md `sampler`).

- none: every sample once, shuffled.
- oversample: class-balanced sampling with replacement, as torch's
  WeightedRandomSampler with weights 1 / n_{y_i}: n draws per epoch, every class
  equally likely, so the rare classes' samples repeat.
- undersample: every class cut to the size of the rarest (a fresh random subset
  each epoch), shuffled; an epoch is k * min_c n_c samples (see `epoch_length`).

Only classes present in `y` count: the sampler sees the training labels, not the job.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _present_counts(y: Tensor) -> tuple[Tensor, Tensor]:
    """(classes that occur in y, their counts)."""
    counts = torch.bincount(y)
    present = torch.nonzero(counts).squeeze(1)
    return present, counts[present]


def epoch_length(sampler: str, y: Tensor) -> int:
    """How many samples every epoch of `sampler` visits (the same in every epoch)."""
    if sampler == "undersample":
        present, counts = _present_counts(y)
        return len(present) * int(counts.min())
    return len(y)


def epoch_indices(sampler: str, y: Tensor, seed: int, epoch: int) -> Tensor:
    """Indices into the training split for epoch `epoch`, deterministic for (seed, epoch).

    Drawn on the CPU whatever the device, so the same seed gives the same batches
    everywhere and a resumed run replays the epoch it stopped in.
    """
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    if sampler == "none":
        return torch.randperm(len(y), generator=generator)
    if sampler == "oversample":
        # multinomial normalises the weights: P(i) = (1 / n_{y_i}) / k.
        weights = 1.0 / torch.bincount(y).double()[y]
        return torch.multinomial(weights, len(y), replacement=True, generator=generator)
    if sampler == "undersample":
        present, counts = _present_counts(y)
        keep = int(counts.min())
        subsets = []
        for c in present.tolist():
            members = torch.nonzero(y == c).squeeze(1)
            subsets.append(members[torch.randperm(len(members), generator=generator)[:keep]])
        chosen = torch.cat(subsets)
        return chosen[torch.randperm(len(chosen), generator=generator)]
    raise ValueError(f"unknown sampler {sampler!r}")
