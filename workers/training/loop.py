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

Two-stage training (train.stage2, DESIGN.md section 4): when stage one ends (its
epochs run, or early stopping), the model it selected is loaded, the task's
`HeadRetraining.start` re-draws the head from the seed and freezes the rest, and
stage two trains the head in eval mode (batch norms keep their statistics) with its
own sampler and learning rates. Stage two's epochs are numbered from train.epochs + 1
whenever stage one ended, and it selects among its own epochs. The switch is a pure
function of stage one's last checkpoint, so a job resumes across it as anywhere else;
a checkpoint taken in stage two says so (`TrainState.stage`).
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
from counterweight.workers.training.metrics import with_test_statistics
from counterweight.workers.training.optim import lr_at, set_lr
from counterweight.workers.training.selection import Selection, epoch_key

log = logging.getLogger(__name__)

REPORT_EVERY_SECONDS = 1.0
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "g_mean")  # per epoch, on val


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite: the spec's numbers (learning rate, weights) do not
    train. Retrying replays the same arithmetic, so the job fails at once."""


@dataclass(frozen=True)
class Progress:
    epoch: int  # epochs completed so far (stage two counts on from train.epochs)
    epochs: int  # both stages
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
    # Fields named best_* are the current stage's model selection: stage two starts afresh.
    best_state: dict[str, Tensor] | None = None
    best_epoch: int = 0
    best_key: list[float] = field(default_factory=list)  # workers.training.selection
    wall_seconds: float = 0.0  # over all attempts, up to the checkpoint
    stage: int = 1  # 2 once stage two (train.stage2) has begun
    stage1_selected_epoch: int = 0  # the epoch stage two started from; 0 before it

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _total_epochs(train: TrainSpec) -> int:
    return train.epochs + (train.stage2.epochs if train.stage2 is not None else 0)


def _finished(state: TrainState, train: TrainSpec, selection: Selection) -> bool:
    """Whether the current stage is over: its epochs all ran, or early stopping ended it."""
    first, end = (0, train.epochs) if state.stage == 1 else (train.epochs, _total_epochs(train))
    patience = train.early_stopping_patience if selection.early_stopping else None
    stalled = patience is not None and state.epoch - max(state.best_epoch, first) >= patience
    return state.epoch >= end or stalled


def _done(state: TrainState, train: TrainSpec, selection: Selection) -> bool:
    """Whether the whole job is over: its last stage finished."""
    last = state.stage == 2 or train.stage2 is None
    return last and _finished(state, train, selection)


def _stage2_schedule(train: TrainSpec) -> TrainSpec:
    """Stage two's learning rates, as lr_at reads them: its own lr and schedule over its
    own epochs, without warm-up."""
    assert train.stage2 is not None
    stage2 = train.stage2
    lr = train.lr if stage2.lr is None else stage2.lr
    changes = {"epochs": stage2.epochs, "lr": lr, "schedule": stage2.schedule}
    return train.model_copy(update={**changes, "warmup_epochs": 0, "step_milestones": None})


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
    selection: Selection  # how the epoch to keep is chosen (workers.training.selection)
    stage2: HeadRetraining | None = None  # set when the spec has train.stage2


@dataclass(frozen=True)
class HeadRetraining:
    """Stage two of a two-stage job (classifier re-training). The Trainer's epoch_order
    and batch_loss serve its epochs too, which are numbered from train.epochs on."""

    samples_per_epoch: int  # with stage two's sampler
    # Re-draw the head (the same weights every time), freeze the rest, and return an
    # optimizer over the head alone.
    start: Callable[[], torch.optim.Optimizer]


@dataclass(frozen=True)
class Run:
    state: TrainState  # wall_seconds over all attempts, to the end of training
    resumed_from_epoch: int
    selection: Selection


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
        state = TrainState(**checkpoint["state"])
        if state.stage == 2:  # the head's optimizer, the rest frozen, as when stage two began
            assert trainer.stage2 is not None
            optimizer = trainer.stage2.start()
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        log.info("resuming at epoch %d, batch %d", state.epoch + 1, state.batches_done)
    resumed_from_epoch = state.epoch
    wall_before = state.wall_seconds

    batch_size = train.batch_size
    # Batches per epoch of stage one, and of stage two (which has its own sampler).
    per_epoch = [math.ceil(trainer.samples_per_epoch / batch_size)]
    if trainer.stage2 is not None:
        per_epoch.append(math.ceil(trainer.stage2.samples_per_epoch / batch_size))
    stage2_epochs = _total_epochs(train) - train.epochs
    total_batches = train.epochs * per_epoch[0] + stage2_epochs * per_epoch[-1]
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
        stage1 = min(state.epoch, train.epochs) * per_epoch[0]
        batches = stage1 + (state.epoch - min(state.epoch, train.epochs)) * per_epoch[-1]
        batches += state.batches_done
        eta = None
        if timed_batches:
            per_batch = (time.monotonic() - timing_since) / timed_batches
            eta = 0.0 if done else per_batch * (total_batches - batches)
        return Progress(
            epoch=state.epoch,
            epochs=_total_epochs(train),
            fraction=1.0 if done else batches / total_batches,
            eta_seconds=eta,
            metrics=_progress_metrics(state, running),
        )

    # bfloat16 has float32's exponent range, so gradients need no GradScaler.
    amp = dev.type == "cuda" and train.amp
    selection = trainer.selection
    while not _done(state, train, selection):
        if _finished(state, train, selection):  # stage one is over: stage two begins
            optimizer = _begin_stage2(state, trainer, train)
            continue
        in_stage1 = state.stage == 1
        batches_per_epoch = per_epoch[state.stage - 1]
        schedule, first_epoch = (train, 0) if in_stage1 else (_stage2_schedule(train), train.epochs)
        order = trainer.epoch_order(state.epoch)
        model.train(in_stage1)  # stage two: frozen features, batch norm statistics included
        for b in range(state.batches_done, batches_per_epoch):
            if should_stop():
                checkpoint_now()
                log.info("stopped at epoch %d, batch %d", state.epoch + 1, b)
                return None
            # The lr (and any augmentation) depend only on (epoch, batch): a resumed run
            # replays them without any scheduler or generator state.
            step = (state.epoch - first_epoch) * batches_per_epoch + b
            set_lr(optimizer, lr_at(schedule, step, batches_per_epoch))
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
        if train.stage2 is not None:
            row["stage"] = state.stage
        state.history.append(row)
        log.info(
            "epoch %d: train_loss %.4f, val_loss %.4f, val balanced_accuracy %.4f",
            state.epoch,
            train_loss,
            val_loss,
            val["balanced_accuracy"] if val["balanced_accuracy"] is not None else float("nan"),
        )
        state.batches_done = 0
        running.zero_()
        stage_rows = [r for r in state.history if r.get("stage", 1) == state.stage]
        key = epoch_key(stage_rows, selection.rule, trainer.minority)
        # The key ends with the epoch, so a full tie goes to the later epoch.
        if state.best_state is None or key > state.best_key:
            state.best_key, state.best_epoch = key, state.epoch
            # Kept on the CPU: GPU memory is for training, and a checkpoint loads there.
            state.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
        checkpoint_now()
        report(replace(progress(done=_done(state, train, selection)), history_row=row))
        last_report = time.monotonic()

    if len(state.history) < _total_epochs(train):
        log.info("early stop after epoch %d; best was epoch %d", state.epoch, state.best_epoch)
    assert state.best_state is not None  # at least one epoch ran: epochs >= 1
    model.load_state_dict(state.best_state)
    state.wall_seconds = wall_before + time.monotonic() - started
    return Run(state, resumed_from_epoch, selection)


def _begin_stage2(state: TrainState, trainer: Trainer, train: TrainSpec) -> torch.optim.Optimizer:
    """End stage one: load the model it selected, start its selection afresh, and hand the
    model to classifier re-training; returns stage two's optimizer."""
    assert state.best_state is not None and trainer.stage2 is not None
    trainer.model.load_state_dict(state.best_state)
    log.info("stage one ended; stage two re-trains the head of epoch %d", state.best_epoch)
    state.stage1_selected_epoch = state.best_epoch
    fresh = TrainState()
    for f in fields(TrainState):
        if f.name.startswith("best_"):
            setattr(state, f.name, getattr(fresh, f.name))
    state.stage, state.epoch = 2, train.epochs
    return trainer.stage2.start()


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
    and final metrics) and return the job's result (DESIGN.md section 5). `final` is the
    test split's `evaluate`; its bootstrap intervals and shot groups are added here."""
    state = run.state
    final = with_test_statistics(final, counts)
    # A two-stage job selects in stage two, which started from stage one's selection.
    stages = {"stage1_selected_epoch": state.stage1_selected_epoch} if spec.train.stage2 else {}
    card = {
        **card,
        "spec": spec.model_dump(mode="json"),
        "selected_epoch": state.best_epoch,
        "select_by": spec.train.select_by,
        "selection": run.selection.to_dict(),
        **stages,
        "metrics": final,
    }
    save_model(workdir, model.state_dict(), card)
    metrics = {
        "history": state.history,
        "final": final,
        "selected_epoch": state.best_epoch,
        "select_by": spec.train.select_by,
        "selection": run.selection.to_dict(),
        **stages,
        "train_class_counts": counts,
        "class_weight": weights.effective,
        "epochs_trained": len(state.history),
        "early_stopped": len(state.history) < _total_epochs(spec.train),
        "wall_seconds": state.wall_seconds,
        "device": str(dev),
        "resumed_from_epoch": run.resumed_from_epoch,
    }
    return TrainingResult(metrics=metrics, card=card)
