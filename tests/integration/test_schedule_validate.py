"""POST /v1/jobs/validate over HTTP for deferred re-balancing and two-stage training:
what cannot take effect is a 422 naming the field; what can is explained in notes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from tests.conftest import ThreadedUvicorn

IMBALANCED: dict[str, Any] = {
    "dataset": {"name": "digits", "classes": [0, 1]},
    "imbalance": {"profile": "step", "ratio": 10, "minority": [1]},
}
MAX_EPOCHS = 12


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    home: Path = tmp_path_factory.mktemp("home")
    settings = Settings(
        home=home, database_url=f"sqlite:///{home / 'counterweight.db'}", max_epochs=MAX_EPOCHS
    )
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http


def with_changes(**changes: Any) -> dict[str, Any]:
    return {**IMBALANCED, **changes}


BAD: list[tuple[dict[str, Any], str, str]] = [
    (with_changes(train={"sampler_from_epoch": 2}), "train.sampler_from_epoch", "'none'"),
    (
        with_changes(sampler="undersample", train={"sampler_from_epoch": 2}),
        "train.sampler_from_epoch",
        "undersampled epoch is shorter",
    ),
    (
        with_changes(sampler="oversample", train={"epochs": 3, "sampler_from_epoch": 4}),
        "train.sampler_from_epoch",
        "after the last epoch",
    ),
    (
        with_changes(train={"class_weight_from_epoch": 2}),
        "train.class_weight_from_epoch",
        "class_weight is null",
    ),
    (
        with_changes(class_weight="balanced", train={"epochs": 3, "class_weight_from_epoch": 5}),
        "train.class_weight_from_epoch",
        "after the last epoch",
    ),
    (
        with_changes(loss={"type": "ldam", "drw_epoch": 11}),
        "loss.drw_epoch",
        "after the last epoch (train.epochs 10)",
    ),
    (with_changes(train={"stage2": {}}), "train.stage2.epochs", "Field required"),
    (with_changes(train={"stage2": {"epochs": 0}}), "train.stage2.epochs", "greater than 0"),
    (
        with_changes(train={"stage2": {"epochs": 2, "sampler": "smote"}}),
        "train.stage2.sampler",
        "'oversample'",
    ),
    (with_changes(train={"stage2": {"epochs": 2, "lr": 0}}), "train.stage2.lr", "greater than 0"),
    (
        with_changes(train={"stage2": {"epochs": 2, "schedule": "step"}}),
        "train.stage2.schedule",
        "'cosine'",
    ),
    (
        with_changes(train={"stage2": {"epochs": 2, "freeze": True}}),
        "train.stage2.freeze",
        "Extra inputs",
    ),
    (
        with_changes(train={"epochs": 10, "stage2": {"epochs": 3}}),
        "train.stage2.epochs",
        f"10 + 3 epochs in all (train.epochs + train.stage2.epochs) is more than this service "
        f"allows ({MAX_EPOCHS}, COUNTERWEIGHT_MAX_EPOCHS)",
    ),
    (
        {
            "task": "sequence_labeling",
            "dataset": {"name": "uploaded", "id": "any"},
            "train": {"stage2": {"epochs": 1}},
        },
        "train.stage2",
        "does not apply to sequence_labeling",
    ),
    (
        {
            "task": "sequence_labeling",
            "dataset": {"name": "uploaded", "id": "any"},
            "class_weight": "balanced",
            "train": {"class_weight_from_epoch": 2},
        },
        "train.class_weight_from_epoch",
        "does not apply to sequence_labeling",
    ),
]


@pytest.mark.parametrize(
    ("body", "field", "why"), BAD, ids=[f"{field}-{i}" for i, (_, field, _) in enumerate(BAD)]
)
def test_a_schedule_that_cannot_take_effect_is_422_naming_the_field(
    client: httpx.Client, body: dict[str, Any], field: str, why: str
) -> None:
    for route in ("/v1/jobs/validate", "/v1/jobs"):
        response = client.post(route, json=body)
        assert response.status_code == 422, (route, response.text)
        detail = response.json()["detail"]
        assert field in detail and why in detail, detail
    assert client.get("/v1/jobs").json()["data"] == []


def validate(client: httpx.Client, **changes: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs/validate", json=with_changes(**changes))
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def test_deferred_re_balancing_is_noted_with_its_epoch_and_weights(client: httpx.Client) -> None:
    report = validate(
        client,
        sampler="oversample",
        class_weight="balanced",
        train={"epochs": 6, "sampler_from_epoch": 3, "class_weight_from_epoch": 5},
    )
    assert report["class_weight"] == [1.0, 1.0]  # as training starts
    n0, n1 = report["counts"]["train"]
    balanced = [round((n0 + n1) / (2 * n), 4) for n in (n0, n1)]
    assert [note for note in report["notes"] if "applies from epoch" in note] == [
        "sampler 'oversample' applies from epoch 3 on (deferred re-sampling); the epochs "
        "before it visit every training sample once",
        "class_weight applies from epoch 5 on (deferred re-weighting): the effective class "
        f"weights switch from [1.0, 1.0] to {balanced}; class_weight shows the weights before "
        "the switch",
    ]
    # Still two ways of re-balancing at once, deferred or not.
    assert any("re-weighting twice" in w for w in report["warnings"])
    # Weights that grow with frequency are flagged though they only start in epoch 2.
    report = validate(client, class_weight={"0": 9}, train={"class_weight_from_epoch": 2})
    assert any("grow with class frequency" in w for w in report["warnings"])


def test_two_stages_are_explained_and_stage_two_s_double_re_weighting_flagged(
    client: httpx.Client,
) -> None:
    report = validate(client, train={"epochs": 4, "stage2": {"epochs": 3, "lr": 0.05}})
    assert [note for note in report["notes"] if note.startswith("two stages")] == [
        "two stages: after epoch 4 (or an early stop) the model stage one selected keeps its "
        "layers, frozen with their batch norm statistics, and its classifier head is "
        "re-initialised and trained for 3 epochs (numbered 5..7) with sampler 'oversample' at "
        "lr 0.05 (cosine); the model served is the one stage two selects among its own epochs "
        "by balanced_accuracy"
    ]
    assert not any("twice" in w for w in report["warnings"])
    report = validate(client, class_weight="balanced", train={"stage2": {"epochs": 2}})
    [warning] = [w for w in report["warnings"] if "twice" in w]
    assert warning.startswith(
        "re-weighting twice in stage two: train.stage2.sampler 'oversample' and class_weight"
    )
    report = validate(
        client, class_weight="balanced", train={"stage2": {"epochs": 2, "sampler": "none"}}
    )
    assert not any("twice" in w for w in report["warnings"])
