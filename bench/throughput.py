"""Training throughput: our epoch loop against a DataLoader loop, and the service's overhead.

1. Images per second of one training epoch of small_cnn on two CIFAR-10 classes
   (10,000 32x32 JPEGs, batch 128, random crop with 4 px zero padding and
   horizontal flip, Adam), two ways, in one run:
   - ours: train_job with an image_folder spec, as the worker runs it: the data
     decoded once into a tensor on the device, batches as index slices,
     augmentation on the device (workers.training.augment).
   - dataloader: a plain PyTorch loop over torchvision's ImageFolder and a
     DataLoader (num_workers=2: the machine has 2 cores) with per-sample
     transforms RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor; the
     same model, optimizer and data.
   Both clocks run from just before the first batch's step to just before the
   last one's (the last batch may be short): the steady state of the loop.
   Ours decodes the dataset before its loop, once per process; the DataLoader
   decodes every JPEG inside its loop, every epoch: that is the difference
   measured. Achieved GFLOP/s = 3 x forward FLOPs per image (FlopCounterMode;
   backward is about twice the forward) x images per second.

2. Service overhead: the same job, 3 epochs (~30 s on an idle machine), through
   the real API and worker processes (claim -> finish on the database clock, and
   the job's own wall_seconds) against train_job called directly in another
   fresh process (DirectProcess). Each side first runs the job for one epoch
   (imports, the decoded-dataset cache, first-use allocations), then the two
   take turns, each going first in every other pair. Also the CPU seconds each
   process spent on the job: on a shared machine they vary less than wall time,
   and they include the worker's heartbeat thread and database writes.

    .venv/bin/python -m bench.throughput [--data-root var/bench-data] [--overhead-epochs 3]

The CIFAR-10 archive (../shared/data) is extracted once under the data root
(DATA_ROOT/cifar10/{train,test}/<class>/*.jpg) and reused by later runs.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision.datasets import ImageFolder

from bench.imbalance_cifar import ensure_cifar
from counterweight.service.spec import JobSpec, TrainSpec
from counterweight.workers.training.engine import train_job
from counterweight.workers.training.models import build_model
from counterweight.workers.training.optim import build_optimizer
from tests.processes import TERMINAL, Service

PAIR = ("airplane", "automobile")  # CIFAR-10 classes 0 and 1: 5,000 training images each
PAIR_FOLDER = "cifar10-" + "-".join(PAIR)
BATCH_SIZE = 128
INPUT_SHAPE = (3, 32, 32)

THROUGHPUT_JOB: dict[str, Any] = {
    "dataset": {"name": "image_folder", "path": PAIR_FOLDER, "val_fraction": 0.05},
    "model": {"arch": "small_cnn"},
    "train": {"epochs": 1, "batch_size": BATCH_SIZE, "augment": True, "device": "cpu"},
}


@dataclasses.dataclass(frozen=True)
class LoopTiming:
    images: int  # trained between the first and the last clock reading
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def ensure_pair_folder(data_root: Path) -> None:
    """DATA_ROOT/cifar10 from the archive (once), and an image_folder of the PAIR classes
    beside it whose class folders link into it: both loops read the same files."""
    ensure_cifar(data_root)
    for split in ("train", "test"):
        for name in PAIR:
            link = data_root / PAIR_FOLDER / split / name
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(Path("..", "..", "cifar10", split, name))


def loop_timing(clock: list[float], batches: int) -> LoopTiming:
    """From the clock readings taken before each batch of one epoch: all but the last
    batch are full, and they ran between the first reading and the last."""
    assert len(clock) == batches, (len(clock), batches)
    return LoopTiming((batches - 1) * BATCH_SIZE, clock[-1] - clock[0])


def time_ours(data_root: Path) -> LoopTiming:
    clock: list[float] = []

    def should_stop() -> bool:  # the engine asks before every batch
        clock.append(time.perf_counter())
        return False

    with tempfile.TemporaryDirectory() as workdir:
        result = train_job(
            JobSpec.model_validate(THROUGHPUT_JOB),
            Path(workdir),
            device="cpu",
            data_root=data_root,
            report=lambda progress: None,
            should_stop=should_stop,
        )
    assert result is not None
    trained = sum(result.metrics["train_class_counts"])
    return loop_timing(clock, -(-trained // BATCH_SIZE))


def time_dataloader(data_root: Path) -> LoopTiming:
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
    dataset = ImageFolder(str(data_root / PAIR_FOLDER / "train"), transform=transform)
    loader = DataLoader(
        dataset,
        batch_size=BATCH_SIZE,
        shuffle=True,
        num_workers=2,
        generator=torch.Generator().manual_seed(0),
    )
    torch.manual_seed(0)
    model = build_model("small_cnn", INPUT_SHAPE, len(PAIR))
    optimizer = build_optimizer(model, TrainSpec())
    model.train()
    clock: list[float] = []
    for x, y in loader:
        clock.append(time.perf_counter())
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
    return loop_timing(clock, len(loader))


def forward_flops_per_image() -> float:
    model = build_model("small_cnn", INPUT_SHAPE, len(PAIR))
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(BATCH_SIZE, *INPUT_SHAPE))
    total: int = counter.get_total_flops()
    return total / BATCH_SIZE


@dataclasses.dataclass(frozen=True)
class JobTiming:
    wall: float  # direct: around the train_job call; worker: claim -> finish
    wall_seconds: float  # the job's own metric
    cpu: float  # CPU seconds of the process running it, all threads, user + system


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_direct(spec: dict[str, Any], data_root: Path) -> JobTiming:
    with tempfile.TemporaryDirectory() as workdir:
        started, cpu_before = time.perf_counter(), time.process_time()
        result = train_job(
            JobSpec.model_validate(spec),
            Path(workdir),
            device="cpu",
            data_root=data_root,
            report=lambda progress: None,
            should_stop=lambda: False,
        )
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    assert result is not None
    return JobTiming(wall, result.metrics["wall_seconds"], cpu)


class DirectProcess:
    """train_job called directly, in a process of its own as the worker's is: a fresh
    interpreter that runs the specs it reads from stdin (JSON, one a line) and answers
    each with its JobTiming. Timed in the bench's own process, the direct runs would
    inherit its state (the DataLoader run, a second decoded dataset) and not compare."""

    def __init__(self, data_root: Path) -> None:
        command = [sys.executable, "-m", "bench.throughput", "--serve-direct"]
        self.proc = subprocess.Popen(
            [*command, "--data-root", str(data_root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, spec: dict[str, Any]) -> JobTiming:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        return JobTiming(**json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve_direct(data_root: Path) -> None:
    """The DirectProcess side."""
    for line in sys.stdin:
        timing = run_direct(json.loads(line), data_root)
        print(json.dumps(dataclasses.asdict(timing)), flush=True)


def run_on_worker(service: Service, worker_pid: int, spec: dict[str, Any]) -> JobTiming:
    cpu_before = process_cpu_seconds(worker_pid)
    job_id = service.submit(spec)
    # Polled once a second, not at the test harness's 20/s: the API answering polls
    # would take CPU from the job and be counted as the service's overhead.
    job = service.job(job_id)
    while job["status"] not in TERMINAL:
        time.sleep(1.0)
        job = service.job(job_id)
    assert job["status"] == "succeeded", job
    claim_to_finish = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(
        job["started_at"]
    )
    cpu = process_cpu_seconds(worker_pid) - cpu_before  # with < 1 s of idle polling
    metrics = service.http.get(f"/v1/jobs/{job_id}/metrics").json()
    return JobTiming(claim_to_finish.total_seconds(), metrics["wall_seconds"], cpu)


def measure_overhead(data_root: Path, epochs: int, pairs: int) -> list[tuple[JobTiming, JobTiming]]:
    spec = copy.deepcopy(THROUGHPUT_JOB)
    spec["train"]["epochs"] = epochs
    results = []
    with tempfile.TemporaryDirectory() as home:
        service = Service(
            Path(home), f"sqlite:///{home}/bench.db", data_root=str(data_root.resolve())
        )
        direct = DirectProcess(data_root)
        try:
            service.start_api()
            worker = service.start_worker().pid
            run_on_worker(service, worker, THROUGHPUT_JOB)
            direct.run(THROUGHPUT_JOB)
            for pair in range(pairs):
                if pair % 2:
                    on_worker = run_on_worker(service, worker, spec)
                    results.append((direct.run(spec), on_worker))
                else:
                    results.append((direct.run(spec), run_on_worker(service, worker, spec)))
        finally:
            direct.close()
            service.stop()
    return results


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", type=Path, default=Path("var/bench-data"))
    parser.add_argument("--overhead-epochs", type=int, default=3)
    parser.add_argument("--overhead-pairs", type=int, default=3)
    parser.add_argument("--serve-direct", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_direct:
        serve_direct(args.data_root)
        return
    ensure_pair_folder(args.data_root)

    flops = 3 * forward_flops_per_image()
    ours = time_ours(args.data_root)
    loader = time_dataloader(args.data_root)
    overhead = measure_overhead(args.data_root, args.overhead_epochs, args.overhead_pairs)

    print(
        f"machine: {cpu_name()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )
    print(f"\nsmall_cnn on {' + '.join(PAIR)}, one epoch, batch {BATCH_SIZE}, CPU")
    print(f"training FLOPs per image (3 x forward): {flops / 1e6:.1f} M")
    print(f"{'loop':<12} {'images':>7} {'seconds':>8} {'images/s':>9} {'GFLOP/s':>8}")
    for name, timing in (("ours", ours), ("dataloader", loader)):
        rate = timing.images_per_second
        print(
            f"{name:<12} {timing.images:7d} {timing.seconds:8.2f} {rate:9.1f} "
            f"{rate * flops / 1e9:8.2f}"
        )
    print(f"speed-up: {ours.images_per_second / loader.images_per_second:.2f}x")

    print(f"\nservice overhead: the same job, {args.overhead_epochs} epochs")
    print(
        f"{'pair':<5} {'direct s':>9} {'claim->finish s':>16} {'ratio':>6} "
        f"{'wall_seconds w/d':>17} {'CPU s w/d':>13} {'ratio':>6}"
    )
    wall_ratios, cpu_ratios = [], []
    for i, (direct, worker) in enumerate(overhead, start=1):
        wall_ratios.append(worker.wall / direct.wall)
        cpu_ratios.append(worker.cpu / direct.cpu)
        print(
            f"{i:<5} {direct.wall:9.2f} {worker.wall:16.2f} {wall_ratios[-1]:6.3f} "
            f"{worker.wall_seconds:8.2f}/{direct.wall_seconds:<8.2f} "
            f"{worker.cpu:6.1f}/{direct.cpu:<6.1f} {cpu_ratios[-1]:6.3f}"
        )
    outside = statistics.median(w.wall - w.wall_seconds for _, w in overhead)
    print(
        f"median overhead: wall {(statistics.median(wall_ratios) - 1) * 100:+.1f}%, "
        f"CPU {(statistics.median(cpu_ratios) - 1) * 100:+.1f}%; "
        f"claim->finish outside train_job: {outside:.3f} s"
    )


if __name__ == "__main__":
    main()
