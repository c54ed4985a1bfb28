"""Sequence labeling at the seed question's scale (issue 16): our engine against a plain
PyTorch loop, and whether the tagger learns.

Generated data in the upload format: 2,000 training and 1,000 test sentences padded to
150 words (lengths uniform in 10..150), 15 characters a word (3 to 15 letters, then
padding), 7 tags. Each word's tag follows from the word (a vocabulary of 10,000 words, so
a model that learns it can be perfect); tag "O" holds 70% of the words and the rarest
tag 1%. The model: word embeddings 64, character embeddings 25 with a 3-wide CNN (50
filters) and max pooling, a BiLSTM of 100 units per direction, a linear head; Adam 1e-3,
batch 32, on the CPU.

- plain: the loop a user writes (nn.LSTM over the padded batch, all 150 steps, PyTorch's
  default initialisation, per-word weights = balanced class weight x mask, summed and
  divided by the number of words, as Keras does); seconds per training epoch.
- ours: train_job, as the worker runs it, with class_weight "balanced". One epoch's
  marginal cost (validation and checkpoint included) from the gaps between epoch ends,
  and the whole 10-epoch job (data, validation, test evaluation, model files) against
  ten plain epochs.
- macro F1 on the test words after 5 epochs (select_by last), with and without
  balanced class weights.

    .venv/bin/python -m bench.tagger_speed [--threads 2]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from counterweight.service.data.uploads import upload_path
from counterweight.service.spec import JobSpec
from counterweight.workers.training.engine import train_job
from counterweight.workers.training.loop import Progress
from tests.sequences import word_tag_arrays

N_TRAIN, N_TEST, STEPS, CHARS = 2_000, 1_000, 150, 15
VOCAB = 10_000
EMBEDDING, CHAR_EMBEDDING, HIDDEN, BATCH = 64, 25, 100, 32


def tagging_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """The upload (service.data.sequence_uploads): x, chars and y for train and test."""
    return word_tag_arrays(
        N_TRAIN, N_TEST, vocabulary=VOCAB, steps=STEPS, chars=CHARS, min_length=10, seed=seed
    )


class PlainTagger(nn.Module):
    """The same architecture and sizes as bilstm_tagger, written as a user would."""

    def __init__(self, vocab: int, chars: int, tags: int) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab, EMBEDDING, padding_idx=0)
        self.chars = nn.Embedding(chars, CHAR_EMBEDDING, padding_idx=0)
        self.conv = nn.Conv1d(CHAR_EMBEDDING, 2 * CHAR_EMBEDDING, 3, padding=1)
        self.lstm = nn.LSTM(
            EMBEDDING + 2 * CHAR_EMBEDDING, HIDDEN, batch_first=True, bidirectional=True
        )
        self.out = nn.Linear(2 * HIDDEN, tags)

    def forward(self, words: Tensor, chars: Tensor) -> Tensor:
        n, t, c = chars.shape
        char_features = self.conv(self.chars(chars.reshape(n * t, c)).transpose(1, 2))
        x = torch.cat([self.words(words), char_features.amax(dim=2).reshape(n, t, -1)], dim=2)
        out: Tensor = self.out(self.lstm(x)[0])
        return out


def balanced(tags: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sklearn's "balanced" class weights over the words: n / (k * count)."""
    counts = np.bincount(tags[mask], minlength=7)
    return np.asarray(counts.sum() / (7 * counts), dtype=np.float32)


def plain_epochs(arrays: dict[str, np.ndarray], epochs: int) -> list[float]:
    """Seconds of each plain training epoch."""
    torch.manual_seed(0)
    words, chars = torch.tensor(arrays["x_train"]).long(), torch.tensor(arrays["chars_train"])
    chars, tags = chars.long(), torch.tensor(arrays["y_train"]).long()
    mask = words != 0
    class_weight = torch.tensor(balanced(arrays["y_train"], arrays["x_train"] != 0))
    weight = class_weight[tags] * mask  # (N, T) per-word weights, 0 at padding
    model = PlainTagger(VOCAB + 1, 60, 7)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(words), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            logits = model(words[idx], chars[idx])
            loss = F.cross_entropy(logits.transpose(1, 2), tags[idx], reduction="none")
            loss = (loss * weight[idx]).sum() / mask[idx].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - started)
    return seconds


