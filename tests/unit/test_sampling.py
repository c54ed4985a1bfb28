"""Samplers: class frequencies, epoch lengths, and determinism for (seed, epoch) that a
resumed job relies on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from counterweight.service.spec import JobSpec
from counterweight.workers.training.engine import train_job
from counterweight.workers.training.loop import TrainingResult
from counterweight.workers.training.sampling import epoch_indices, epoch_length

COUNTS = (900, 90, 10)
Y = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])[
    torch.randperm(sum(COUNTS), generator=torch.Generator().manual_seed(0))
]


def test_none_visits_every_sample_once() -> None:
    order = epoch_indices("none", Y, seed=0, epoch=0)
    assert sorted(order.tolist()) == list(range(len(Y)))
    assert epoch_length("none", Y) == len(Y)


def test_oversample_draws_every_class_equally_often() -> None:
    epochs = 20
    draws = torch.cat([epoch_indices("oversample", Y, seed=3, epoch=e) for e in range(epochs)])
    assert len(draws) == epochs * len(Y)
    assert epoch_length("oversample", Y) == len(Y)
    frequencies = torch.bincount(Y[draws], minlength=3).double() / len(draws)
    # Each draw hits a class with probability 1/3: five standard deviations of the mean of
    # 20000 draws is 5 * sqrt(1/3 * 2/3 / 20000) = 0.0167. Unweighted shuffling gives 0.9/0.01.
    bound = 5 * math.sqrt(1 / 3 * 2 / 3 / len(draws))
    assert (frequencies - 1 / 3).abs().max() < bound
    # The rare class's 10 samples repeat: about 333 draws each epoch from 10 rows.
    rare = draws[Y[draws] == 2]
    assert torch.unique(rare).numel() == 10


def test_undersample_cuts_every_class_to_the_rarest() -> None:
    order = epoch_indices("undersample", Y, seed=0, epoch=0)
    assert len(order) == epoch_length("undersample", Y) == 3 * 10
    assert torch.unique(order).numel() == len(order)  # without replacement
    assert torch.bincount(Y[order]).tolist() == [10, 10, 10]
    # Shuffled across classes, not class after class.
    assert Y[order].tolist() != sorted(Y[order].tolist())


def test_undersample_ignores_labels_that_do_not_occur() -> None:
    y = torch.tensor([0, 0, 0, 2, 2])
    order = epoch_indices("undersample", y, seed=0, epoch=0)
    assert epoch_length("undersample", y) == 4
    assert sorted(y[order].tolist()) == [0, 0, 2, 2]


@pytest.mark.parametrize("sampler", ["none", "oversample", "undersample"])
def test_the_order_is_fixed_by_seed_and_epoch(sampler: str) -> None:
    first = epoch_indices(sampler, Y, seed=5, epoch=2)
    assert torch.equal(first, epoch_indices(sampler, Y, seed=5, epoch=2))
    assert not torch.equal(first, epoch_indices(sampler, Y, seed=5, epoch=3))
    assert not torch.equal(first, epoch_indices(sampler, Y, seed=6, epoch=2))


def test_undersample_draws_a_fresh_subset_of_the_majority_each_epoch() -> None:
    def majority(epoch: int) -> set[int]:
        order = epoch_indices("undersample", Y, seed=0, epoch=epoch)
        return set(order[Y[order] == 0].tolist())

    assert majority(0) != majority(1)


def test_an_unknown_sampler_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown sampler 'smote'"):
        epoch_indices("smote", Y, seed=0, epoch=0)


def test_an_undersampled_weighted_job_resumes_mid_epoch_to_the_same_result(
    tmp_path: Path,
) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits", "classes": [0, 1, 2]},
            "sampler": "undersample",
            "class_weight": {"0": 2.0},
            "loss": {"type": "ldam", "drw_epoch": 2},
            "model": {"arch": "mlp", "width": 32, "depth": 1},
            "train": {"epochs": 3, "batch_size": 32, "lr": 0.01},
        }
    )

    def train(workdir: Path, stop_after: int | None = None) -> tuple[TrainingResult | None, int]:
        calls = 0

        def should_stop() -> bool:  # asked once before every batch
            nonlocal calls
            calls += 1
            return stop_after is not None and calls >= stop_after

        workdir.mkdir(exist_ok=True)
        result = train_job(
            spec,
            workdir,
            device="cpu",
            data_root=workdir,
            report=lambda progress: None,
            should_stop=should_stop,
        )
        return result, calls

    reference, calls = train(tmp_path / "reference")
    assert reference is not None
    counts = reference.metrics["train_class_counts"]
    batches_per_epoch = math.ceil(3 * min(counts) / 32)  # an epoch is k * min_c n_c samples
    assert calls == 3 * batches_per_epoch

    workdir = tmp_path / "interrupted"
    assert train(workdir, stop_after=batches_per_epoch + 2)[0] is None  # in epoch 2
    resumed, _ = train(workdir)
    assert resumed is not None and resumed.metrics["resumed_from_epoch"] == 1
    for key in ("history", "final", "class_weight"):
        assert resumed.metrics[key] == reference.metrics[key], key
