"""Train one job: spec in, metrics and model files out. Never touches the database.

The worker calls `train_job` with a resolved device and two callbacks: `report`
(progress, for the job's status) and `should_stop` (cancel or shutdown). The
whole dataset lives on the device as tensors and batches are index slices: the
data sets are small, and this is much faster than a DataLoader.

Determinism: the initial weights come from `train.seed`, and epoch e's batch
order from a generator seeded with (seed, e). A checkpoint records how many
batches of the current epoch are done, so a resumed run replays the same
batches from where it stopped and ends with the same metrics as an
uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.datasets import Splits, load_splits
from service.fit import augment_enabled
from service.spec import JobSpec, TrainSpec
from service.weights import JobWeights, job_weights
from workers.training.augment import augment_batch, batch_generator
from workers.training.checkpoint import load_checkpoint, save_checkpoint, save_model
from workers.training.losses import build_loss
from workers.training.metrics import evaluate
from workers.training.models import Classifier, arch_kwargs, build_model
from workers.training.optim import build_optimizer, lr_at, set_lr
from workers.training.sampling import epoch_indices, epoch_length

log = logging.getLogger(__name__)

REPORT_EVERY_SECONDS = 1.0
EVAL_BATCH_SIZE = 4096  # inference only: large batches, bounded memory
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "g_mean")  # per epoch, on val
INPUT_DESCRIPTION = "float32 in [0, 1]; normalisation is applied inside the model"


@dataclass(frozen=True)
class Progress:
    epoch: int  # epochs completed so far; inside an epoch, the ones before it
    epochs: int
    fraction: float  # 0..1 over the whole job, by batches; 1.0 once training has ended
    eta_seconds: float | None  # None until a batch has been timed
    metrics: dict[str, float]  # train_loss (running, this epoch) and the latest val_* metrics
    # Set on the report at the end of an epoch: that epoch's history row, which the
    # worker passes on as an "epoch" event (service.queue.events).
    history_row: dict[str, Any] | None = None


@dataclass(frozen=True)
class TrainingResult:
    metrics: dict[str, Any]  # DESIGN.md section 5: history, final, selected_epoch, ...
    card: dict[str, Any]  # what was written to card.json


@dataclass
class TrainState:
    """Everything besides model and optimizer that a checkpoint carries."""

    epoch: int = 0  # epochs completed
    batches_done: int = 0  # batches of the next epoch already trained (mid-epoch stop)
    loss_sum: float = 0.0  # sum of w * loss over those batches
    weight_sum: float = 0.0  # sum of the loss denominators over those batches
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, Tensor] | None = None
    best_epoch: int = 0
    best_score: float = -math.inf
    wall_seconds: float = 0.0  # over all attempts, up to the checkpoint

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _score(row: dict[str, Any], select_by: str, minority: int) -> float:
    """How good a history row is by `select_by`; higher is better."""
    if select_by == "val_loss":
        return -float(row["val_loss"])
    if select_by == "last":
        return float(row["epoch"])  # always beats the rows before it
    if select_by == "minority_recall":
        return float(row["val"]["per_class_recall"][minority])
    return float(row["val"][select_by])


def _finished(state: TrainState, train: TrainSpec) -> bool:
    patience = train.early_stopping_patience
    stalled = patience is not None and state.epoch - state.best_epoch >= patience
    return state.epoch >= train.epochs or stalled


@torch.inference_mode()
def _logits(model: Classifier, x: Tensor) -> Tensor:
    model.eval()
    return torch.cat([model(x[i : i + EVAL_BATCH_SIZE]) for i in range(0, len(x), EVAL_BATCH_SIZE)])


def _evaluate(
    model: Classifier, x: Tensor, y: Tensor, splits: Splits, minority: int
) -> tuple[float, dict[str, Any]]:
    """(mean cross-entropy, metrics). The loss is plain CE, without smoothing or weights,
    so that validation losses compare across loss settings."""
    logits = _logits(model, x)
    loss = float(F.cross_entropy(logits, y))
    probs = logits.softmax(dim=1).cpu().numpy()
    return loss, evaluate(y.cpu().numpy(), probs, splits.class_names, minority)


def _progress_metrics(state: TrainState, running: Tensor) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if state.history:
        last = state.history[-1]
        metrics["train_loss"] = last["train_loss"]
        metrics["val_loss"] = last["val_loss"]
        for name in SUMMARY_METRICS:
            metrics[f"val_{name}"] = last["val"][name]
    if running[1] > 0:
        metrics["train_loss"] = float(running[0] / running[1])
    return metrics


def _inputs_on(x: np.ndarray, dev: torch.device) -> Tensor:
    """Model inputs on `dev` as float32 in [0, 1]. uint8 images (value / 255) cross to
    the device as they are, a quarter of the bytes, and are converted there."""
    inputs = torch.from_numpy(x).to(dev)
    return inputs.float().div_(255) if inputs.dtype == torch.uint8 else inputs


@dataclass
class Trainer:
    """What the epoch loop (`run_epochs`) needs from a task: the model and its optimizer,
    and how to order, train on and validate the task's training samples."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    samples_per_epoch: int
    epoch_order: Callable[[int], Tensor]  # epoch -> sample indices, on the device
    # (sample indices, epoch, batch) -> (sum of w * loss, denominator), under autocast
    batch_loss: Callable[[Tensor, int, int], tuple[Tensor, Tensor]]
    validate: Callable[[], tuple[float, dict[str, Any]]]  # -> (val loss, val metrics)
    minority: int  # the class with the fewest training samples (select_by minority_recall)


