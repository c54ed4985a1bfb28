"""Sweeps: a grid over a base spec, expanded to jobs, and a comparison table across the grid.

`{"base": {...}, "grid": {"loss.type": ["cross_entropy", "focal"], "train.seed": [0, 1]}}`
sets each dotted path of the spec to each of its values: the cartesian product is one job
per combination. A *cell* is a combination of every grid value except `train.seed`: the
seeds of a cell are repeats, and the table gives each metric's mean and sample standard
deviation over them.

Every combination is validated (the spec, then the data, as POST /v1/jobs does) before
any job is queued, and all jobs are queued in the caller's one transaction: a sweep is
queued whole or not at all.

Each job stores its spec whole, so an inline sample_weight in the base is stored once per
job: the jobs' inline weights together are held to one job's cap
(COUNTERWEIGHT_MAX_INLINE_WEIGHTS), checked before any combination is validated. Weights
uploaded with the dataset ("from_dataset") are stored once, whatever the sweep's size.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from counterweight.service.api import admission
from counterweight.service.errors import DatasetError, DatasetNotFound, LimitExceeded, SweepError
from counterweight.service.spec import JobSpec
from counterweight.service.store.models import Job, JobStatus, Sweep

SEED_PATH = "train.seed"
MAX_JOBS = 256  # jobs per sweep, seeds included: a typo in a grid should not flood the queue
METRICS = ("balanced_accuracy", "macro_f1", "minority_recall")


@dataclass(frozen=True)
class Combination:
    """One job of the sweep: its grid values by path, and the spec they give."""

    values: dict[str, Any]
    spec: dict[str, Any]

    @property
    def label(self) -> str:
        # JSON, not Python, spelling of the values: users write the grid in JSON.
        inner = ", ".join(f"{path}: {json.dumps(value)}" for path, value in self.values.items())
        return f"grid cell {{{inner}}}"


def _spec_paths(model: type[BaseModel] = JobSpec, prefix: str = "") -> set[str]:
    """Every dotted path a grid may set: each field, and the fields of nested models."""
    paths = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.add(path)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            paths |= _spec_paths(info.annotation, f"{path}.")
    return paths


SPEC_PATHS = _spec_paths()


def check_grid(grid: dict[str, list[Any]]) -> None:
    """Refuse grids that name no spec field, have an empty value list, overlap or are too big."""
    if not grid:
        raise SweepError('grid: expected at least one "<dotted.path>": [values...] entry')
    for path, values in grid.items():
        if path not in SPEC_PATHS:
            raise SweepError(
                f"grid.{path}: not a job spec field; expected a dotted path such as "
                '"loss.type", "imbalance.ratio", "train.seed" or "class_weight"'
            )
        if not values:
            raise SweepError(f"grid.{path}: expected a non-empty list of values")
    for path, other in itertools.permutations(grid, 2):
        if other.startswith(f"{path}."):
            raise SweepError(f"grid.{other}: overlaps grid.{path}; set one or the other")
    size = math.prod(len(values) for values in grid.values())
    if size > MAX_JOBS:
        raise SweepError(f"grid: {size} combinations; at most {MAX_JOBS} jobs per sweep")


def _with_value(spec: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = spec
    for depth, key in enumerate(parents):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            where = ".".join(parents[: depth + 1])
            raise SweepError(f"base.{where}: must be an object for grid.{path} to set {leaf}")
        node = child
    node[leaf] = copy.deepcopy(value)


def expand(base: dict[str, Any], grid: dict[str, list[Any]]) -> list[Combination]:
    """The cartesian product of the grid over the base, in grid order (last path fastest)."""
    check_grid(grid)
    combinations = []
    for values in itertools.product(*grid.values()):
        spec = copy.deepcopy(base)
        for path, value in zip(grid, values, strict=True):
            _with_value(spec, path, value)
        combinations.append(Combination(dict(zip(grid, values, strict=True)), spec))
    return combinations


def add_labels(spec: dict[str, Any], labels: dict[str, str]) -> None:
    """Put a sweep's labels on one of its specs, over the base's of the same key. A base
    whose `labels` is not an object keeps it, for the spec's validation to name."""
    current = spec.get("labels", {})
    if labels and isinstance(current, dict):
        spec["labels"] = {**current, **labels}


def _inline_weights(sample_weight: Any) -> int:
    """How many values an inline sample_weight holds, (N,) or (N, T); 0 for any other."""
    if not isinstance(sample_weight, list):
        return 0
    return sum(len(row) if isinstance(row, list) else 1 for row in sample_weight)


