"""POST /v1/jobs/validate over HTTP: effective class weights, warnings and refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from tests.conftest import ThreadedUvicorn

# Digits 0 and 1 with 1 the minority: about 10x fewer training samples than 0.
IMBALANCED: dict[str, Any] = {
    "dataset": {"name": "digits", "classes": [0, 1]},
    "imbalance": {"profile": "step", "ratio": 10, "minority": [1]},
}
FREQUENCY_WARNING = "class weights grow with class frequency"
TWICE_WARNING = "re-weighting twice"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    # Validation never touches the database: one SQLite-backed app serves the whole module.
    home: Path = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'counterweight.db'}")
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http


def validate(client: httpx.Client, **changes: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs/validate", json={**IMBALANCED, **changes})
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def refusal(client: httpx.Client, **changes: Any) -> str:
    response = client.post("/v1/jobs/validate", json={**IMBALANCED, **changes})
    assert response.status_code == 422, response.text
    detail: str = response.json()["detail"]
    # Submitting is refused the same way, and nothing is queued.
    assert client.post("/v1/jobs", json={**IMBALANCED, **changes}).json()["detail"] == detail
    return detail


def matching(report: dict[str, Any], text: str) -> list[str]:
    return [w for w in report["warnings"] if text in w]


def small_validation_only(report: dict[str, Any]) -> bool:
    """The report's one warning is that the minority's validation samples are too few to
    select an epoch by (IMBALANCED holds 1 of them)."""
    val = report["counts"]["val"][1]
    return report["warnings"] == [
        f"train.select_by: validation holds fewer than 10 samples of 1 class(es) ('1': {val}): "
        "too few to rank epochs, so the job keeps its last epoch and does not stop early; "
        "raise dataset.val_fraction (or keep more of the rare classes) to select by validation"
    ]


def test_the_report_of_a_plain_spec_has_no_weights_and_no_other_warning(
    client: httpx.Client,
) -> None:
    report = validate(client)
    majority, minority = report["counts"]["train"]
    assert 8 <= majority / minority <= 12  # step ratio 10
    assert report["class_weight"] == [1.0, 1.0]
    assert small_validation_only(report) and report["notes"] == []
    # Selecting the last epoch asks nothing of the validation split: no warning at all.
    assert validate(client, train={"select_by": "last"})["warnings"] == []


def test_balanced_weights_are_n_over_k_n_c_of_the_training_counts(client: httpx.Client) -> None:
    report = validate(client, class_weight="balanced")
    n0, n1 = report["counts"]["train"]
    assert report["class_weight"] == pytest.approx([(n0 + n1) / (2 * n0), (n0 + n1) / (2 * n1)])
    assert small_validation_only(report)
    assert report["spec"]["class_weight"] == "balanced"


def test_weights_that_grow_with_frequency_are_flagged(client: httpx.Client) -> None:
    # Frequencies 9:1 used as weights: the majority class 0 gets the most weight.
    report = validate(client, class_weight={"0": 9, "1": 1})
    [warning] = matching(report, FREQUENCY_WARNING)
    assert f"class 0 ('0') has the most training samples ({report['counts']['train'][0]})" in (
        warning
    )
    assert "largest effective weight (9)" in warning and '"balanced"' in warning
    # Inverse frequencies are what was meant: no warning.
    assert matching(validate(client, class_weight={"0": 1, "1": 9}), FREQUENCY_WARNING) == []
    # Focal's alpha counts too: the paper's 0.25 on the rare class weighs the majority more.
    report = validate(client, loss={"type": "focal", "alpha": [0.75, 0.25]})
    assert report["class_weight"] == [0.75, 0.25]
    assert matching(report, FREQUENCY_WARNING)


@pytest.mark.parametrize(
    ("changes", "ways"),
    [
        ({"class_weight": "balanced", "loss": {"type": "balanced_softmax"}}, "class_weight and"),
        ({"class_weight": {"1": 5}, "loss": {"type": "logit_adjusted"}}, "class_weight and"),
        ({"class_weight": "inverse_sqrt", "loss": {"type": "class_balanced"}}, "class_weight"),
        ({"class_weight": "balanced", "loss": {"type": "ldam", "drw_epoch": 2}}, "drw_epoch"),
        ({"sampler": "oversample", "class_weight": "balanced"}, "sampler 'oversample'"),
        ({"sampler": "undersample", "loss": {"type": "balanced_softmax"}}, "sampler"),
    ],
)
def test_re_weighting_twice_is_flagged(
    client: httpx.Client, changes: dict[str, Any], ways: str
) -> None:
    [warning] = matching(validate(client, **changes), TWICE_WARNING)
    assert ways in warning


@pytest.mark.parametrize(
    "changes",
    [
        {"class_weight": "balanced"},
        {"loss": {"type": "balanced_softmax"}},
        {"sampler": "oversample"},
        {"class_weight": "balanced", "loss": {"type": "ldam"}},  # LDAM without DRW: margins only
        {"class_weight": "balanced", "loss": {"type": "focal"}},
    ],
)
def test_one_way_of_re_weighting_is_not_flagged(
    client: httpx.Client, changes: dict[str, Any]
) -> None:
    assert matching(validate(client, **changes), TWICE_WARNING) == []


def test_a_class_with_few_training_samples_is_flagged(client: httpx.Client) -> None:
    report = validate(client, imbalance={"profile": "step", "ratio": 20, "minority": [1]})
    n1 = report["counts"]["train"][1]
    assert n1 < 10
    [warning] = matching(report, "training samples (fewer than 10)")
    assert f"class 1 ('1') has only {n1} training samples" in warning
    assert matching(validate(client), "training samples (fewer than 10)") == []


def test_a_class_weight_object_that_leaves_a_class_out_is_flagged(client: httpx.Client) -> None:
    report = validate(
        client,
        dataset={"name": "digits", "classes": [4, 5, 6]},
        imbalance={},
        class_weight={"5": 2},
    )
    # "5" is not an index of this 3-class job, so it is the class named "5": index 1.
    assert report["class_weight"] == [1.0, 2.0, 1.0]
    assert matching(report, "does not name") == [
        "class_weight does not name class 0 ('4'); it gets weight 1.0",
        "class_weight does not name class 2 ('6'); it gets weight 1.0",
    ]
    report = validate(client, class_weight={"0": 1, "1": 3})
    assert matching(report, "does not name") == []


def test_effective_weights_multiply_class_weight_and_the_loss_s_own_weights(
    client: httpx.Client,
) -> None:
    report = validate(client, class_weight={"0": 2}, loss={"type": "class_balanced", "beta": 0.99})
    n0, n1 = report["counts"]["train"]
    raw = [(1 - 0.99) / (1 - 0.99**n) for n in (n0, n1)]
    cb = [2 * r / sum(raw) for r in raw]
    assert report["class_weight"] == pytest.approx([2 * cb[0], cb[1]])
    assert "class_weight does not name class 1 ('1'); it gets weight 1.0" in report["warnings"]


def test_ldam_with_drw_reports_the_weights_before_the_switch_and_notes_it(
    client: httpx.Client,
) -> None:
    report = validate(client, loss={"type": "ldam", "drw_epoch": 5})
    assert report["class_weight"] == [1.0, 1.0]
    [note] = report["notes"]
    assert "from epoch 5 on" in note


def test_options_that_do_not_apply_to_the_loss_are_flagged(client: httpx.Client) -> None:
    report = validate(client, loss={"type": "focal", "label_smoothing": 0.1, "tau": 2})
    assert matching(report, "does not apply") == [
        "loss.label_smoothing does not apply to loss 'focal'; it is ignored",
        "loss.tau does not apply to loss 'focal'; it is ignored",
    ]
    report = validate(client, loss={"type": "class_balanced", "base": "focal", "gamma": 1})
    assert matching(report, "does not apply") == []


@pytest.mark.parametrize("loss_type", ["logit_adjusted", "balanced_softmax"])
def test_smoothing_above_the_rare_class_s_share_is_flagged_for_prior_adjusting_losses(
    client: httpx.Client, loss_type: str
) -> None:
    # The minority is about 1/11 of the training samples: smoothing 0.3 gives it 0.15 of
    # every target, more than its share; 0.1 gives 0.05, less.
    report = validate(client, loss={"type": loss_type, "label_smoothing": 0.3})
    share = report["counts"]["train"][1] / sum(report["counts"]["train"])
    [warning] = matching(report, "loss.label_smoothing")
    assert warning.startswith(
        f"loss.label_smoothing: 0.3 gives every class at least 0.15 of each target, more "
        f"than class 1 ('1')'s share of the training samples ({share:.3g}); with loss "
        f"'{loss_type}' the model then predicts class 1 ('1') for most inputs."
    )
    below_share = validate(client, loss={"type": loss_type, "label_smoothing": 0.1})
    assert matching(below_share, "loss.label_smoothing") == []
    cross_entropy = validate(client, loss={"type": "cross_entropy", "label_smoothing": 0.3})
    assert matching(cross_entropy, "loss.label_smoothing") == []


def test_a_class_weight_list_is_refused_with_what_to_send_instead(client: httpx.Client) -> None:
    detail = refusal(client, class_weight=[1.0, 9.0])
    assert detail.startswith("class_weight:")
    assert "a list is ambiguous" in detail
    assert '{"0": 1.0, "1": 50.0}' in detail and '"balanced"' in detail


def test_an_effective_number_rule_is_not_read_as_a_class_named_effective_number(
    client: httpx.Client,
) -> None:
    report = validate(client, class_weight={"effective_number": 0.99})
    assert report["class_weight"][1] > report["class_weight"][0]
    assert sum(report["class_weight"]) == pytest.approx(2.0)
    detail = refusal(client, class_weight={"effective_number": 1.5})
    assert "class_weight.effective_number" in detail and "less than 1" in detail


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"class_weight": {"cat": 2}}, "class_weight: class 'cat' is not in this job"),
        ({"class_weight": {"7": 2}}, "class_weight: class '7' is not in this job"),
        ({"class_weight": {"0": -1}}, "class_weight: the weight of '0' is -1.0"),
        ({"loss": {"type": "focal", "alpha": [1, 2, 3]}}, "loss.alpha has 3 values; this job"),
    ],
)
def test_specs_that_do_not_fit_the_data_are_422_naming_the_field(
    client: httpx.Client, changes: dict[str, Any], message: str
) -> None:
    assert refusal(client, **changes).startswith(message)


def test_a_model_or_augmentation_that_does_not_fit_the_inputs_is_refused_at_submit(
    tmp_path: Path,
) -> None:
    features = tmp_path / "features.npz"
    rng = np.random.default_rng(0)
    np.savez(
        features,
        x_train=rng.random((40, 5), dtype=np.float32),
        y_train=np.arange(40) % 2,
        x_test=rng.random((10, 5), dtype=np.float32),
        y_test=np.arange(10) % 2,
    )
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'cw.db'}")
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        with features.open("rb") as f:
            upload = http.post("/v1/datasets", files={"file": ("f.npz", f)})
        assert upload.status_code == 201, upload.text
        dataset = {"name": "uploaded", "id": upload.json()["id"]}
        conv = http.post("/v1/jobs", json={"dataset": dataset, "model": {"arch": "small_cnn"}})
        assert conv.status_code == 422
        assert "model.arch" in conv.json()["detail"] and "(5,)" in conv.json()["detail"]
        flip = http.post("/v1/jobs", json={"dataset": dataset, "train": {"augment": True}})
        assert flip.status_code == 422 and "train.augment" in flip.json()["detail"]
        assert http.get("/v1/jobs").json()["data"] == []
        tiny = http.post(
            "/v1/jobs", json={"dataset": {"name": "digits"}, "model": {"arch": "small_cnn"}}
        )
        assert tiny.status_code == 202  # digits are 8x8: just big enough for small_cnn
