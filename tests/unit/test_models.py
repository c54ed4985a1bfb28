"""The architectures: shapes, sizes, rebuilding from a card, and a CNN that learns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from counterweight.service.architectures import (
    arch_kwargs,
    count_parameters,
    count_tagger_parameters,
    tagger_kwargs,
)
from counterweight.service.errors import DatasetError
from counterweight.service.spec import JobSpec, ModelSpec
from counterweight.workers.training.checkpoint import load_model, save_model
from counterweight.workers.training.models import ARCHS, build_model
from counterweight.workers.training.tagger_model import BiLSTMTagger
from tests.unit.test_engine import run as run_job

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]  # digits, MNIST, CIFAR-10


def n_weights(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_maps_images_of_each_size_to_one_logit_per_class(
    arch: str, shape: tuple[int, ...]
) -> None:
    kwargs = arch_kwargs(ModelSpec.model_validate({"arch": arch}))
    model = build_model(arch, shape, 7, **kwargs)
    logits = model(torch.rand(5, *shape))
    assert logits.shape == (5, 7)
    assert torch.isfinite(logits).all()


def test_resnet32_has_the_papers_464k_weights() -> None:
    # Option A shortcuts add no weights, so all are in the convs, batch norms and the head:
    #   stem    3*16*9 + 2*16                                               =     464
    #   stage 1 5 blocks * (2 * 16*16*9 + 2 * 2*16)                         =  23,360
    #   stage 2 (16*32*9 + 32*32*9 + 4*32) + 4 * (2 * 32*32*9 + 4*32)       =  88,192
    #   stage 3 (32*64*9 + 64*64*9 + 4*64) + 4 * (2 * 64*64*9 + 4*64)       = 351,488
    #   head    64*10 + 10                                                  =     650
    # = 464,154, the 0.46M of He et al. 2016 (Table 6) and of the LDAM-DRW code.
    assert n_weights(build_model("resnet32", (3, 32, 32), 10)) == 464_154
    # A grey-scale stem has a third of the stem's conv weights: 464,154 - 2*16*9.
    assert n_weights(build_model("resnet32", (1, 28, 28), 10)) == 464_154 - 288


def test_resnet18_has_torchvisions_weights_with_a_3x3_stem() -> None:
    # torchvision's resnet18(num_classes=10) has 11,181,642 weights with its 7x7 stem conv
    # (3*64*49 = 9,408); the 3x3 stem has 3*64*9 = 1,728: 11,181,642 - 9,408 + 1,728.
    assert n_weights(build_model("resnet18", (3, 32, 32), 10)) == 11_173_962


CONV_ARCHS = ("small_cnn", "resnet18", "resnet32")
MODELS = [
    *[(arch, {}, shape) for arch in CONV_ARCHS for shape in IMAGE_SHAPES],
    ("mlp", {"width": 256, "depth": 2}, (1, 8, 8)),
    ("mlp", {"width": 7, "depth": 1}, (3, 32, 32)),
    ("mlp", {"width": 4096, "depth": 8}, (20,)),
]


@pytest.mark.parametrize("num_classes", [2, 10, 1000])
@pytest.mark.parametrize(("arch", "kwargs", "shape"), MODELS)
def test_the_apis_parameter_count_is_what_torch_counts(
    arch: str, kwargs: dict[str, int], shape: tuple[int, ...], num_classes: int
) -> None:
    # The API sizes a model at submit time without torch (COUNTERWEIGHT_MAX_MODEL_PARAMETERS);
    # the count must be the built model's, parameter for parameter.
    with torch.device("meta"):  # shapes only: 8 layers of 4096 allocate nothing
        model = build_model(arch, shape, num_classes, **kwargs)
    assert count_parameters(arch, kwargs, shape, num_classes) == n_weights(model)


TAGGERS = [
    # (model fields, word ids, character ids): 0 character ids is a tagger without them.
    ({}, 100, 0),
    ({}, 100, 27),
    ({"embedding_dim": 7, "char_embedding_dim": 3, "width": 5, "depth": 3}, 50_000, 300),
    ({"embedding_dim": 1024, "width": 4096, "depth": 8}, 2_000_001, 0),  # issue 17, item 4
    ({"embedding_dim": 1, "char_embedding_dim": 256, "width": 1, "depth": 1}, 2, 65_536),
]


@pytest.mark.parametrize("num_tags", [2, 1000])
@pytest.mark.parametrize(("fields", "vocab_size", "char_vocab_size"), TAGGERS)
def test_the_apis_tagger_count_is_what_torch_counts(
    fields: dict[str, int], vocab_size: int, char_vocab_size: int, num_tags: int
) -> None:
    # The tagger too is sized at submit time, its vocabulary included: the embedding
    # tables have a row per id up to the data's largest.
    model = ModelSpec.model_validate({"arch": "bilstm_tagger", "width": 100, "depth": 1, **fields})
    kwargs = tagger_kwargs(model)
    with torch.device("meta"):  # 5 billion weights allocate nothing here
        tagger = BiLSTMTagger(vocab_size, num_tags, char_vocab_size=char_vocab_size, **kwargs)
    count = count_tagger_parameters(kwargs, vocab_size, char_vocab_size, num_tags)
    assert count == n_weights(tagger)


def test_the_tagger_of_issue_17_has_billions_of_weights() -> None:
    # One word id of 2,000,000 and the largest layers a spec allows: ~5 billion weights,
    # about 19 GiB in float32 before the optimiser's state.
    model = ModelSpec.model_validate(
        {"arch": "bilstm_tagger", "embedding_dim": 1024, "width": 4096, "depth": 8}
    )
    assert count_tagger_parameters(tagger_kwargs(model), 2_000_001, 0, 9) > 5_000_000_000


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_a_saved_model_reloads_from_its_card_with_the_same_outputs(
    arch: str, tmp_path: Path
) -> None:
    shape, kwargs = (3, 32, 32), arch_kwargs(ModelSpec.model_validate({"arch": arch}))
    torch.manual_seed(0)
    model = build_model(arch, shape, 3, **kwargs)
    x = torch.rand(4, *shape)
    model.normalize.fit(x)
    model.train()(x)  # moves the batch norms' running statistics off their initial values
    model.eval()
    card = {"arch": arch, "model_kwargs": {"input_shape": list(shape), "num_classes": 3, **kwargs}}
    save_model(tmp_path, model.state_dict(), card)

    served, _ = load_model(tmp_path)  # model_from_card + a strict load_state_dict
    with torch.inference_mode():
        torch.testing.assert_close(served(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18", "resnet32"])
def test_conv_archs_refuse_feature_vectors_naming_the_field(arch: str) -> None:
    with pytest.raises(DatasetError, match=rf"^model.arch: {arch} needs images .* \(64,\)"):
        build_model(arch, (64,), 2)


def test_small_cnn_refuses_images_smaller_than_its_three_poolings() -> None:
    with pytest.raises(DatasetError, match=r"^model.arch: small_cnn needs images at least 8x8"):
        build_model("small_cnn", (1, 4, 4), 2)


def test_small_cnn_learns_digits_in_three_epochs(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": {"arch": "small_cnn"},
            "train": {"epochs": 3, "batch_size": 64, "lr": 0.01, "schedule": "cosine"},
        }
    )
    result = run_job(spec, tmp_path)
    assert result is not None
    assert result.metrics["final"]["accuracy"] > 0.9
    assert result.card["arch"] == "small_cnn"
    assert result.card["model_kwargs"] == {"input_shape": [1, 8, 8], "num_classes": 10}
