"""Two-stage training (classifier re-training, Kang et al. 2020) and deferred re-sampling
and re-weighting (DRS, DRW; Cao et al. 2019), on real digits jobs on the CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from counterweight.service.artifacts import MODEL
from counterweight.service.spec import JobSpec
from counterweight.workers.training import engine, sampling
from counterweight.workers.training.loop import HeadRetraining, Trainer, run_epochs
from counterweight.workers.training.models import build_model, retrain_head
from counterweight.workers.training.optim import build_optimizer
from counterweight.workers.training.selection import selection_for
from tests.unit.test_engine import run

# 10 batches of 128 an epoch (1,212 training digits); small_cnn has batch norms.
DIGITS: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"arch": "small_cnn"},
    "train": {"epochs": 2, "batch_size": 128, "lr": 0.01, "seed": 3},
}
# Three classes, the third 8x rarer: a balanced epoch is easy to tell from a plain one.
IMBALANCED: dict[str, Any] = {
    "dataset": {"name": "digits", "classes": [0, 1, 2]},
    "imbalance": {"profile": "step", "ratio": 8, "minority": [2]},
    "model": {"arch": "mlp", "width": 16, "depth": 1},
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.01, "seed": 0},
}


def spec_of(base: dict[str, Any], **changes: Any) -> JobSpec:
    spec = {**base, **changes}
    spec["train"] = {**base["train"], **changes.get("train", {})}
    return JobSpec.model_validate(spec)


def without_stage(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "stage"} for row in rows]


def test_stage_two_re_trains_only_the_head_of_stage_one_s_model(tmp_path: Path) -> None:
    one = run(spec_of(DIGITS), tmp_path / "one")
    two = run(spec_of(DIGITS, train={"stage2": {"epochs": 2}}), tmp_path / "two")
    assert one is not None and two is not None
    history = two.metrics["history"]
    # Stage one is the one-stage job, epoch for epoch; stage two's epochs follow it.
    assert without_stage(history[:2]) == one.metrics["history"]
    assert [(row["epoch"], row["stage"]) for row in history] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert two.metrics["stage1_selected_epoch"] == one.metrics["selected_epoch"]
    assert two.card["stage1_selected_epoch"] == one.metrics["selected_epoch"]
    assert two.metrics["selected_epoch"] in (3, 4)  # stage two selects among its own
    assert two.metrics["epochs_trained"] == 4 and not two.metrics["early_stopped"]

    stage_one = load_file(tmp_path / "one" / MODEL)
    served = load_file(tmp_path / "two" / MODEL)
    head = f"body.{len(build_model('small_cnn', (1, 8, 8), 10).body) - 1}."
    assert {k for k in served if k.startswith(head)} == {head + "weight", head + "bias"}
    for name, tensor in stage_one.items():
        if name.startswith(head):
            assert not torch.equal(served[name], tensor), name  # re-initialised, trained
        else:  # every weight and every batch norm statistic as stage one left it
            assert torch.equal(served[name], tensor), name


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int, Tensor]]]:
    """(sampler, epoch, labels of the samples it drew) of every epoch the engine orders:
    the real epoch_indices, observed."""
    calls: list[tuple[str, int, Tensor]] = []
    real = sampling.epoch_indices

    def observed(sampler: str, y: Tensor, seed: int, epoch: int) -> Tensor:
        order = real(sampler, y, seed, epoch)
        calls.append((sampler, epoch, y[order]))
        return order

    monkeypatch.setattr(engine, "epoch_indices", observed)
    yield calls


def class_shares(labels: Tensor) -> list[float]:
    return (torch.bincount(labels, minlength=3) / len(labels)).tolist()


def test_stage_two_samples_every_class_equally(
    tmp_path: Path, drawn: list[tuple[str, int, Tensor]]
) -> None:
    result = run(spec_of(IMBALANCED, train={"stage2": {"epochs": 2}}), tmp_path)
    assert result is not None
    assert [(sampler, epoch) for sampler, epoch, _ in drawn] == [
        ("none", 0), ("none", 1), ("oversample", 2), ("oversample", 3)
    ]  # fmt: skip
    assert class_shares(drawn[0][2])[2] < 0.1  # stage one: as the data is
    for _, _, labels in drawn[2:]:
        assert class_shares(labels) == pytest.approx([1 / 3] * 3, abs=0.08)


def test_deferred_re_sampling_switches_on_in_its_epoch(
    tmp_path: Path, drawn: list[tuple[str, int, Tensor]]
) -> None:
    deferred = spec_of(
        IMBALANCED, sampler="oversample", train={"epochs": 3, "sampler_from_epoch": 2}
    )
    result = run(deferred, tmp_path / "deferred")
    assert result is not None
    assert [(sampler, epoch) for sampler, epoch, _ in drawn] == [
        ("none", 0), ("oversample", 1), ("oversample", 2)
    ]  # fmt: skip
    assert class_shares(drawn[1][2]) == pytest.approx([1 / 3] * 3, abs=0.08)
    plain = run(spec_of(IMBALANCED, train={"epochs": 3}), tmp_path / "plain")
    assert plain is not None
    assert result.metrics["history"][0] == plain.metrics["history"][0]
    assert result.metrics["history"][1] != plain.metrics["history"][1]


def test_deferred_re_weighting_switches_on_in_its_epoch(tmp_path: Path) -> None:
    deferred = spec_of(
        IMBALANCED, class_weight="balanced", train={"epochs": 3, "class_weight_from_epoch": 2}
    )
    result = run(deferred, tmp_path / "deferred")
    plain = run(spec_of(IMBALANCED, train={"epochs": 3}), tmp_path / "plain")
    weighted = run(
        spec_of(IMBALANCED, class_weight="balanced", train={"epochs": 3}), tmp_path / "w"
    )
    assert result is not None and plain is not None and weighted is not None
    # Epoch 1 trains unweighted, exactly as without class weights; epoch 2 on, weighted.
    assert result.metrics["history"][0] == plain.metrics["history"][0]
    assert result.metrics["history"][0] != weighted.metrics["history"][0]
    assert result.metrics["history"][1] != plain.metrics["history"][1]
    # The effective weights reported are those training starts with.
    assert result.metrics["class_weight"] == [1.0, 1.0, 1.0]
    assert weighted.metrics["class_weight"][2] > 1.0


STAGED = spec_of(DIGITS, train={"stage2": {"epochs": 2}})
RESULT_FIELDS = ("history", "final", "selected_epoch", "stage1_selected_epoch", "epochs_trained")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], bytes]:
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = run(STAGED, workdir)
    assert result is not None
    return {name: result.metrics[name] for name in RESULT_FIELDS}, (workdir / MODEL).read_bytes()


# should_stop is asked before every batch: 10 a stage-one epoch, 10 a stage-two one.
@pytest.mark.parametrize(
    "stop_after",
    [15, 21, 27],
    ids=["mid-stage-one", "at-stage-two-s-first-batch", "mid-stage-two"],
)
def test_a_two_stage_job_resumed_anywhere_ends_as_an_uninterrupted_one(
    tmp_path: Path, stop_after: int, uninterrupted: tuple[dict[str, Any], bytes]
) -> None:
    assert run(STAGED, tmp_path, stop_after=stop_after) is None
    resumed = run(STAGED, tmp_path)
    assert resumed is not None
    expected, model_bytes = uninterrupted
    assert {name: resumed.metrics[name] for name in RESULT_FIELDS} == expected
    assert (tmp_path / MODEL).read_bytes() == model_bytes
    assert resumed.metrics["resumed_from_epoch"] == (1 if stop_after == 15 else 2)


def test_stage_one_stopping_early_hands_over_to_stage_two_numbered_after_its_epochs(
    tmp_path: Path,
) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "train": {
                "epochs": 6,
                "batch_size": 4,
                "select_by": "val_loss",
                "early_stopping_patience": 1,
                "stage2": {"epochs": 2},
            },
        }
    )
    torch.manual_seed(0)
    model = build_model("mlp", (3,), 2, width=4, depth=1)
    x, y = torch.rand(8, 3), torch.tensor([0, 1] * 4)
    # Validation as scripted: stage one gets worse after epoch 1 and stops early; stage two
    # is best at its first epoch.
    val_losses = iter([1.0, 5.0, 0.5, 0.9])
    trained_by_epoch: list[tuple[int, list[bool]]] = []

    def validate() -> tuple[float, dict[str, Any]]:
        metrics = {"accuracy": 0.5, "balanced_accuracy": 0.5, "macro_f1": 0.5, "g_mean": 0.5}
        return next(val_losses), {**metrics, "per_class_recall": [0.5, 0.5]}

    def batch_loss(idx: Tensor, epoch: int, b: int) -> tuple[Tensor, Tensor]:
        if b == 0:
            trained_by_epoch.append((epoch, [p.requires_grad for p in model.parameters()]))
        total = torch.nn.functional.cross_entropy(model(x[idx]), y[idx], reduction="sum")
        return total, torch.tensor(float(len(idx)))

    stage2 = HeadRetraining(8, lambda: build_optimizer(retrain_head(model, 0), spec.train))
    trainer = Trainer(
        model=model,
        optimizer=build_optimizer(model, spec.train),
        samples_per_epoch=8,
        epoch_order=lambda epoch: torch.randperm(8),
        batch_loss=batch_loss,
        validate=validate,
        minority=1,
        selection=selection_for("val_loss", [50, 50], ["a", "b"]),
        stage2=stage2,
    )
    result = run_epochs(
        spec,
        tmp_path,
        trainer,
        torch.device("cpu"),
        started=0.0,
        report=lambda progress: None,
        should_stop=lambda: False,
    )
    assert result is not None
    rows = result.state.history
    assert [(row["epoch"], row["stage"]) for row in rows] == [(1, 1), (2, 1), (7, 2), (8, 2)]
    assert result.state.stage1_selected_epoch == 1
    assert result.state.best_epoch == 7  # stage two's own best
    # Stage one trains everything; stage two the head alone (its weight and bias).
    assert [epoch for epoch, _ in trained_by_epoch] == [0, 1, 6, 7]
    assert all(all(flags) for _, flags in trained_by_epoch[:2])
    assert all(flags == [False, False, True, True] for _, flags in trained_by_epoch[2:])
