"""On-device random crop and flip: exact geometry, determinism, when it is on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision.transforms.functional as TF

from counterweight.service.architectures import augment_enabled
from counterweight.service.errors import DatasetError
from counterweight.service.spec import AUGMENT_MIN_EPOCHS, JobSpec
from counterweight.workers.training.augment import augment_batch, batch_generator, crop_and_flip
from counterweight.workers.training.loop import TrainingResult
from tests.unit.test_engine import run as run_job


def images(n: int = 4, c: int = 3, h: int = 32, w: int = 32) -> torch.Tensor:
    # Distinct positive values, so a zero can only be padding.
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0)) + 0.5


def test_flip_is_an_exact_mirror_where_drawn_and_a_no_op_elsewhere() -> None:
    x = images()
    no_shift = torch.zeros(4, dtype=torch.long)
    flip = torch.tensor([True, False, True, False])
    out = crop_and_flip(x, no_shift, no_shift, flip)
    assert torch.equal(out[flip], x[flip].flip(-1))
    assert torch.equal(out[~flip], x[~flip])


def test_crop_moves_the_content_by_the_offset_and_fills_with_zeros() -> None:
    x = images(n=1)
    out = crop_and_flip(x, torch.tensor([2]), torch.tensor([-3]), torch.tensor([False]))
    # Two rows down, three columns left: row y, column c shows x[y - 2, c + 3].
    assert torch.equal(out[..., 2:, :29], x[..., :30, 3:])
    assert (out[..., :2, :] == 0).all() and (out[..., :, 29:] == 0).all()


def test_crop_and_flip_match_torchvisions_random_crop_then_flip() -> None:
    # RandomCrop(32, padding=4) picks a corner (top, left) of the zero-padded 40x40 image;
    # shift = padding - corner. Then RandomHorizontalFlip.
    x = images(n=6)
    shift_y, shift_x = torch.tensor([-4, -1, 0, 2, 4, 3]), torch.tensor([4, 0, -2, -4, 1, 3])
    flip = torch.tensor([True, False, True, True, False, False])
    out = crop_and_flip(x, shift_y, shift_x, flip)
    for i in range(6):
        top, left = 4 - int(shift_y[i]), 4 - int(shift_x[i])
        expected = TF.crop(TF.pad(x[i], [4]), top, left, 32, 32)
        if flip[i]:
            expected = TF.hflip(expected)
        assert torch.equal(out[i], expected), i


def test_works_on_non_square_single_channel_images() -> None:
    x = images(n=2, c=1, h=8, w=5)
    out = crop_and_flip(x, torch.tensor([1, 0]), torch.tensor([0, 1]), torch.tensor([True, False]))
    assert torch.equal(out[0, :, 1:], x[0, :, :7].flip(-1))
    assert torch.equal(out[1, :, :, 1:], x[1, :, :, :4])


def test_random_draws_cover_every_offset_and_flip_half_of_the_images() -> None:
    x = torch.ones(4000, 1, 12, 12)
    out = augment_batch(x, batch_generator(seed=0, epoch=0, batch=0))
    # On an all-ones image the zero rows and columns show the offset; 9 possible each.
    zero_rows = (out[:, 0].sum(dim=2) == 0).sum(dim=1)
    zero_cols = (out[:, 0].sum(dim=1) == 0).sum(dim=1)
    assert set(zero_rows.tolist()) == set(range(5)) and set(zero_cols.tolist()) == set(range(5))
    # Flips are invisible on a symmetric image: draw them on one with a marked left edge.
    marked = torch.zeros(4000, 1, 8, 8)
    marked[..., :, 0] = 1.0
    flipped = augment_batch(marked, batch_generator(0, 0, 0), padding=0)[..., :, 7].any(dim=-1)
    assert 0.45 < flipped.float().mean().item() < 0.55


def test_the_same_seed_epoch_and_batch_give_the_same_augmentation() -> None:
    x = images(n=64)
    first = augment_batch(x, batch_generator(seed=3, epoch=2, batch=5))
    assert torch.equal(first, augment_batch(x, batch_generator(seed=3, epoch=2, batch=5)))
    for other in [(4, 2, 5), (3, 1, 5), (3, 2, 6)]:
        assert not torch.equal(first, augment_batch(x, batch_generator(*other)))


def spec(dataset: dict[str, Any], augment: bool | None = None, epochs: int = 20) -> JobSpec:
    return JobSpec.model_validate(
        {"dataset": dataset, "train": {"augment": augment, "epochs": epochs}}
    )


def test_default_is_off_for_short_runs() -> None:
    cifar = {"name": "cifar10"}
    assert not augment_enabled(spec(cifar, epochs=AUGMENT_MIN_EPOCHS - 1), (3, 32, 32))
    assert not augment_enabled(JobSpec.model_validate({"dataset": cifar}), (3, 32, 32))
    assert augment_enabled(spec(cifar, epochs=AUGMENT_MIN_EPOCHS), (3, 32, 32))
    assert augment_enabled(spec(cifar, augment=True, epochs=1), (3, 32, 32))


def test_default_is_off_for_digits_and_on_for_colour_images() -> None:
    for name in ("digits", "mnist", "fashion_mnist"):
        assert not augment_enabled(spec({"name": name}), (1, 28, 28))
    assert augment_enabled(spec({"name": "cifar10"}), (3, 32, 32))
    assert augment_enabled(spec({"name": "image_folder", "path": "pets"}), (3, 64, 64))
    uploaded = {"name": "uploaded", "id": "ds1"}
    assert augment_enabled(spec(uploaded), (3, 32, 32))
    assert not augment_enabled(spec(uploaded), (1, 28, 28))
    assert not augment_enabled(spec(uploaded), (20,))


def test_an_explicit_choice_wins_but_feature_vectors_cannot_be_cropped() -> None:
    assert augment_enabled(spec({"name": "digits"}, augment=True), (1, 8, 8))
    assert not augment_enabled(spec({"name": "cifar10"}, augment=False), (3, 32, 32))
    with pytest.raises(DatasetError, match=r"^train.augment: .* shape \(20,\)"):
        augment_enabled(spec({"name": "uploaded", "id": "ds1"}, augment=True), (20,))


def digits_job(workdir: Path, stop_after: int | None = None, **train: Any) -> TrainingResult | None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": {"arch": "mlp", "width": 32, "depth": 1},
            "train": {"epochs": 3, "lr": 0.01, "seed": 2, **train},
        }
    )
    return run_job(spec, workdir, stop_after)


def test_the_engine_augments_only_when_on_and_a_resumed_run_replays_it(tmp_path: Path) -> None:
    default = digits_job(tmp_path / "default")
    off = digits_job(tmp_path / "off", augment=False)
    on = digits_job(tmp_path / "on", augment=True, schedule="cosine", warmup_epochs=1)
    assert default is not None and off is not None and on is not None
    assert default.metrics["history"] == off.metrics["history"]  # off for digits
    assert on.metrics["history"] != off.metrics["history"]

    # Stopped in epoch 2 (10 batches an epoch; after 4 of its batches) and resumed: the
    # same augmented batches at the same learning rates, so the same model.
    workdir, options = tmp_path / "resumed", dict[str, Any](schedule="cosine", warmup_epochs=1)
    assert digits_job(workdir, stop_after=15, augment=True, **options) is None
    resumed = digits_job(workdir, augment=True, **options)
    assert resumed is not None and resumed.metrics["resumed_from_epoch"] == 1
    assert resumed.metrics["history"] == on.metrics["history"]
    assert resumed.metrics["final"] == on.metrics["final"]
