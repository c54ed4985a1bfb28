"""The epoch loop shared by every task: checkpoints, resume, progress and model selection.

A task's train_job (workers.training.engine for classification,
workers.training.tagging for sequence labeling) builds its model, data and loss,
and hands them to `run_epochs` as a `Trainer`; `finish_job` then writes the
selected model with its card and returns the job's result.

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

import torch
from torch import Tensor, nn

from counterweight.service.rebalance.weights import JobWeights
from counterweight.service.spec import JobSpec, TrainSpec
from counterweight.workers.training.checkpoint import load_checkpoint, save_checkpoint, save_model
from counterweight.workers.training.optim import lr_at, set_lr

log = logging.getLogger(__name__)

REPORT_EVERY_SECONDS = 1.0
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "g_mean")  # per epoch, on val


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite: the spec's numbers (learning rate, weights) do not
    train. Retrying replays the same arithmetic, so the job fails at once."""


@dataclass(frozen=True)
class Progress:
    epoch: int  # epochs completed so far; inside an epoch, the ones before it
    epochs: int
    fraction: float  # 0..1 over the whole job, by batches; 1.0 once training has ended
    eta_seconds: float | None  # None until a batch has been timed
    metrics: dict[str, float]  # train_loss (running, this epoch) and the latest val_* metrics
    # Set on the report at the end of an epoch: that epoch's history row, which the
    # worker passes on as an "epoch" event (service.store.queue.events).
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
        train_loss = float(running[0] / running[1])
        _check_finite(state.epoch, train_loss, val_loss)
        row = {
            "epoch": state.epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val": {name: val[name] for name in (*SUMMARY_METRICS, "per_class_recall")},
        }
        state.history.append(row)
        state.batches_done = 0
        running.zero_()
        score = _score(row, train.select_by, trainer.minority)
        # Strictly better: on a tie the earlier epoch stays; the first epoch always counts.
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


def _check_finite(epoch: int, train_loss: float, val_loss: float) -> None:
    # Checked once an epoch, where the running sums are read anyway: a check per batch
    # would make the CPU wait for the GPU at every step.
    for name, value in (("training", train_loss), ("validation", val_loss)):
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"training diverged: the {name} loss of epoch {epoch} is {value}; lower "
                "train.lr, or narrow the range of class_weight and sample_weight"
            )


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
