"""Train a sequence labeling job: one tag per word, padding never counted.

The epoch loop, checkpoints, resume and model selection are the shared loop's
(workers.training.loop.run_epochs); this module supplies the sentences, the
bilstm_tagger and the per-word loss and metrics. The whole data set lives on the
device as (n, T) tensors, and a batch is its sentences cut to the longest of them.

The loss is the job's loss (workers.training.losses) over the words of a batch:
padding steps are masked out before it, so they add nothing to the loss, its
gradient or weighted_mean's denominator, and `mean` divides by the number of
words. Each word weighs class_weight[tag] * sample_weight[sentence(, step)].
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from counterweight.service.architectures import head_kwargs, tagger_kwargs
from counterweight.service.data.sequences import Sentences, SequenceSplits, plan_sequence_splits
from counterweight.service.rebalance.weights import job_weights
from counterweight.service.spec import JobSpec
from counterweight.workers.training.loop import (
    Progress,
    Trainer,
    TrainingResult,
    finish_job,
    run_epochs,
)
from counterweight.workers.training.losses import Loss, build_loss, sample_weights
from counterweight.workers.training.metrics import evaluate_tokens
from counterweight.workers.training.optim import build_optimizer
from counterweight.workers.training.sampling import epoch_indices
from counterweight.workers.training.selection import selection_for
from counterweight.workers.training.tagger_model import BiLSTMTagger

EVAL_BATCH_SENTENCES = 512  # inference only: bounded memory
INPUT_DESCRIPTION = (
    "words: (T,) integer word ids, 0 = padding after the words; chars (T, C): the "
    "character ids of each word, 0 = padding (only when model_kwargs.char_vocab_size > 0)"
)


@dataclass(frozen=True)
class Batch:
    words: Tensor  # (n, L), L the longest sentence of the batch
    chars: Tensor | None
    tags: Tensor

    @property
    def mask(self) -> Tensor:
        return self.words != 0


@dataclass(frozen=True)
class SentenceTensors:
    """A split's sentences on the device."""

    words: Tensor
    chars: Tensor | None
    tags: Tensor

    @classmethod
    def of(cls, sentences: Sentences, dev: torch.device) -> SentenceTensors:
        # Copies: the upload's arrays are read-only, shared by every job of the process.
        chars = sentences.chars
        return cls(
            torch.tensor(sentences.words, device=dev),
            None if chars is None else torch.tensor(chars, device=dev),
            torch.tensor(sentences.tags, device=dev),
        )

    def batch(self, rows: Tensor | slice) -> Batch:
        words = self.words[rows]
        # Steps past the longest sentence are padding everywhere: no need to compute them.
        steps = int((words != 0).sum(dim=1).max())
        chars = None if self.chars is None else self.chars[rows][:, :steps]
        return Batch(words[:, :steps], chars, self.tags[rows][:, :steps])


def sequence_loss(
    model: BiLSTMTagger, batch: Batch, weight: Tensor, loss_fn: Loss, epoch: int
) -> tuple[Tensor, Tensor]:
    """The job's loss over the batch's words; `weight` (n, L) per step. Padding steps are
    masked out: whatever their tags, weights or logits, they change nothing."""
    mask = batch.mask
    logits = model(batch.words, batch.chars)
    return loss_fn(logits[mask], batch.tags[mask], weight[mask], epoch)


@torch.inference_mode()
def word_logits(model: BiLSTMTagger, split: SentenceTensors) -> Tensor:
    """Logits (words, k) of every word of the split, in the row-major order of its mask.
    The sentences are read shortest first, so that each batch is cut to a length close to
    all of its sentences'; the logits go back to their words' places."""
    model.eval()
    lengths = (split.words != 0).sum(dim=1)
    first_word = torch.cumsum(lengths, dim=0) - lengths  # words come before any padding
    order = torch.argsort(lengths, stable=True)
    out: Tensor | None = None
    for start in range(0, len(order), EVAL_BATCH_SENTENCES):
        rows = order[start : start + EVAL_BATCH_SENTENCES]
        batch = split.batch(rows)
        logits = model(batch.words, batch.chars)[batch.mask]
        if out is None:
            out = logits.new_empty(int(lengths.sum()), logits.shape[1])
        steps = torch.arange(batch.words.shape[1], device=rows.device)
        out[(first_word[rows].unsqueeze(1) + steps)[batch.mask]] = logits
    assert out is not None  # every split has a sentence
    return out


