"""LDAM as its paper: the cosine head on every arch, and head plus loss against the authors'
published formula, re-implemented here in numpy from Cao et al. 2019 and their code
(kaidic/LDAM-DRW: LDAMLoss in losses.py, NormedLinear in models/resnet_cifar.py, the DRW
weights in cifar_train.py), never by calling the code under test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from counterweight.service.architectures import (
    arch_kwargs,
    count_parameters,
    count_tagger_parameters,
    head_kwargs,
)
from counterweight.service.artifacts import CARD, MODEL
from counterweight.service.data.sequences import plan_sequence_splits
from counterweight.service.spec import LossSpec, ModelSpec
from counterweight.workers.training.checkpoint import load_model, save_model
from counterweight.workers.training.engine import train_job
from counterweight.workers.training.losses import build_loss
from counterweight.workers.training.models import ARCHS, Classifier, CosineHead, build_model
from counterweight.workers.training.tagger_model import BiLSTMTagger, tagger_from_card
from counterweight.workers.training.tagging import SentenceTensors, word_logits
from tests.sequences import tagging_arrays
from tests.unit.test_sequence_training import sequence_spec, upload

SCALE = 30.0
COSINE = head_kwargs(LossSpec(type="ldam", scale=SCALE))
IMAGE_SHAPES = [(1, 8, 8), (3, 32, 32)]


def reference_ldam_drw(
    features: np.ndarray,
    class_vectors: np.ndarray,
    y: np.ndarray,
    counts: list[int],
    epoch: int,
    drw_after: int,
    max_m: float = 0.5,
    s: float = 30.0,
) -> float:
    """The authors' LDAM-DRW loss of one batch, in float64. `epoch` is 0-based and DRW
    switches on after `drw_after` epochs, as their `idx = epoch // 160` does after 160."""
    # NormedLinear: cosines of the normalised features and normalised class vectors.
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    w = class_vectors / np.linalg.norm(class_vectors, axis=1, keepdims=True)
    cosines = x @ w.T
    # LDAMLoss: m_j = 1 / n_j^(1/4), scaled so that the largest is max_m; subtracted from the
    # true class's output only; then cross_entropy(s * output, target, weight=per_cls_weights).
    m_list = 1.0 / np.sqrt(np.sqrt(np.asarray(counts, dtype=np.float64)))
    m_list = m_list * (max_m / np.max(m_list))
    output = cosines.copy()
    output[np.arange(len(y)), y] -= m_list[y]
    logits = s * output
    # DRW: betas = [0, 0.9999]; per_cls_weights = (1 - beta) / (1 - beta^n), summing to k.
    beta = [0.0, 0.9999][1 if epoch >= drw_after else 0]
    per_cls_weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    per_cls_weights = per_cls_weights / np.sum(per_cls_weights) * len(counts)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    nll = -log_p[np.arange(len(y)), y]
    # F.cross_entropy with a weight and reduction "mean": sum(w_y * nll) / sum(w_y).
    return float((per_cls_weights[y] * nll).sum() / per_cls_weights[y].sum())


@pytest.mark.parametrize("seed", range(6))
def test_cosine_head_and_ldam_drw_loss_match_the_authors_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 11))
    n, d = int(rng.integers(5, 64)), int(rng.integers(2, 40))
    counts = sorted(rng.integers(1, 5000, size=k).tolist(), reverse=True)
    features = rng.normal(size=(n, d)) * rng.uniform(0.1, 10)
    class_vectors = rng.normal(size=(k, d))
    y = rng.integers(0, k, size=n)
    drw_after = int(rng.integers(1, 5))  # the reference's switch; our drw_epoch is 1-based

    head = CosineHead(d, k, SCALE)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(class_vectors))
    with torch.no_grad():
        logits = head(torch.tensor(features, dtype=torch.float32))
    loss = build_loss(LossSpec(type="ldam", drw_epoch=drw_after + 1), counts)
    for epoch in (0, drw_after - 1, drw_after, drw_after + 3):
        total, denominator = loss(logits, torch.tensor(y), torch.ones(n), epoch)
        expected = reference_ldam_drw(features, class_vectors, y, counts, epoch, drw_after)
        assert float(total / denominator) == pytest.approx(expected, rel=1e-5, abs=1e-6), epoch


def test_the_cosine_head_outputs_scaled_cosines_in_float32_under_autocast() -> None:
    torch.manual_seed(0)
    head = CosineHead(6, 3, SCALE).requires_grad_(False)
    x = torch.randn(50, 6)
    expected = SCALE * F.normalize(x.double(), dim=1) @ F.normalize(head.weight.double(), dim=1).T
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x.bfloat16())
    assert out.dtype == torch.float32
    # The inputs were rounded to bfloat16; the cosines themselves are float32.
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=SCALE * 2e-2)
    torch.testing.assert_close(head(x).double(), expected, rtol=0, atol=1e-4)
    # NormedLinear's initialisation: every class vector of length 1.
    torch.testing.assert_close(head.weight.norm(dim=1), torch.ones(3))


def features_of(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """What the head of `model` sees: its body without the head."""
    inputs = model.normalize(x)
    if x.ndim == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    out: torch.Tensor = model.body[:-1](inputs)
    return out


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_ends_in_the_cosine_head_for_ldam(arch: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    kwargs = {**arch_kwargs(ModelSpec.model_validate({"arch": arch})), **COSINE}
    model = build_model(arch, shape, 4, **kwargs).eval()
    assert isinstance(model.head(), CosineHead)
    x = torch.rand(6, *shape)
    with torch.inference_mode():
        logits = model(x)
        features = features_of(model, x).double()
    cosines = F.normalize(features, dim=1) @ F.normalize(model.head().weight.double(), dim=1).T
    torch.testing.assert_close(logits.double(), SCALE * cosines, rtol=0, atol=1e-4)
    assert float(logits.abs().max()) <= SCALE * (1 + 1e-6)


def test_the_tagger_ends_in_the_cosine_head_for_ldam() -> None:
    torch.manual_seed(0)
    tagger = BiLSTMTagger(20, 5, hidden_size=8, **COSINE)
    assert isinstance(tagger.classify, CosineHead)
    with torch.no_grad():
        logits = tagger(torch.tensor([[3, 4, 5, 0], [7, 0, 0, 0]]))
    assert logits.shape == (2, 4, 5)
    assert float(logits.abs().max()) <= SCALE * (1 + 1e-6)


CONV = ("small_cnn", "resnet18", "resnet32")
MODELS = [
    *[(arch, {}, shape) for arch in CONV for shape in IMAGE_SHAPES],
    ("mlp", {"width": 7, "depth": 1}, (3, 32, 32)),
    ("mlp", {"width": 4096, "depth": 8}, (20,)),
]


@pytest.mark.parametrize("num_classes", [2, 1000])
@pytest.mark.parametrize(("arch", "kwargs", "shape"), MODELS)
def test_the_apis_parameter_count_holds_for_the_cosine_head(
    arch: str, kwargs: dict[str, int], shape: tuple[int, ...], num_classes: int
) -> None:
    # No bias: the count is the linear head's less one weight per class.
    with torch.device("meta"):
        model = build_model(arch, shape, num_classes, **kwargs, **COSINE)
    torch_count = sum(p.numel() for p in model.parameters())
    assert count_parameters(arch, {**kwargs, **COSINE}, shape, num_classes) == torch_count
    assert count_parameters(arch, kwargs, shape, num_classes) == torch_count + num_classes


def test_the_tagger_parameter_count_holds_for_the_cosine_head() -> None:
    kwargs: dict[str, Any] = {
        "embedding_dim": 8, "char_embedding_dim": 4, "hidden_size": 6, "layers": 2
    }  # fmt: skip
    tagger = BiLSTMTagger(30, 5, char_vocab_size=12, **kwargs, **COSINE)
    torch_count = sum(p.numel() for p in tagger.parameters())
    assert count_tagger_parameters({**kwargs, **COSINE}, 30, 12, 5) == torch_count


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_a_cosine_head_model_reloads_from_its_card(arch: str, tmp_path: Path) -> None:
    shape = (3, 32, 32)
    kwargs = {**arch_kwargs(ModelSpec.model_validate({"arch": arch})), **COSINE}
    torch.manual_seed(0)
    model = build_model(arch, shape, 3, **kwargs)
    x = torch.rand(4, *shape)
    model.normalize.fit(x)
    model.train()(x)
    model.eval()
    model_kwargs = {"input_shape": list(shape), "num_classes": 3, **kwargs}
    assert model_kwargs["head"] == "cosine" and model_kwargs["head_scale"] == SCALE
    save_model(tmp_path, model.state_dict(), {"arch": arch, "model_kwargs": model_kwargs})
    served, _ = load_model(tmp_path)
    assert isinstance(served.head(), CosineHead)
    with torch.inference_mode():
        torch.testing.assert_close(served(x), model(x), rtol=0, atol=0)


def test_an_ldam_tagging_job_serves_its_cosine_head_from_the_card(tmp_path: Path) -> None:
    spec = sequence_spec(
        upload(tmp_path, tagging_arrays(n_train=60, n_test=20)),
        loss={"type": "ldam", "drw_epoch": 2},
        train={"epochs": 2, "batch_size": 16, "lr": 0.01, "select_by": "last"},
    )
    result = train_job(
        spec, tmp_path / "job", device="cpu", data_root=tmp_path, home=tmp_path,
        report=lambda _: None, should_stop=lambda: False,
    )  # fmt: skip
    assert result is not None
    card = json.loads((tmp_path / "job" / CARD).read_text())
    assert card["model_kwargs"]["head"] == "cosine"
    assert card["model_kwargs"]["head_scale"] == SCALE
    tagger = tagger_from_card(card)
    tagger.load_state_dict(load_file(tmp_path / "job" / MODEL))
    assert isinstance(tagger.classify, CosineHead)
    splits = plan_sequence_splits(spec, tmp_path)
    logits = word_logits(tagger, SentenceTensors.of(splits.test, torch.device("cpu")))
    assert float(logits.abs().max()) <= SCALE * (1 + 1e-6)
    predicted = logits.argmax(dim=1).numpy()
    accuracy = float(np.mean(predicted == splits.test.tokens))
    assert accuracy == pytest.approx(result.metrics["final"]["token_accuracy"])


def test_only_ldam_gets_the_cosine_head() -> None:
    assert head_kwargs(LossSpec(type="ldam", scale=12.5)) == {"head": "cosine", "head_scale": 12.5}
    for loss in ("cross_entropy", "focal", "class_balanced", "balanced_softmax"):
        assert head_kwargs(LossSpec(type=loss)) == {}