@dataclass(frozen=True)
class Run:
    state: TrainState  # wall_seconds over all attempts, to the end of training
    resumed_from_epoch: int


def run_epochs(
    spec: JobSpec,
    workdir: Path,
    trainer: Trainer,
    dev: torch.device,
    *,
    started: float,
    report: Callable[[Progress], None],
    should_stop: Callable[[], bool],
) -> Run | None:
    """Train epoch by epoch from the checkpoint in `workdir` (if it is this spec's), keeping
    the best model by `select_by`, which is loaded into the model at the end. None if
    `should_stop()` said so, after writing a checkpoint."""
    train, model, optimizer = spec.train, trainer.model, trainer.optimizer
    state = TrainState()
    checkpoint = load_checkpoint(workdir)
    if checkpoint is not None and checkpoint["fingerprint"] != spec.fingerprint():
        log.warning("checkpoint in %s is for another spec; starting over", workdir)
        checkpoint = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = TrainState(**checkpoint["state"])
        log.info("resuming at epoch %d, batch %d", state.epoch + 1, state.batches_done)
    resumed_from_epoch = state.epoch
    wall_before = state.wall_seconds

    batch_size = train.batch_size
    batches_per_epoch = math.ceil(trainer.samples_per_epoch / batch_size)
    total_batches = train.epochs * batches_per_epoch
    # (sum of w * loss, sum of denominators) of the epoch so far, kept on the device
    # so that training never waits for the GPU just to log a number.
    running = torch.tensor([state.loss_sum, state.weight_sum], dtype=torch.float64, device=dev)
    timed_batches, timing_since, last_report = 0, time.monotonic(), time.monotonic()

    def checkpoint_now() -> None:
        state.loss_sum, state.weight_sum = running.tolist()
        state.wall_seconds = wall_before + time.monotonic() - started
        save_checkpoint(
            workdir,
            {
                "fingerprint": spec.fingerprint(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "state": state.to_dict(),
            },
        )

    def progress(done: bool = False) -> Progress:
        batches = state.epoch * batches_per_epoch + state.batches_done
        eta = None
        if timed_batches:
            per_batch = (time.monotonic() - timing_since) / timed_batches
            eta = 0.0 if done else per_batch * (total_batches - batches)
        return Progress(
            epoch=state.epoch,
            epochs=train.epochs,
            fraction=1.0 if done else batches / total_batches,
            eta_seconds=eta,
            metrics=_progress_metrics(state, running),
        )

    # bfloat16 has float32's exponent range, so gradients need no GradScaler.
    amp = dev.type == "cuda" and train.amp
    while not _finished(state, train):
        order = trainer.epoch_order(state.epoch)
        model.train()
        for b in range(state.batches_done, batches_per_epoch):
            if should_stop():
                checkpoint_now()
                log.info("stopped at epoch %d, batch %d", state.epoch + 1, b)
                return None
            # The lr (and any augmentation) depend only on (epoch, batch): a resumed run
            # replays them without any scheduler or generator state.
            set_lr(optimizer, lr_at(train, state.epoch * batches_per_epoch + b, batches_per_epoch))
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                idx = order[b * batch_size : (b + 1) * batch_size]
                total, denominator = trainer.batch_loss(idx, state.epoch, b)
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(total / denominator)
            optimizer.step()
            running += torch.stack([total.detach(), denominator.detach()])
            state.batches_done = b + 1
            timed_batches += 1
            if time.monotonic() - last_report >= REPORT_EVERY_SECONDS:
                report(progress())
                last_report = time.monotonic()

        val_loss, val = trainer.validate()
        state.epoch += 1
        row = {
            "epoch": state.epoch,
            "train_loss": float(running[0] / running[1]),
            "val_loss": val_loss,
            "val": {name: val[name] for name in (*SUMMARY_METRICS, "per_class_recall")},
        }
        state.history.append(row)
        state.batches_done = 0
        running.zero_()
        score = _score(row, train.select_by, trainer.minority)
        # Strictly better: on a tie the earlier epoch stays. The first epoch always counts,
        # so that a NaN score (diverged training) still leaves a model to serve.
        if state.best_state is None or score > state.best_score:
            state.best_score, state.best_epoch = score, state.epoch
            # Kept on the CPU: GPU memory is for training, and a checkpoint loads there.
            state.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
        checkpoint_now()
        report(replace(progress(done=_finished(state, train)), history_row=row))
        last_report = time.monotonic()

    if state.epoch < train.epochs:
        log.info("early stop after epoch %d; best was epoch %d", state.epoch, state.best_epoch)
    assert state.best_state is not None  # at least one epoch ran: epochs >= 1
    model.load_state_dict(state.best_state)
    state.wall_seconds = wall_before + time.monotonic() - started
    return Run(state, resumed_from_epoch)


def finish_job(
    spec: JobSpec,
    workdir: Path,
    run: Run,
    model: nn.Module,
    card: dict[str, Any],
    final: dict[str, Any],
    counts: list[int],
    weights: JobWeights,
    dev: torch.device,
) -> TrainingResult:
    """Write the selected model with its card (the task's fields, then the spec, selection
    and final metrics) and return the job's result (DESIGN.md section 5)."""
    state = run.state
    card = {
        **card,
        "spec": spec.model_dump(mode="json"),
        "selected_epoch": state.best_epoch,
        "select_by": spec.train.select_by,
        "metrics": final,
    }
    save_model(workdir, model.state_dict(), card)
    metrics = {
        "history": state.history,
        "final": final,
        "selected_epoch": state.best_epoch,
        "select_by": spec.train.select_by,
        "train_class_counts": counts,
        "class_weight": weights.effective,
        "epochs_trained": state.epoch,
        "early_stopped": state.epoch < spec.train.epochs,
        "wall_seconds": state.wall_seconds,
        "device": str(dev),
        "resumed_from_epoch": run.resumed_from_epoch,
    }
    return TrainingResult(metrics=metrics, card=card)


def train_job(
    spec: JobSpec,
    workdir: Path,
    *,
    device: str,
    data_root: Path,
    home: Path | None = None,
    report: Callable[[Progress], None],
    should_stop: Callable[[], bool],
) -> TrainingResult | None:
    """Train `spec` in `workdir`, resuming from its checkpoint if there is one.

    `home` holds uploaded datasets (None: COUNTERWEIGHT_HOME). Returns None if
    `should_stop()` said so (after writing a checkpoint), else the result, with
    model.safetensors and card.json written to `workdir`. Raises
    DatasetError for bad data (not worth a retry); anything else is worth one.
    Sequence labeling jobs train in workers.training.tagging.
    """
    if spec.task == "sequence_labeling":
        from workers.training.tagging import train_tagger  # it builds on this module

        return train_tagger(
            spec, workdir, device=device, home=home, report=report, should_stop=should_stop
        )
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    train = spec.train
    splits = load_splits(spec, data_root, home)
    counts = splits.train_class_counts
    minority = int(np.argmin(counts))  # the first of the rarest, if several tie
    dev = torch.device(device)
    x_train, y_train_cpu = _inputs_on(splits.x_train, dev), torch.from_numpy(splits.y_train)
    x_val, y_val = _inputs_on(splits.x_val, dev), torch.from_numpy(splits.y_val).to(dev)
    # Per-sample weights w_i = class_weight[y_i] * sample_weight_i (DESIGN.md section 4).
    weights = job_weights(spec, splits)
    weight = torch.from_numpy(weights.per_sample).to(dev)

    # Initialise on the CPU from a private RNG: the same weights on any device, and the
    # worker's global RNG is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        model = build_model(
            spec.model.arch, splits.input_shape, splits.num_classes, **arch_kwargs(spec.model)
        )
    model.normalize.fit(x_train)
    model.to(dev)
    x_train, y_train = x_train.to(dev), y_train_cpu.to(dev)
    loss_fn = build_loss(spec.loss, counts, device=dev)
    augment = augment_enabled(spec, splits.input_shape)

    def epoch_order(epoch: int) -> Tensor:
        return epoch_indices(spec.sampler, y_train_cpu, train.seed, epoch).to(dev)

    def batch_loss(idx: Tensor, epoch: int, b: int) -> tuple[Tensor, Tensor]:
        x = x_train[idx]
        if augment:
            x = augment_batch(x, batch_generator(train.seed, epoch, b))
        return loss_fn(model(x), y_train[idx], weight[idx], epoch)

    run = run_epochs(
        spec,
        workdir,
        Trainer(
            model=model,
            optimizer=build_optimizer(model, train),
            # undersample visits fewer samples than the split holds; every epoch the same.
            samples_per_epoch=epoch_length(spec.sampler, y_train_cpu),
            epoch_order=epoch_order,
            batch_loss=batch_loss,
            validate=lambda: _evaluate(model, x_val, y_val, splits, minority),
            minority=minority,
        ),
        dev,
        started=started,
        report=report,
        should_stop=should_stop,
    )
    if run is None:
        return None
    x_test, y_test = _inputs_on(splits.x_test, dev), torch.from_numpy(splits.y_test)
    _, final = _evaluate(model, x_test, y_test.to(dev), splits, minority)

    card = {
        "arch": spec.model.arch,
        "model_kwargs": {
            "input_shape": list(splits.input_shape),
            "num_classes": splits.num_classes,
            **arch_kwargs(spec.model),
        },
        "class_names": splits.class_names,
        "input_shape": list(splits.input_shape),
        "input": INPUT_DESCRIPTION,
        "normalization": {
            "per": "channel (dim 0 of input_shape)",
            "mean": model.normalize.mean.flatten().tolist(),
            "std": model.normalize.std.flatten().tolist(),
        },
    }
    return finish_job(spec, workdir, run, model, card, final, counts, weights, dev)