def _evaluate(
    model: BiLSTMTagger, split: SentenceTensors, names: list[str], minority: int
) -> tuple[float, dict[str, Any]]:
    """(mean cross-entropy over words, metrics over words); plain CE, as the engine's."""
    logits = word_logits(model, split).float()
    tags = split.tags[split.words != 0]
    loss = float(F.cross_entropy(logits, tags))
    probs = logits.softmax(dim=1).cpu().numpy()
    return loss, evaluate_tokens(tags.cpu().numpy(), probs, names, minority)


def _model_kwargs(spec: JobSpec, splits: SequenceSplits) -> dict[str, Any]:
    return {
        "vocab_size": splits.vocab_size,
        "num_classes": splits.num_classes,
        "char_vocab_size": splits.char_vocab_size,
        **tagger_kwargs(spec.model),
        **head_kwargs(spec.loss),  # LDAM's cosine head, recorded in the card
    }


def train_tagger(
    spec: JobSpec,
    workdir: Path,
    *,
    device: str,
    home: Path | None,
    report: Callable[[Progress], None],
    should_stop: Callable[[], bool],
) -> TrainingResult | None:
    """engine.train_job for task sequence_labeling (same contract)."""
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    train = spec.train
    splits = plan_sequence_splits(spec, home)
    counts = splits.train_class_counts
    minority = int(np.argmin(counts))
    dev = torch.device(device)
    train_data, val_data = (
        SentenceTensors.of(splits.train, dev),
        SentenceTensors.of(splits.val, dev),
    )
    weights = job_weights(spec, splits)
    # Per step: the sample weight, and 0 at padding; the loss applies class_weight[tag].
    step_weight = torch.zeros(splits.train.words.shape, dtype=torch.float32)
    n_words = int(splits.train.mask.sum())
    step_weight[torch.from_numpy(splits.train.mask)] = sample_weights(
        splits.train_sample_weight, n_words
    )
    step_weight = step_weight.to(dev)

    with torch.random.fork_rng(devices=[]):  # as the engine: same init on any device
        torch.manual_seed(train.seed)
        model = BiLSTMTagger(**_model_kwargs(spec, splits))
    model.to(dev)
    loss_fn = build_loss(spec.loss, counts, device=dev, class_weight=weights.class_weight.values)
    n_train = len(splits.train.words)
    no_labels = torch.zeros(n_train, dtype=torch.int64)  # sampler 'none' only shuffles

    def batch_loss(idx: Tensor, epoch: int, b: int) -> tuple[Tensor, Tensor]:
        batch = train_data.batch(idx)
        weight = step_weight[idx][:, : batch.words.shape[1]]
        return sequence_loss(model, batch, weight, loss_fn, epoch)

    run = run_epochs(
        spec,
        workdir,
        Trainer(
            model=model,
            optimizer=build_optimizer(model, train),
            samples_per_epoch=n_train,
            epoch_order=lambda epoch: epoch_indices("none", no_labels, train.seed, epoch).to(dev),
            batch_loss=batch_loss,
            validate=lambda: _evaluate(model, val_data, splits.class_names, minority),
            minority=minority,
            selection=selection_for(train.select_by, splits.counts["val"], splits.class_names),
        ),
        dev,
        started=started,
        report=report,
        should_stop=should_stop,
    )
    if run is None:
        return None
    test_data = SentenceTensors.of(splits.test, dev)
    _, final = _evaluate(model, test_data, splits.class_names, minority)
    card = {
        "task": spec.task,
        "arch": spec.model.arch,
        "model_kwargs": _model_kwargs(spec, splits),
        "class_names": splits.class_names,
        "input": INPUT_DESCRIPTION,
    }
    return finish_job(spec, workdir, run, model, card, final, counts, weights, dev)
