"""The order in which an epoch visits the training samples (DESIGN.md `sampler`).

- none: every sample once, shuffled.
- oversample: class-balanced sampling with replacement, as torch's
  WeightedRandomSampler with weights 1 / n_{y_i}: n draws per epoch, every class
  equally likely, so the rare classes' samples repeat.
- undersample: every class cut to the size of the rarest (a fresh random subset
  each epoch), shuffled; an epoch is k * min_c n_c samples (see `epoch_length`).

Only classes present in `y` count: the sampler sees the training labels, not the job.

Which sampler an epoch uses follows the spec's schedule (`sampler_at`): deferred
re-sampling (train.sampler_from_epoch) visits every sample once until its epoch, and
stage two (train.stage2) has its own sampler.
"""

from __future__ import annotations

import torch
from torch import Tensor

from counterweight.service.spec import JobSpec


def rebalancing_on(from_epoch: int | None, epoch: int) -> bool:
    """Whether deferred re-balancing that starts in 1-based epoch `from_epoch` (None: from
    the first) is on in 0-based epoch `epoch`."""
    return from_epoch is None or epoch + 1 >= from_epoch


def sampler_at(spec: JobSpec, epoch: int) -> str:
    """The sampler of 0-based epoch `epoch`. Stage two's epochs are numbered from
    train.epochs on (training.loop), so those are stage two's whenever stage one ended."""
    train = spec.train
    if train.stage2 is not None and epoch >= train.epochs:
        return train.stage2.sampler
    return spec.sampler if rebalancing_on(train.sampler_from_epoch, epoch) else "none"


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
