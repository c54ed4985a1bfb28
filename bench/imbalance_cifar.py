"""Which remedy works on a step-imbalanced CIFAR-10 pair? (the scenario users bring)

CIFAR-10 airplane vs automobile from ../shared/data, automobile cut to 1/100
(5000 vs 50 before the validation split), small_cnn, 10 epochs on the CPU, every
other field at its default (Adam 1e-3, batch 128, augmentation on). Each remedy is
one job per seed through the engine (train_job, as the worker runs it), with
`decision: threshold`, so that each run reports the model's own decision (argmax,
`final_argmax`) and the decision tuned on validation (`final`) side by side. Test
metrics are on the full, balanced test split (1000 + 1000); mean and sample std over
the seeds (`train.seed` and `imbalance.seed` both, so the kept minority images differ).

    .venv/bin/python -m bench.imbalance_cifar [--data-root var/bench-data] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from counterweight.service.spec import JobSpec
from counterweight.workers.training.engine import train_job

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"

BASE: dict[str, Any] = {
    "dataset": {"name": "image_folder", "path": "cifar10", "classes": [0, 1]},
    "imbalance": {"profile": "step", "ratio": 100, "minority": [1]},
    "model": {"arch": "small_cnn"},
    "decision": "threshold",
    "train": {"epochs": 10, "device": "cpu"},
}
REMEDIES: dict[str, dict[str, Any]] = {
    "cross_entropy": {},
    "focal (gamma 2)": {"loss": {"type": "focal", "gamma": 2.0}},
    "class_weight: balanced": {"class_weight": "balanced"},
    "logit_adjusted (tau 1)": {"loss": {"type": "logit_adjusted", "tau": 1.0}},
    "ldam + drw (epoch 6)": {"loss": {"type": "ldam", "drw_epoch": 6}},
    "oversample": {"sampler": "oversample"},
    "oversample, cosine lr": {"sampler": "oversample", "train": {"schedule": "cosine"}},
    "two-stage: cRT, 3 epochs": {"train": {"stage2": {"epochs": 3}}},
}


def ensure_cifar(data_root: Path) -> None:
    target = data_root / "cifar10"
    if (target / "test").is_dir():
        return
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(SHARED_CIFAR) as archive:
        archive.extractall(target, filter="data")


def run(spec_dict: dict[str, Any], data_root: Path) -> dict[str, Any]:
    spec = JobSpec.model_validate(spec_dict)
    with tempfile.TemporaryDirectory() as workdir:
        result = train_job(
            spec,
            Path(workdir),
            device="cpu",
            data_root=data_root,
            report=lambda progress: None,
            should_stop=lambda: False,
        )
    assert result is not None
    return result.metrics


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", type=Path, default=Path("var/bench-data"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", help="remedy names to run (default: all)")
    args = parser.parse_args()
    ensure_cifar(args.data_root)
    table = []
    for name, change in REMEDIES.items():
        if args.only and name not in args.only:
            continue
        runs = []
        for seed in args.seeds:
            spec = copy.deepcopy(BASE)
            spec["train"].update(epochs=args.epochs, seed=seed)
            spec["imbalance"]["seed"] = seed
            for key, value in copy.deepcopy(change).items():
                spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
            started = time.perf_counter()
            metrics = run(spec, args.data_root)
            runs.append((metrics, time.perf_counter() - started))
            print(f"done: {name}, seed {seed}, {runs[-1][1]:.0f} s", flush=True)
        raw = [m["final_argmax"] for m, _ in runs]
        tuned = [m["final"] for m, _ in runs]
        table.append(
            (
                name,
                mean_std([f["balanced_accuracy"] for f in raw]),
                mean_std([f["per_class"][1]["recall"] for f in raw]),
                mean_std([f["balanced_accuracy"] for f in tuned]),
                mean_std([f["per_class"][1]["recall"] for f in tuned]),
                [m["selected_epoch"] for m, _ in runs],
                statistics.mean(wall for _, wall in runs),
            )
        )
    print(f"\nairplane vs automobile, step ratio 100, {args.epochs} epochs, seeds {args.seeds}")
    print(
        "| remedy | bal. acc. (argmax) | min. recall (argmax) | bal. acc. (tuned) "
        "| min. recall (tuned) | selected epochs | wall s / run |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, bal, rec, tbal, trec, epochs, wall in table:
        print(f"| {name} | {bal} | {rec} | {tbal} | {trec} | {epochs} | {wall:.0f} |")


if __name__ == "__main__":
    main()
