"""What the pages show, computed from what the JSON API answers: no second source of truth.

Pure functions on the API's own shapes (JobOut, the metrics of DESIGN.md section 5, a
ValidationReport, a SweepOut), so that the templates only lay them out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from counterweight.service.api.schemas import JobOut

HEAT_LEVELS = 10  # colour steps of a heat map cell (CSS classes h0..h10: no inline style)


def remedy(spec: dict[str, Any]) -> str:
    """The loss, class weights, sampler and decision of a spec, in one line."""
    loss = (spec.get("loss") or {}).get("type", "cross_entropy")
    weight = spec.get("class_weight")
    if isinstance(weight, dict):
        weight = "per class" if "effective_number" not in weight else "effective_number"
    sample = spec.get("sample_weight")
    parts = [loss]
    if weight is not None:
        parts.append(f"class_weight {weight}")
    if sample is not None:
        parts.append("sample_weight" if sample == "from_dataset" else "inline sample_weight")
    sampler = spec.get("sampler") or "none"
    if sampler != "none":
        parts.append(f"sampler {sampler}")
    decision = spec.get("decision")
    rule = decision.get("rule") if isinstance(decision, dict) else decision
    if rule and rule != "argmax":
        parts.append(f"decision {rule}")
    return ", ".join(parts)


def shown_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as a page shows it: an inline sample_weight by its length alone."""
    weights = spec.get("sample_weight")
    if isinstance(weights, list):
        return {**spec, "sample_weight": f"<{len(weights)} inline values>"}
    return spec


def dataset_choice(item: Any) -> tuple[str, str]:
    """A dataset of GET /v1/datasets as a choice of the new-job form: how a spec names it
    (JSON) and a label (a built-in's name; an upload's file name, id and classes)."""
    if item.source == "builtin":
        return json.dumps(item.dataset), str(item.id)
    label = f"{item.filename or 'upload'} ({item.id[:8]}, {item.num_classes} classes)"
    return json.dumps(item.dataset), label


def epochs_total(spec: dict[str, Any]) -> int:
    """The epochs a job runs unless it stops early: both stages of a two-stage job."""
    train = spec.get("train") or {}
    stage2 = train.get("stage2") or {}
    return int(train.get("epochs", 0)) + int(stage2.get("epochs", 0))


def dataset_name(spec: dict[str, Any]) -> str:
    dataset = spec.get("dataset") or {}
    name = str(dataset.get("name", "?"))
    return f"{name} {dataset['id']}" if dataset.get("id") else name


def minority_recall(scores: dict[str, Any] | None) -> float | None:
    """Recall of the class with the fewest training samples (the first, if tied), as the
    engine's minority_recall and the sweep table use."""
    if not scores or not scores.get("train_class_counts") or not scores.get("per_class_recall"):
        return None
    counts = scores["train_class_counts"]
    minority = min(range(len(counts)), key=counts.__getitem__)
    recall = scores["per_class_recall"][minority]
    return None if recall is None else float(recall)


def job_row(job: JobOut, scores: dict[str, Any] | None) -> dict[str, Any]:
    accuracy = scores.get("balanced_accuracy") if scores else None
    if accuracy is None and job.progress is not None:
        accuracy = job.progress.metrics.get("val_balanced_accuracy")
    return {
        "job": job,
        "dataset": dataset_name(job.spec),
        "remedy": remedy(job.spec),
        "balanced_accuracy": accuracy,
        "final": scores is not None,
        "minority_recall": minority_recall(scores),
    }


def heat_map(matrix: Sequence[Sequence[float]]) -> dict[str, list[list[dict[str, Any]]]]:
    """Counts and row-normalised shares, each cell with its colour level."""
    counts, shares = [], []
    for row in matrix:
        total = sum(row)
        share_row = [(value / total if total else 0.0) for value in row]
        levels = [round(s * HEAT_LEVELS) for s in share_row]
        counts.append([{"text": str(int(v)), "level": n} for v, n in zip(row, levels, strict=True)])
        shares.append([{"text": f"{s:.2f}", "level": round(s * HEAT_LEVELS)} for s in share_row])
    return {"counts": counts, "normalised": shares}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}; lists stay whole."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def differing_fields(specs: Sequence[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The dotted spec fields whose values are not the same in every spec."""
    flats = [flatten(spec) for spec in specs]
    keys = sorted(set().union(*flats))
    rows = []
    for key in keys:
        values = [flat.get(key) for flat in flats]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, values))
    return rows


def class_names(metrics: dict[str, Any]) -> list[str]:
    return [str(row.get("name", row["class"])) for row in metrics["final"]["per_class"]]


def recall_rows(metrics: Sequence[dict[str, Any] | None]) -> list[tuple[str, list[Any]]]:
    """One row per class name, in the order the jobs first name them: each job's test
    recall of that class (None: the job has no such class, or has not succeeded). By name,
    not index: jobs compared may keep different classes."""
    recalls: list[dict[str, float | None]] = [
        {str(row.get("name", row["class"])): row["recall"] for row in m["final"]["per_class"]}
        if m
        else {}
        for m in metrics
    ]
    names = list(dict.fromkeys(name for by_name in recalls for name in by_name))
    return [(name, [by_name.get(name) for by_name in recalls]) for name in names]
