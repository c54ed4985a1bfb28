"""The tagger, its loss and its training loop, on the CPU: padding and zero weights count
for nothing, (N,) weights are (N, T) weights broadcast, and a job trains and resumes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from counterweight.service.artifacts import CARD, MODEL
from counterweight.service.data.sequences import plan_sequence_splits
from counterweight.service.data.uploads import upload_path
from counterweight.service.rebalance.weights import job_weights
from counterweight.service.spec import JobSpec, LossSpec
from counterweight.workers.training.engine import train_job
from counterweight.workers.training.losses import build_loss
from counterweight.workers.training.tagger_model import BiLSTMTagger, tagger_from_card
from counterweight.workers.training.tagging import (
    Batch,
    SentenceTensors,
    sequence_loss,
    word_logits,
)
from tests.sequences import tagging_arrays, write_npz

COUNTS = [50, 10, 5]
SMALL_MODEL = {"embedding_dim": 8, "char_embedding_dim": 4, "width": 8}


def tagger(chars: bool = True) -> BiLSTMTagger:
    torch.manual_seed(0)
    return BiLSTMTagger(30, 3, char_vocab_size=20 if chars else 0, embedding_dim=8, hidden_size=8)


def batch(words: list[list[int]], tags: list[list[int]], seed: int = 0) -> Batch:
    w = torch.tensor(words)
    chars = torch.randint(1, 20, (*w.shape, 4), generator=torch.Generator().manual_seed(seed))
    return Batch(w, chars, torch.tensor(tags))


WORDS = [[3, 4, 5, 6, 0, 0], [7, 8, 9, 0, 0, 0]]
TAGS = [[0, 1, 2, 0, 0, 0], [2, 0, 1, 0, 0, 0]]
# Zero at (0, 1) and (1, 2), words; and whatever at the padding steps.
WEIGHT = [[1.0, 0.0, 2.0, 1.0, 9.0, 9.0], [0.5, 1.0, 0.0, 9.0, 9.0, 9.0]]


@pytest.mark.parametrize("loss", ["cross_entropy", "focal", "ldam"])
@pytest.mark.parametrize("reduction", ["weighted_mean", "mean"])
def test_zero_weight_and_padding_steps_add_nothing_to_loss_or_gradient(
    loss: str, reduction: str
) -> None:
    loss_fn = build_loss(LossSpec(type=loss, reduction=reduction), COUNTS)  # type: ignore[arg-type]

    def loss_and_grads(tags: list[list[int]]) -> tuple[Tensor, list[Tensor]]:
        model = tagger()
        total, denominator = sequence_loss(
            model, batch(WORDS, tags), torch.tensor(WEIGHT), loss_fn, 0
        )
        value = total / denominator
        value.backward()
        return value.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    base, base_grads = loss_and_grads(TAGS)
    # Other tags where the weight is 0 or the step is padding: nothing changes.
    changed = [[0, 2, 2, 0, 1, 2], [2, 0, 0, 2, 2, 1]]
    other, other_grads = loss_and_grads(changed)
    assert torch.equal(base, other)
    assert all(torch.equal(a, b) for a, b in zip(base_grads, other_grads, strict=True))
    # The tags that do weigh do change it: the comparison can tell.
    weighed, _ = loss_and_grads([[1, 1, 2, 0, 0, 0], [2, 0, 1, 0, 0, 0]])
    assert not torch.equal(base, weighed)


def test_the_gradient_reaches_no_logit_of_a_zero_weight_or_padding_step() -> None:
    model = tagger()
    b = batch(WORDS, TAGS)
    logits = model(b.words, b.chars).detach().requires_grad_()
    loss_fn = build_loss(LossSpec(), COUNTS)
    mask = b.mask
    total, denominator = loss_fn(logits[mask], b.tags[mask], torch.tensor(WEIGHT)[mask], 0)
    (total / denominator).backward()
    assert logits.grad is not None
    per_step = logits.grad.abs().sum(dim=2)
    weighed = mask & (torch.tensor(WEIGHT) > 0)
    assert (per_step[~weighed] == 0).all()
    assert (per_step[weighed] > 0).all()
    # weighted_mean divides by the weights of the words only, never the padding's 9s.
    assert float(denominator) == pytest.approx(1 + 0 + 2 + 1 + 0.5 + 1 + 0)


def test_padding_never_changes_the_predictions_for_the_words() -> None:
    model = tagger().eval()
    b = batch(WORDS, TAGS)
    with torch.no_grad():
        short = model(b.words, b.chars)
        # Four more padding steps holding junk characters, and padded characters per word.
        words = torch.cat([b.words, torch.zeros(2, 4, dtype=torch.int64)], dim=1)
        chars = torch.cat([b.chars, torch.randint(1, 20, (2, 4, 4))], dim=1)
        chars[words == 0] = torch.randint(1, 20, (int((words == 0).sum()), 4))
        chars = torch.cat([chars, torch.zeros(2, 10, 3, dtype=torch.int64)], dim=2)
        long = model(words, chars)
        # A sentence alone gives its words the same logits as in a batch with others.
        alone = model(b.words[1:, :3], b.chars[1:, :3])
    assert torch.allclose(long[:, :6][b.mask], short[b.mask], atol=1e-6)
    assert torch.allclose(alone[0], short[1, :3], atol=1e-6)


def test_embeddings_start_small_as_keras_draws_them_and_padding_at_zero() -> None:
    model = tagger()
    assert model.chars is not None
    for table in (model.words.weight, model.chars.embed.weight):
        assert torch.equal(table[0], torch.zeros(table.shape[1]))
        rows = table[1:]
        assert rows.abs().max() <= 0.05 and rows.std() > 0.02  # uniform(-0.05, 0.05): 0.029


def test_a_word_without_characters_encodes_as_zeros() -> None:
    model = tagger()
    assert model.chars is not None
    chars = torch.tensor([[[0, 0, 0], [5, 6, 0]]])
    encoded = model.chars(chars)
    assert torch.equal(encoded[0, 0], torch.zeros(model.chars.out_features))
    assert encoded[0, 1].abs().sum() > 0


def upload(home: Path, arrays: dict[str, np.ndarray]) -> str:
    dataset_id = uuid.uuid4().hex
    upload_path(home, dataset_id).parent.mkdir(parents=True, exist_ok=True)
    write_npz(upload_path(home, dataset_id), arrays)
    return dataset_id


def sequence_spec(dataset_id: str, **changes: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "task": "sequence_labeling",
            "dataset": {"name": "uploaded", "id": dataset_id},
            "model": SMALL_MODEL,
            "train": {"epochs": 3, "batch_size": 16, "lr": 0.01},
            **changes,
        }
    )


def test_per_sentence_weights_equal_the_same_weights_broadcast_to_every_step(
    tmp_path: Path,
) -> None:
    arrays = tagging_arrays(n_train=40, n_test=10)
    dataset_id = upload(tmp_path, arrays)
    per_sentence = np.random.default_rng(1).uniform(0.1, 3.0, size=40).round(3)
    per_step = np.repeat(per_sentence[:, None], arrays["x_train"].shape[1], axis=1)
    results = []
    for given in (per_sentence.tolist(), per_step.tolist()):
        spec = sequence_spec(dataset_id, sample_weight=given, class_weight="balanced")
        splits = plan_sequence_splits(spec, tmp_path)
        weights = job_weights(spec, splits)
        train = SentenceTensors.of(splits.train, torch.device("cpu"))
        b = train.batch(slice(0, 8))
        step_weight = torch.zeros(splits.train.words.shape)
        step_weight[torch.from_numpy(splits.train.mask)] = torch.from_numpy(weights.per_sample)
        torch.manual_seed(0)
        model = BiLSTMTagger(splits.vocab_size, 7, char_vocab_size=splits.char_vocab_size)
        loss_fn = build_loss(spec.loss, splits.train_class_counts)
        weight = step_weight[:8, : b.words.shape[1]]
        total, denominator = sequence_loss(model, b, weight, loss_fn, 0)
        (total / denominator).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        results.append((splits.sample_weight, weights.effective, total, denominator, grads))
    (w1, eff1, t1, d1, g1), (w2, eff2, t2, d2, g2) = results
    assert w1 is not None and w2 is not None
    assert np.array_equal(w1, w2)
    # Padding steps weigh 0, whatever the (N,) weight of their sentence.
    assert (w1[~splits.train.mask] == 0).all() and (w1[splits.train.mask] > 0).all()
    assert eff1 == eff2
    assert torch.equal(t1, t2) and torch.equal(d1, d2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))


def test_balanced_weights_count_words_never_padding(tmp_path: Path) -> None:
    arrays = tagging_arrays(n_train=40, n_test=10)
    spec = sequence_spec(upload(tmp_path, arrays), class_weight="balanced")
    splits = plan_sequence_splits(spec, tmp_path)
    counts = splits.train_class_counts
    # Padding is tagged 0 ("O") in the arrays, yet O's count is its words only.
    assert sum(counts) == int(splits.train.mask.sum()) < splits.train.words.size
    n = sum(counts)
    assert job_weights(spec, splits).effective == pytest.approx([n / (7 * c) for c in counts])


def run(spec: JobSpec, workdir: Path, home: Path, stop_after: int | None = None) -> Any:
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return stop_after is not None and calls >= stop_after

    return train_job(
        spec,
        workdir,
        device="cpu",
        data_root=home,
        home=home,
        report=lambda progress: None,
        should_stop=should_stop,
    )


def test_a_tagging_job_trains_resumes_and_its_card_reloads_the_model(tmp_path: Path) -> None:
    arrays = tagging_arrays(n_train=80, n_test=30)
    spec = sequence_spec(upload(tmp_path, arrays))
    whole = run(spec, tmp_path / "whole", tmp_path)
    # Stopped in the middle of epoch 2, then resumed from the checkpoint.
    assert run(spec, tmp_path / "resumed", tmp_path, stop_after=7) is None
    resumed = run(spec, tmp_path / "resumed", tmp_path)
    assert resumed.metrics["resumed_from_epoch"] == 1
    assert resumed.metrics["final"] == whole.metrics["final"]

    metrics = whole.metrics
    assert metrics["select_by"] == "macro_f1"
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]
    final = metrics["final"]
    assert final["token_accuracy"] == final["accuracy"]
    words_in_test = int((arrays["x_test"] != 0).sum())
    assert sum(row["support"] for row in final["per_class"]) == words_in_test
    assert np.array(final["confusion_matrix"]).sum() == words_in_test
    assert metrics["train_class_counts"] == plan_sequence_splits(spec, tmp_path).counts["train"]

    card = json.loads((tmp_path / "whole" / CARD).read_text())
    assert card["task"] == "sequence_labeling"
    assert card["class_names"] == arrays["tag_names"].tolist()
    model = tagger_from_card(card)
    model.load_state_dict(load_file(tmp_path / "whole" / MODEL))
    test = SentenceTensors.of(plan_sequence_splits(spec, tmp_path).test, torch.device("cpu"))
    predicted = word_logits(model, test).argmax(dim=1).numpy()
    tags = arrays["y_test"][arrays["x_test"] != 0]
    assert float(np.mean(predicted == tags)) == pytest.approx(final["token_accuracy"])
