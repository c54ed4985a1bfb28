"""Which remedy works on a step-imbalanced CIFAR-10 pair? (the scenario users bring)

CIFAR-10 airplane vs automobile from ../shared/data, automobile cut to 1/100
(5000 vs 50 before the validation split), small_cnn, 10 epochs on the CPU
(SGD with cosine decay), the checkpoint selected by validation balanced
accuracy. Each remedy is one
job through the engine (train_job, as the worker runs it); test metrics are on
the full, balanced test split (1000 + 1000).

    .venv/bin/python -m bench.imbalance_cifar [--data-root var/bench-data] [--epochs 10]
"""

from __future__ import annotations

import argparse
import copy
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
    "imbalance": {"profile": "step", "ratio": 100, "minority": [1], "seed": 0},
    "model": {"arch": "small_cnn"},
    # The standard CIFAR recipe (SGD, momentum, weight decay, cosine): with 45 minority
    # images, Adam at a constant rate swung the minority decision from epoch to epoch.
    "train": {
        "epochs": 10,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "seed": 0,
        "device": "cpu",
    },
}
REMEDIES: dict[str, dict[str, Any]] = {
    "cross_entropy": {},
    "focal (gamma 2)": {"loss": {"type": "focal", "gamma": 2.0}},
    "class_weight: balanced": {"class_weight": "balanced"},
    "logit_adjusted (tau 1)": {"loss": {"type": "logit_adjusted", "tau": 1.0}},
    "balanced_softmax": {"loss": {"type": "balanced_softmax"}},
    "ldam + drw (epoch 6)": {"loss": {"type": "ldam", "drw_epoch": 6}},
    "oversample": {"sampler": "oversample"},
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", type=Path, default=Path("var/bench-data"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--only", nargs="*", help="remedy names to run (default: all)")
    args = parser.parse_args()
    ensure_cifar(args.data_root)
    rows = []
    for name, change in REMEDIES.items():
        if args.only and name not in args.only:
            continue
        spec = copy.deepcopy(BASE)
        spec["train"]["epochs"] = args.epochs
        spec.update(copy.deepcopy(change))
        started = time.perf_counter()
        metrics = run(spec, args.data_root)
        final = metrics["final"]
        rows.append(
            (
                name,
                final["balanced_accuracy"],
                final["per_class"][1]["recall"],
                final["macro_f1"],
                final["accuracy"],
                metrics["selected_epoch"],
                time.perf_counter() - started,
            )
        )
        print(f"done: {name}", flush=True)
    counts = metrics["train_class_counts"]
    print(f"\nairplane vs automobile, step ratio 100, train counts {counts}, {args.epochs} epochs")
    print(
        f"{'remedy':<24} {'bal. acc':>8} {'min. rec':>8} {'macro F1':>8} {'acc':>6} "
        f"{'epoch':>5} {'wall s':>7}"
    )
    for name, bal, rec, f1, acc, epoch, wall in rows:
        print(f"{name:<24} {bal:8.3f} {rec:8.3f} {f1:8.3f} {acc:6.3f} {epoch:5d} {wall:7.1f}")


if __name__ == "__main__":
    main()
