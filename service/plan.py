"""What a spec resolves to before anything trains: class counts, weights, warnings.

Shared by `POST /v1/jobs` (refuse what cannot run, at submit time) and
`POST /v1/jobs/validate` (show the user what they asked for).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.datasets import load_splits
from service.spec import JobSpec

FEW_SAMPLES = 10


@dataclass(frozen=True)
class Plan:
    class_names: list[str]
    counts: dict[str, list[int]]
    class_weight: list[float]
    warnings: list[str]


def resolve(spec: JobSpec, data_root: Path) -> Plan:
    """Load (from cache) and split the data as the worker will; raises DatasetError."""
    splits = load_splits(spec, data_root)
    k = len(splits.class_names)

    def count(y: np.ndarray) -> list[int]:
        return [int(c) for c in np.bincount(y, minlength=k)]

    counts = {
        "train": count(splits.y_train),
        "val": count(splits.y_val),
        "test": count(splits.y_test),
    }
    warnings = [
        f"class {c} ({splits.class_names[c]}) has only {n} training samples "
        f"(fewer than {FEW_SAMPLES}); its metrics will be noisy"
        for c, n in enumerate(counts["train"])
        if n < FEW_SAMPLES
    ]
    return Plan(splits.class_names, counts, [1.0] * k, warnings)
