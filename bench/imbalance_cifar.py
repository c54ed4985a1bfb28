"""Which remedy works on a step-imbalanced CIFAR-10 pair? (the scenario users bring)

CIFAR-10 airplane vs automobile from ../shared/data, automobile cut to 1/100 (5000 vs 50
before the validation split), small_cnn, 10 epochs on the CPU, every other field at its
default (Adam 1e-3, batch 128, cosine schedule, no augmentation below 20 epochs). Each
remedy is one job per seed through the engine (train_job, as the worker runs it), with
`decision: threshold`, so that each run reports the model's own decision (argmax,
`final_argmax`) and the decision tuned on validation (`final`) side by side. Test
metrics are on the full, balanced test split (1000 + 1000); mean and sample std over the
seeds (`train.seed` and `imbalance.seed` both, so the kept minority images differ).

The first row is not the service: it is the loop an engineer would write in twenty lines
(the issue's reference) on each seed's images (the same 50 automobiles as the service's
job): Adam 1e-3, batch 128, balanced class weights in F.cross_entropy, constant rate, no
augmentation, 10 epochs, no validation split (all 5000 + 50 train), the last epoch.

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

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from counterweight.service.data.splits import load_splits
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
PLAIN_LOOP = "plain PyTorch loop, balanced weights (not the service)"
REMEDIES: dict[str, dict[str, Any]] = {
    "cross_entropy": {},
    "focal (gamma 2)": {"loss": {"type": "focal", "gamma": 2.0}},
    "class_weight: balanced": {"class_weight": "balanced"},
    "class_weight: balanced, the old defaults (constant lr, augment)": {
        "class_weight": "balanced",
        "train": {"schedule": "constant", "augment": True},
    },
    "logit_adjusted (tau 1)": {"loss": {"type": "logit_adjusted", "tau": 1.0}},
    "logit_adjusted (tau 1), batch 32": {
        "loss": {"type": "logit_adjusted", "tau": 1.0},
        "train": {"batch_size": 32},
    },
    "ldam + drw (epoch 6), cosine head": {"loss": {"type": "ldam", "drw_epoch": 6}},
    "oversample": {"sampler": "oversample"},
    "oversample, augment": {"sampler": "oversample", "train": {"augment": True}},
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


def service_spec(change: dict[str, Any], seed: int, epochs: int) -> dict[str, Any]:
    """BASE with a remedy's fields merged in, for one seed."""
    spec = copy.deepcopy(BASE)
    spec["train"].update(epochs=epochs, seed=seed)
    spec["imbalance"]["seed"] = seed
    for key, value in copy.deepcopy(change).items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return spec


def plain_loop(data_root: Path, seed: int, epochs: int) -> dict[str, Any]:
    """The reference loop (module docstring) on the images the service's job of this seed
    gets: its training and validation rows together (the same 50 automobiles), and the
    same test split. Metrics shaped as the service's `final`."""
    splits = load_splits(JobSpec.model_validate(service_spec({}, seed, epochs)), data_root)

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).float() / 255  # uint8 (n, 3, 32, 32)

    x = tensor(np.concatenate([splits.x_train, splits.x_val]))
    y = torch.from_numpy(np.concatenate([splits.y_train, splits.y_val]))
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True)
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for c_in, c_out in ((3, 32), (32, 64), (64, 128)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    balanced = len(y) / (2 * torch.bincount(y).float())
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y)).split(128):
            loss = F.cross_entropy(model((x[idx] - mean) / std), y[idx], weight=balanced)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model((tensor(splits.x_test) - mean) / std).argmax(1).numpy()
    y_test = splits.y_test
    final = {
        "balanced_accuracy": float(balanced_accuracy_score(y_test, predicted)),
        "per_class": [{}, {"recall": float((predicted[y_test == 1] == 1).mean())}],
    }
    return {"final": final, "final_argmax": final, "selected_epoch": epochs}


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
    for name, change in {PLAIN_LOOP: {}, **REMEDIES}.items():
        if args.only and name not in args.only:
            continue
        runs = []
        for seed in args.seeds:
            started = time.perf_counter()
            if name == PLAIN_LOOP:
                metrics = plain_loop(args.data_root, seed, args.epochs)
            else:
                metrics = run(service_spec(change, seed, args.epochs), args.data_root)
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
