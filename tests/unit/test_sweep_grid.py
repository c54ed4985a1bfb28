"""Sweep grids: expansion by dotted paths, cells without seeds, and the table's arithmetic."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from counterweight.service.api import sweeps
from counterweight.service.spec import JobSpec
from counterweight.service.store.models import Job, JobStatus, Sweep

BASE: dict[str, Any] = {"dataset": {"name": "digits", "classes": [0, 1, 2]}, "train": {"epochs": 2}}


def test_expands_dotted_paths_into_the_cartesian_product_in_grid_order() -> None:
    grid: dict[str, list[Any]] = {
        "loss.type": ["cross_entropy", "focal"],
        "class_weight": [None, "balanced"],
    }
    combinations = sweeps.expand(BASE, grid)
    assert [c.values for c in combinations] == [
        {"loss.type": "cross_entropy", "class_weight": None},
        {"loss.type": "cross_entropy", "class_weight": "balanced"},
        {"loss.type": "focal", "class_weight": None},
        {"loss.type": "focal", "class_weight": "balanced"},
    ]
    last = combinations[-1].spec
    assert last["loss"] == {"type": "focal"} and last["class_weight"] == "balanced"
    assert last["train"] == {"epochs": 2} and last["dataset"] == BASE["dataset"]
    assert "loss" not in BASE  # the base is copied, never changed


def test_sets_nested_fields_inside_existing_objects() -> None:
    (combination,) = sweeps.expand(BASE, {"train.seed": [3]})
    assert combination.spec["train"] == {"epochs": 2, "seed": 3}


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({}, "grid: expected at least one"),
        ({"loss.kind": ["focal"]}, "grid.loss.kind: not a job spec field"),
        ({"class_weight.0": [1.0]}, "grid.class_weight.0: not a job spec field"),
        ({"loss.type": []}, "grid.loss.type: expected a non-empty list"),
        ({"loss": [{"type": "focal"}], "loss.gamma": [1.0]}, "grid.loss.gamma: overlaps grid.loss"),
        (
            {"train.seed": list(range(17)), "train.lr": [0.1] * 16},
            "grid: 272 combinations; at most 256",
        ),
    ],
)
def test_refuses_grids_that_cannot_be_expanded(grid: dict[str, list[Any]], message: str) -> None:
    with pytest.raises(sweeps.SweepError, match="^" + message.replace(".", r"\.")):
        sweeps.expand(BASE, grid)


def test_refuses_setting_a_field_inside_a_base_value_that_is_not_an_object() -> None:
    with pytest.raises(sweeps.SweepError, match=r"^base\.imbalance: must be an object"):
        sweeps.expand({**BASE, "imbalance": "step"}, {"imbalance.ratio": [10]})


def test_validation_names_the_cell_and_the_field(tmp_path: Path) -> None:
    grid: dict[str, list[Any]] = {"loss.type": ["focal", "ldam"], "imbalance.ratio": [10, 0.5]}
    base = {**BASE, "imbalance": {"profile": "step"}}
    with pytest.raises(sweeps.SweepError) as caught:
        sweeps.validate(sweeps.expand(base, grid), tmp_path)
    assert str(caught.value).startswith(
        'grid cell {loss.type: "focal", imbalance.ratio: 0.5}: imbalance.ratio: '
    )


def test_validation_checks_the_data_too(tmp_path: Path) -> None:
    grid = {"dataset.classes": [[0, 1], [0, 99]]}
    with pytest.raises(sweeps.SweepError, match=r"^grid cell \{dataset\.classes: \[0, 99\]\}: "):
        sweeps.validate(sweeps.expand(BASE, grid), tmp_path)


def test_validation_refuses_two_cells_that_are_the_same_job(tmp_path: Path) -> None:
    with pytest.raises(sweeps.SweepError, match="the same job as grid cell"):
        sweeps.validate(sweeps.expand(BASE, {"imbalance.seed": [1, 1]}), tmp_path)


def test_mean_and_sample_std_by_hand() -> None:
    # mean of 0.6, 0.8, 1.0 is 0.8; squared deviations 0.04 + 0 + 0.04 over n - 1 = 2 -> 0.04.
    stats = sweeps.mean_std([0.6, 0.8, 1.0])
    assert stats["mean"] == pytest.approx(0.8) and stats["std"] == pytest.approx(0.2)
    assert sweeps.mean_std([0.7]) == {"mean": 0.7, "std": None}
    assert sweeps.mean_std([]) == {"mean": None, "std": None}
    assert sweeps.mean_std([0.5, None, 0.7])["std"] == pytest.approx(math.sqrt(0.02))


def _result(bacc: float, f1: float, recalls: list[float], counts: list[int]) -> dict[str, Any]:
    per_class = [{"class": c, "recall": r} for c, r in enumerate(recalls)]
    final = {"balanced_accuracy": bacc, "macro_f1": f1, "per_class": per_class}
    return {"final": final, "train_class_counts": counts}


def _job(job_id: str, values: dict[str, Any], status: JobStatus, result: Any = None) -> Job:
    spec = BASE | {"loss": {"type": values["loss.type"]}, "train": {"seed": values["train.seed"]}}
    dumped = JobSpec.model_validate(spec).model_dump(mode="json")
    return Job(id=job_id, spec=dumped, status=status, result=result)


def test_table_groups_seeds_into_cells_and_averages_their_metrics() -> None:
    grid = {"loss.type": ["cross_entropy", "focal"], "train.seed": [0, 1]}
    sweep = Sweep(id="s", base=BASE, grid=grid)
    jobs = [  # out of order, as a database may return them
        _job("f1", {"loss.type": "focal", "train.seed": 1}, JobStatus.running),
        _job(
            "c1",
            {"loss.type": "cross_entropy", "train.seed": 1},
            JobStatus.succeeded,
            _result(0.8, 0.7, [0.9, 0.5, 0.6], [40, 4, 40]),
        ),
        _job("f0", {"loss.type": "focal", "train.seed": 0}, JobStatus.failed),
        _job(
            "c0",
            {"loss.type": "cross_entropy", "train.seed": 0},
            JobStatus.succeeded,
            _result(0.6, 0.5, [0.9, 0.3, 0.6], [40, 4, 40]),
        ),
    ]
    rows, job_ids = sweeps.table(sweep, jobs)
    assert job_ids == ["c0", "c1", "f0", "f1"]
    ce, focal = rows
    assert (ce["cell"], ce["n"], ce["jobs"]) == ({"loss.type": "cross_entropy"}, 2, ["c0", "c1"])
    assert ce["balanced_accuracy"]["mean"] == pytest.approx(0.7)
    # two values 0.1 either side of the mean: sqrt((0.01 + 0.01) / 1)
    assert ce["balanced_accuracy"]["std"] == pytest.approx(math.sqrt(0.02))
    assert ce["macro_f1"]["mean"] == pytest.approx(0.6)
    # class 1 has the fewest training samples: its recalls are 0.3 and 0.5
    assert ce["minority_recall"] == {"mean": pytest.approx(0.4), "std": pytest.approx(0.1414, 1e-3)}
    assert (focal["cell"], focal["n"], focal["jobs"]) == ({"loss.type": "focal"}, 0, ["f0", "f1"])
    assert focal["macro_f1"] == {"mean": None, "std": None}


def test_status_and_progress_follow_the_jobs() -> None:
    q, r, s, f, c = list(JobStatus)  # queued, running, succeeded, failed, cancelled
    assert sweeps.sweep_status([q, q]) == "queued"
    assert sweeps.sweep_status([q, s]) == "running"
    assert sweeps.sweep_status([r, s]) == "running"
    assert sweeps.sweep_status([s, s]) == "succeeded"
    assert sweeps.sweep_status([s, f]) == sweeps.sweep_status([s, c]) == "failed"
    progress = sweeps.progress([q, r, s, f])
    assert (progress["ended"], progress["total"], progress["fraction"]) == (2, 4, 0.5)
    assert (progress["queued"], progress["succeeded"], progress["cancelled"]) == (1, 1, 0)
