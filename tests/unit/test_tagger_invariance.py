"""What any speed-up of the tagger must keep: whatever the padding holds (its characters,
tags and weights, and how many padding steps follow the words) changes neither the loss,
nor the gradients, nor the predictions for the words; and the same seed on the CPU gives
bit-identical weights and results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from counterweight.service.artifacts import MODEL
from counterweight.service.data.sequences import Sentences
from counterweight.service.spec import LossSpec
from counterweight.workers.training.losses import build_loss
from counterweight.workers.training.tagger_model import BiLSTMTagger
from counterweight.workers.training.tagging import SentenceTensors, sequence_loss, word_logits
from tests.sequences import tagging_arrays
from tests.unit.test_sequence_training import run, sequence_spec, upload

COUNTS = [50, 10, 5]
LENGTHS = [6, 3, 1, 5]
STEPS = 8  # padded length; the longest sentence has 6 words


def sentences(junk: bool) -> tuple[Sentences, Tensor]:
    """Four sentences of LENGTHS words with their characters, tags and per-step weights.
    With `junk`, every padding step holds other characters, tags and weights (NaN and
    negative ones too), and each word's characters are followed by more padding."""
    rng = np.random.default_rng(0)
    mask = np.arange(STEPS)[None, :] < np.array(LENGTHS)[:, None]
    words = np.where(mask, rng.integers(1, 30, (4, STEPS)), 0)
    chars = np.zeros((4, STEPS, 6), dtype=np.int64)
    chars[:, :, :3] = np.where(mask[..., None], rng.integers(1, 20, (4, STEPS, 3)), 0)
    tags = np.where(mask, rng.integers(0, 3, (4, STEPS)), 0)
    weight = np.where(mask, rng.uniform(0.5, 2.0, (4, STEPS)), 0.0)
    if junk:
        junk_rng = np.random.default_rng(1)
        chars[~mask] = junk_rng.integers(1, 20, ((~mask).sum(), 6))
        chars[:, :, 3:][mask] = 0  # (already padding: the words keep their 3 characters)
        tags = np.where(mask, tags, junk_rng.integers(0, 3, (4, STEPS)))
        weight = np.where(mask, weight, junk_rng.choice([9.0, -5.0, np.nan], (4, STEPS)))
        # Two more padding steps, full of junk characters.
        words = np.pad(words, ((0, 0), (0, 2)))
        chars = np.concatenate([chars, junk_rng.integers(1, 20, (4, 2, 6))], axis=1)
        tags = np.pad(tags, ((0, 0), (0, 2)), constant_values=2)
        weight = np.pad(weight, ((0, 0), (0, 2)), constant_values=np.nan)
    return Sentences(words, chars, tags), torch.tensor(weight, dtype=torch.float32)


def tagger() -> BiLSTMTagger:
    torch.manual_seed(0)
    return BiLSTMTagger(30, 3, char_vocab_size=20, embedding_dim=8, hidden_size=8)


@pytest.mark.parametrize("reduction", ["weighted_mean", "mean"])
def test_padding_contents_and_weights_change_no_loss_gradient_or_prediction(
    reduction: str,
) -> None:
    loss_fn = build_loss(LossSpec(reduction=reduction), COUNTS)  # type: ignore[arg-type]
    results = []
    for junk in (False, True):
        data, weight = sentences(junk)
        split = SentenceTensors.of(data, torch.device("cpu"))
        batch = split.batch(slice(None))
        model = tagger()
        total, denominator = sequence_loss(
            model, batch, weight[:, : batch.words.shape[1]], loss_fn, 0
        )
        (total / denominator).backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
        results.append((total, denominator, grads, word_logits(model, split)))
    (t1, d1, g1, p1), (t2, d2, g2, p2) = results
    assert torch.isfinite(t1) and torch.equal(t1, t2) and torch.equal(d1, d2)
    assert g1.keys() == g2.keys()
    for name in g1:
        assert g1[name] is not None and g2[name] is not None, name
        assert torch.equal(g1[name], g2[name]), name
    assert p1.shape == (sum(LENGTHS), 3) and torch.equal(p1, p2)


def test_a_sentence_gets_the_same_logits_alone_as_beside_longer_ones() -> None:
    data, _ = sentences(junk=False)
    model = tagger().eval()
    together = word_logits(model, SentenceTensors.of(data, torch.device("cpu")))
    cpu = torch.device("cpu")
    alone = [word_logits(model, SentenceTensors.of(data.rows([i]), cpu)) for i in range(4)]
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("layers", [1, 2])
def test_the_bilstm_reads_each_sentence_as_packed_sequences_do(layers: int) -> None:
    """The reference: the same LSTM over packed sentences never reads a padding step in
    either direction. The tagger's outputs at the words, and its gradients, match it."""
    data, _ = sentences(junk=True)
    words = torch.tensor(data.words)
    torch.manual_seed(0)
    model = BiLSTMTagger(30, 3, embedding_dim=8, hidden_size=8, layers=layers)
    x = model.words(words)
    lengths = (words != 0).sum(dim=1)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    reference, _ = pad_packed_sequence(model.lstm(packed)[0], batch_first=True)
    reference_logits = model.classify(reference)
    logits = model(words)
    mask = words != 0
    torch.testing.assert_close(logits[mask], reference_logits[mask[:, : reference.shape[1]]])
    grads = []
    for out in (logits[mask], reference_logits[mask[:, : reference.shape[1]]]):
        model.zero_grad()
        out.square().sum().backward(retain_graph=True)
        grads.append([p.grad.clone() for p in model.lstm.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) == 8 * layers  # 4 tensors per direction and layer
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_the_same_seed_gives_bit_identical_weights_and_results(tmp_path: Path) -> None:
    arrays = tagging_arrays(n_train=60, n_test=20)
    dataset_id = upload(tmp_path, arrays)
    spec = sequence_spec(dataset_id, class_weight="balanced")
    first = run(spec, tmp_path / "first", tmp_path)
    second = run(spec, tmp_path / "second", tmp_path)
    weights = [load_file(tmp_path / name / MODEL) for name in ("first", "second")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert first.metrics["final"] == second.metrics["final"]
    assert first.metrics["history"] == second.metrics["history"]
    # Another seed trains other weights: the comparison can tell.
    other_spec = sequence_spec(
        dataset_id, class_weight="balanced", train={"epochs": 3, "batch_size": 16, "seed": 1}
    )
    run(other_spec, tmp_path / "other", tmp_path)
    other = load_file(tmp_path / "other" / MODEL)
    assert not all(torch.equal(weights[0][k], other[k]) for k in other)
