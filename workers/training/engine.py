"""Train one job: spec in, metrics and model files out. Never touches the database.

The worker calls `train_job` with a resolved device and two callbacks: `report`
(progress, for the job's status) and `should_stop` (cancel or shutdown). The
whole dataset lives on the device as tensors and batches are index slices: the
data sets are small, and this is much faster than a DataLoader.

This module is the classification job: data, model, loss and evaluation. The
epoch loop, checkpoints, resume and model selection, which sequence labeling
(workers.training.tagging) shares, are workers.training.loop's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from counterweight.service.architectures import arch_kwargs, augment_enabled, head_kwargs
from counterweight.service.data.splits import Splits, load_splits
from counterweight.service.rebalance.decision import tune_decision
from counterweight.service.rebalance.weights import job_weights
from counterweight.service.spec import JobSpec
from counterweight.workers.training.augment import augment_batch, batch_generator
from counterweight.workers.training.loop import (
    HeadRetraining,
    Progress,
    Trainer,
    TrainingResult,
    finish_job,
    run_epochs,
)
from counterweight.workers.training.losses import build_loss, sample_weights
from counterweight.workers.training.metrics import evaluate, with_test_statistics
from counterweight.workers.training.models import Classifier, build_model, retrain_head
from counterweight.workers.training.optim import build_optimizer
from counterweight.workers.training.sampling import (
    epoch_indices,
    epoch_length,
    rebalancing_on,
    sampler_at,
)
from counterweight.workers.training.selection import selection_for, selection_score
from counterweight.workers.training.tagging import train_tagger

EVAL_BATCH_SIZE = 4096  # inference only: large batches, bounded memory
INPUT_DESCRIPTION = "float32 in [0, 1]; normalisation is applied inside the model"


@torch.inference_mode()
def _logits(model: Classifier, x: Tensor) -> Tensor:
    model.eval()
    return torch.cat([model(x[i : i + EVAL_BATCH_SIZE]) for i in range(0, len(x), EVAL_BATCH_SIZE)])


def _evaluate(
    model: Classifier, x: Tensor, y: Tensor, splits: Splits, minority: int
) -> tuple[float, dict[str, Any]]:
    """(mean cross-entropy, metrics). The loss is plain CE, without smoothing or weights,
    so that validation losses compare across loss settings."""
    return _scored(_logits(model, x), y, splits, minority)


def _scored(
    logits: Tensor, y: Tensor, splits: Splits, minority: int
) -> tuple[float, dict[str, Any]]:
    loss = float(F.cross_entropy(logits, y))
    probs = logits.softmax(dim=1).cpu().numpy()
    return loss, evaluate(y.cpu().numpy(), probs, splits.class_names, minority)


def _decision(spec: JobSpec, val_logits: Tensor, splits: Splits, minority: int) -> dict[str, Any]:
    """The spec's decision rule tuned on the validation split for the selection metric
    (balanced accuracy when selecting by val_loss or the last epoch)."""
    select_by = spec.train.select_by
    metric = "balanced_accuracy" if select_by in ("val_loss", "last") else select_by
    k = splits.num_classes

    def score(y: np.ndarray, logits: np.ndarray) -> float:
        return selection_score(y, logits.argmax(axis=1), k, metric, minority)

    logits = val_logits.double().cpu().numpy()
    decision = tune_decision(spec.decision, logits, splits.y_val, splits.train_class_counts, score)
    return {**decision, "tuned_for": metric}


def _inputs_on(x: np.ndarray, dev: torch.device) -> Tensor:
    """Model inputs on `dev` as float32 in [0, 1]. uint8 images (value / 255) cross to
    the device as they are, a quarter of the bytes, and are converted there."""
    inputs = torch.from_numpy(x).to(dev)
    return inputs.float().div_(255) if inputs.dtype == torch.uint8 else inputs


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
    # Sample i weighs class_weight[y_i] * sample_weight_i (DESIGN.md section 4). The loss
    # applies the class weights itself (label smoothing weighs each class's term by that
    # class's weight, as F.cross_entropy does), so `weight` is the sample weights alone.
    weights = job_weights(spec, splits)
    weight = sample_weights(splits.train_sample_weight, len(splits.y_train)).to(dev)

    # The arch's options and its head (LDAM's is the cosine head), as the card records them.
    model_kwargs = {**arch_kwargs(spec.model), **head_kwargs(spec.loss)}
    # Initialise on the CPU from a private RNG: the same weights on any device, and the
    # worker's global RNG is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        model = build_model(spec.model.arch, splits.input_shape, splits.num_classes, **model_kwargs)
    model.normalize.fit(x_train)
    model.to(dev)
    x_train, y_train = x_train.to(dev), y_train_cpu.to(dev)
    loss_fn = build_loss(spec.loss, counts, device=dev, class_weight=weights.class_weight.values)
    # Deferred re-weighting (train.class_weight_from_epoch): every class weighs 1 before it.
    unweighted = build_loss(spec.loss, counts, device=dev)
    augment = augment_enabled(spec, splits.input_shape)

    def epoch_order(epoch: int) -> Tensor:
        sampler = sampler_at(spec, epoch)  # deferred re-sampling, stage two's sampler
        return epoch_indices(sampler, y_train_cpu, train.seed, epoch).to(dev)

    def batch_loss(idx: Tensor, epoch: int, b: int) -> tuple[Tensor, Tensor]:
        x = x_train[idx]
        if augment:
            x = augment_batch(x, batch_generator(train.seed, epoch, b))
        weighted = rebalancing_on(train.class_weight_from_epoch, epoch)
        return (loss_fn if weighted else unweighted)(model(x), y_train[idx], weight[idx], epoch)

    def retrain() -> torch.optim.Optimizer:
        return build_optimizer(retrain_head(model, train.seed), train)

    stage2 = None
    if train.stage2 is not None:
        stage2 = HeadRetraining(epoch_length(train.stage2.sampler, y_train_cpu), retrain)

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
            selection=selection_for(
                train.select_by,
                np.bincount(splits.y_val, minlength=splits.num_classes).tolist(),
                splits.class_names,
            ),
            stage2=stage2,
        ),
        dev,
        started=started,
        report=report,
        should_stop=should_stop,
    )
    if run is None:
        return None
    x_test, y_test = _inputs_on(splits.x_test, dev), torch.from_numpy(splits.y_test).to(dev)
    decision = _decision(spec, _logits(model, x_val), splits, minority)
    test_logits = _logits(model, x_test)
    bias = torch.tensor(decision["bias"], dtype=test_logits.dtype, device=dev)
    _, final = _scored(test_logits + bias, y_test, splits, minority)
    # The untuned decision beside the tuned one, so that the tuning's gain is visible.
    tuned = spec.decision != "argmax"
    final_argmax = _scored(test_logits, y_test, splits, minority)[1] if tuned else None

    card = {
        "arch": spec.model.arch,
        "model_kwargs": {
            "input_shape": list(splits.input_shape),
            "num_classes": splits.num_classes,
            **model_kwargs,
        },
        "class_names": splits.class_names,
        "input_shape": list(splits.input_shape),
        "input": INPUT_DESCRIPTION,
        "normalization": {
            "per": "channel (dim 0 of input_shape)",
            "mean": model.normalize.mean.flatten().tolist(),
            "std": model.normalize.std.flatten().tolist(),
        },
        # predict adds `bias` to the logits; the counts give the training prior that a
        # caller's `priors` replace (service.rebalance.decision).
        "decision": decision,
        "train_class_counts": counts,
    }
    result = finish_job(spec, workdir, run, model, card, final, counts, weights, dev)
    result.metrics["decision"] = decision
    if final_argmax is not None:
        result.metrics["final_argmax"] = with_test_statistics(final_argmax, counts)
    return result