def our_job(
    home: Path, dataset_id: str, epochs: int, select_by: str = "macro_f1", **changes: Any
) -> dict[str, Any]:
    """train_job on the upload: its wall seconds, the seconds between epoch ends, the
    final metrics."""
    spec = JobSpec.model_validate(
        {
            "task": "sequence_labeling",
            "dataset": {"name": "uploaded", "id": dataset_id},
            "model": {"embedding_dim": EMBEDDING, "char_embedding_dim": CHAR_EMBEDDING},
            "train": {
                "epochs": epochs,
                "batch_size": BATCH,
                "lr": 1e-3,
                "device": "cpu",
                "select_by": select_by,
            },
            **changes,
        }
    )
    epoch_ends: list[float] = []

    def report(progress: Progress) -> None:
        if progress.history_row is not None:
            epoch_ends.append(time.perf_counter())

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        result = train_job(
            spec,
            Path(workdir),
            device="cpu",
            data_root=home,
            home=home,
            report=report,
            should_stop=lambda: False,
        )
    assert result is not None
    return {
        "seconds": time.perf_counter() - started,
        "epoch_seconds": [b - a for a, b in itertools.pairwise(epoch_ends)],
        "final": result.metrics["final"],
        # The words it trains on: the training split left after validation's 10%.
        "train_words": sum(result.metrics["train_class_counts"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    arrays = tagging_arrays()
    words = int((arrays["x_train"] != 0).sum())
    per_sentence = words / N_TRAIN
    print(f"{N_TRAIN} sentences, {words} words ({per_sentence:.0f} each), {args.threads} threads")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        dataset_id = uuid.uuid4().hex
        upload_path(home, dataset_id).parent.mkdir(parents=True)
        np.savez(upload_path(home, dataset_id), **arrays)  # type: ignore[arg-type]

        plain = plain_epochs(arrays, 10)
        ours = our_job(home, dataset_id, 10, class_weight="balanced")
        ours_epoch = statistics.median(ours["epoch_seconds"])
        plain_epoch = statistics.median(plain)
        # Ours trains on fewer words (its validation split is held out, and validated on
        # every epoch): the per-word ratios compare the same work.
        per_word = (ours_epoch / ours["train_words"]) / (plain_epoch / words)
        job_per_word = (ours["seconds"] / ours["train_words"]) / (sum(plain) / words)
        print(f"plain epoch: {plain_epoch:.2f} s, {words / plain_epoch:,.0f} words/s")
        print(
            f"ours, marginal epoch: {ours_epoch:.2f} s, "
            f"{ours['train_words'] / ours_epoch:,.0f} training words/s"
        )
        print(
            f"epoch ratio ours / plain: {ours_epoch / plain_epoch:.2f}, per word "
            f"{per_word:.2f}  (target <= 1.0)"
        )
        print(
            f"10-epoch job {ours['seconds']:.1f} s; ten plain epochs {sum(plain):.1f} s; "
            f"ratio {ours['seconds'] / sum(plain):.2f}, per word {job_per_word:.2f}  "
            "(target <= 1.2)"
        )
        for name, changes in (("balanced", {"class_weight": "balanced"}), ("unweighted", {})):
            job = our_job(home, dataset_id, 5, select_by="last", **changes)
            final = job["final"]
            print(
                f"macro F1 after 5 epochs, {name}: {final['macro_f1']:.3f} "
                f"(per-tag recall {[round(r['recall'], 3) for r in final['per_class']]})"
            )


if __name__ == "__main__":
    main()