def check_inline_weights(base: dict[str, Any], grid: dict[str, list[Any]], cap: int) -> None:
    """Refuse a sweep whose jobs would store more than `cap` inline sample weights between
    them (see the module docstring). Counted on the base and the grid, before the grid is
    expanded (a copy of the base a job) or any combination validated."""
    check_grid(grid)
    jobs = math.prod(len(values) for values in grid.values())
    if "sample_weight" in grid:  # each value is in jobs / len(values) of the jobs
        values = grid["sample_weight"]
        total = sum(_inline_weights(value) for value in values) * (jobs // len(values))
    else:
        total = _inline_weights(base.get("sample_weight")) * jobs
    if jobs > 1 and total > cap:  # one job over the cap: admission says so
        raise LimitExceeded(
            f"sample_weight: the sweep's {jobs} jobs would store {total:,} "
            f"inline weights between them (each job keeps its own copy), more than this "
            f"service allows ({cap:,}, COUNTERWEIGHT_MAX_INLINE_WEIGHTS, counted over a "
            "sweep's jobs together); put the weights in the uploaded dataset as its "
            'sample_weight array and send "from_dataset": they are then stored once'
        )


# Checks a spec against its data (and the caller's rights and limits), raising DatasetError,
# DatasetNotFound or LimitExceeded; the API passes its own (service.api.admission.admit).
Admit = Callable[[JobSpec], object]


def _validated(combination: Combination, admit: Admit) -> JobSpec:
    """The combination's JobSpec, checked against its data; SweepError names cell and field."""
    try:
        spec = JobSpec.model_validate(combination.spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        raise SweepError(f"{combination.label}: {problems}") from exc
    try:
        admit(spec)
    except (DatasetError, DatasetNotFound, LimitExceeded) as exc:
        raise SweepError(f"{combination.label}: {exc}") from exc
    return spec


def validate(
    combinations: Sequence[Combination],
    data_root: Path,
    home: Path | None = None,
    *,
    admit: Admit | None = None,
) -> list[JobSpec]:
    """Every combination's spec, or SweepError for the first that cannot run or repeats one.
    Each is checked by `admit`, by default service.api.admission.resolve on `data_root`
    and `home`."""

    def resolve(spec: JobSpec) -> object:
        return admission.resolve(spec, data_root, home)

    specs = [_validated(c, admit or resolve) for c in combinations]
    seen: dict[str, Combination] = {}
    for combination, spec in zip(combinations, specs, strict=True):
        first = seen.setdefault(spec.fingerprint(), combination)
        if first is not combination:
            raise SweepError(f"{combination.label}: the same job as {first.label}")
    return specs


# --- the comparison table ----------------------------------------------------------------


def sweep_status(statuses: Sequence[JobStatus]) -> str:
    """queued: none started; running: some not ended; succeeded: all succeeded; failed: all
    ended and at least one failed or was cancelled (its table still has the others)."""
    if all(s == JobStatus.queued for s in statuses):
        return "queued"
    if not all(s.is_terminal for s in statuses):
        return "running"
    return "succeeded" if all(s == JobStatus.succeeded for s in statuses) else "failed"


def progress(statuses: Sequence[JobStatus]) -> dict[str, Any]:
    ended = sum(s.is_terminal for s in statuses)
    counts = {s.value: sum(x == s for x in statuses) for s in JobStatus}
    fraction = ended / len(statuses) if statuses else 0.0  # every job deleted: none left
    return {"ended": ended, "total": len(statuses), "fraction": fraction, **counts}


def job_metrics(result: dict[str, Any]) -> dict[str, float | None]:
    """The table's metrics of one succeeded job, from its result (DESIGN.md section 5).
    The minority class is the one with the fewest training samples (the first, if tied),
    as the engine's minority_recall uses."""
    final = result["final"]
    counts = result["train_class_counts"]
    minority = min(range(len(counts)), key=counts.__getitem__)
    recall = next(row["recall"] for row in final["per_class"] if row["class"] == minority)
    return {
        "balanced_accuracy": final["balanced_accuracy"],
        "macro_f1": final["macro_f1"],
        "minority_recall": recall,
    }


def mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean and *sample* standard deviation (ddof=1, null below two values). Nulls (a
    non-finite number stored as null) are left out."""
    present = [v for v in values if v is not None]
    return {
        "mean": statistics.fmean(present) if present else None,
        "std": statistics.stdev(present) if len(present) >= 2 else None,
    }


def _key(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True)


def _without_seed(values: dict[str, Any]) -> dict[str, Any]:
    return {path: value for path, value in values.items() if path != SEED_PATH}


def _at(spec: dict[str, Any], path: str) -> Any:
    node: Any = spec
    for key in path.split("."):
        node = node[key]
    return node


@dataclass
class _Cell:
    values: dict[str, Any]  # as the client wrote them, train.seed left out
    jobs: list[str] = field(default_factory=list)
    results: list[dict[str, float | None]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "cell": self.values,
            "n": len(self.results),
            "jobs": self.jobs,
            **{metric: mean_std([r[metric] for r in self.results]) for metric in METRICS},
        }


def table(sweep: Sweep, jobs: Sequence[Job]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per cell, in grid order, and the job ids in the order of the combinations.

    A job is matched to its combination by the values at the grid's paths in its stored
    spec, compared with those of the re-expanded grid after the same validation (so 10 and
    10.0 match); rows show the values as the client wrote them.
    """
    grid: dict[str, list[Any]] = sweep.grid
    order: dict[str, int] = {}
    cells: dict[str, _Cell] = {}
    for index, combination in enumerate(expand(sweep.base, grid)):
        normal = JobSpec.model_validate(combination.spec).model_dump(mode="json")
        values = {path: _at(normal, path) for path in grid}
        order.setdefault(_key(values), index)
        cells.setdefault(_key(_without_seed(values)), _Cell(_without_seed(combination.values)))

    def values_of(job: Job) -> dict[str, Any]:
        return {path: _at(job.spec, path) for path in grid}

    ordered = sorted(jobs, key=lambda job: order[_key(values_of(job))])
    for job in ordered:
        cell = cells[_key(_without_seed(values_of(job)))]
        cell.jobs.append(job.id)
        if job.status == JobStatus.succeeded and job.result is not None:
            cell.results.append(job_metrics(job.result))
    return [cell.row() for cell in cells.values()], [job.id for job in ordered]
