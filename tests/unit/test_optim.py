"""Learning-rate schedules: hand-computed values, and the engine trains with them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from counterweight.service.artifacts import CHECKPOINT as CHECKPOINT_FILE
from counterweight.service.spec import JobSpec, TrainSpec
from counterweight.workers.training.optim import lr_at, step_milestones
from tests.unit.test_engine import run as run_job

STEPS = 10  # per epoch


def schedule(name: str, **options: Any) -> TrainSpec:
    return TrainSpec.model_validate(
        {"lr": 0.1, "epochs": 10, "schedule": name, "warmup_epochs": 1, **options}
    )


def lrs(train: TrainSpec, steps: list[int]) -> list[float]:
    return [lr_at(train, s, STEPS) for s in steps]


def test_warm_up_rises_linearly_to_the_full_rate_at_the_end_of_its_epochs() -> None:
    # Step s of the 10 warm-up steps trains at 0.1 * (s + 1) / 10.
    for name in ("constant", "cosine", "step"):
        assert lrs(schedule(name), [0, 4, 9]) == pytest.approx([0.01, 0.05, 0.1]), name
    assert lrs(schedule("constant", warmup_epochs=2), [0, 19]) == pytest.approx([0.005, 0.1])


def test_constant_holds_after_warm_up_and_no_warm_up_starts_at_full_rate() -> None:
    assert lrs(schedule("constant"), [10, 50, 99]) == pytest.approx([0.1, 0.1, 0.1])
    assert lrs(schedule("constant", warmup_epochs=0), [0, 99]) == pytest.approx([0.1, 0.1])


def test_cosine_decays_over_the_steps_after_warm_up_to_zero() -> None:
    # 90 decay steps after the 10 warm-up steps: lr = 0.05 * (1 + cos(pi * (s - 10) / 90)).
    train = schedule("cosine")
    assert lrs(train, [10, 40, 55, 70]) == pytest.approx([0.1, 0.075, 0.05, 0.025])
    # The last step: 0.05 * (1 - cos(pi / 90)) = 0.05 * 0.000609173...
    assert lr_at(train, 99, STEPS) == pytest.approx(3.0459e-5, rel=1e-4)
    assert lr_at(train, 100, STEPS) == pytest.approx(0.0, abs=1e-15)
    # Without warm-up the decay starts at step 0: halfway is step 50.
    assert lr_at(schedule("cosine", warmup_epochs=0), 50, STEPS) == pytest.approx(0.05)


def test_step_multiplies_by_gamma_after_each_milestone_epoch() -> None:
    # Default milestones for 10 epochs: after epoch 5 and after epoch 7.
    train = schedule("step")
    assert step_milestones(train) == [5, 7]
    assert lrs(train, [49, 50, 69, 70, 99]) == pytest.approx([0.1, 0.01, 0.01, 0.001, 0.001])
    custom = schedule("step", step_milestones=[2], step_gamma=0.5, warmup_epochs=0)
    assert lrs(custom, [19, 20, 99]) == pytest.approx([0.1, 0.05, 0.05])


@pytest.mark.parametrize(
    ("epochs", "milestones"), [(1, []), (2, [1]), (3, [1, 2]), (4, [2, 3]), (100, [50, 75])]
)
def test_default_step_milestones_skip_zero_and_repeats(epochs: int, milestones: list[int]) -> None:
    train = TrainSpec.model_validate({"epochs": epochs, "schedule": "step"})
    assert step_milestones(train) == milestones


def lr_in_checkpoint_after(spec: JobSpec, workdir: Path, steps: int) -> float:
    """The optimizer's lr in the checkpoint of a job stopped after `steps` steps."""
    assert run_job(spec, workdir, stop_after=steps + 1) is None
    checkpoint = torch.load(workdir / CHECKPOINT_FILE, weights_only=True)
    lr: float = checkpoint["optimizer"]["param_groups"][0]["lr"]
    return lr


def test_the_engine_sets_the_scheduled_rate_before_each_step(tmp_path: Path) -> None:
    # digits: 1212 training images in batches of 128 = 10 batches an epoch.
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": {"arch": "mlp", "width": 16, "depth": 1},
            "train": {"epochs": 4, "lr": 0.01, "schedule": "cosine", "warmup_epochs": 1},
        }
    )
    # Step 0 is the first of 10 warm-up steps: 0.01 * 1/10.
    assert lr_in_checkpoint_after(spec, tmp_path / "a", steps=1) == pytest.approx(0.001)
    # Step 12 is 2 into the 30 decay steps after warm-up.
    assert lr_in_checkpoint_after(spec, tmp_path / "b", steps=13) == pytest.approx(
        0.005 * (1 + math.cos(math.pi * 2 / 30))
    )
