"""Sequence labeling over HTTP: uploads of sequences, validation reports and every refusal.

The real app under uvicorn, real SQLite (and Postgres for the stored upload), httpx.
Each refusal is a 422 whose message names the field or array and says what is expected.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from tests.conftest import ThreadedUvicorn
from tests.sequences import STEPS, TAG_NAMES, tagging_arrays

N_TRAIN = 60
ARRAYS = tagging_arrays(n_train=N_TRAIN, n_test=20)


def npz(arrays: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def upload(http: httpx.Client, arrays: dict[str, Any]) -> httpx.Response:
    return http.post("/v1/datasets", files={"file": ("tags.npz", npz(arrays), "application/x")})


def serve(home: Path, database_url: str) -> ThreadedUvicorn:
    return ThreadedUvicorn(create_app(Settings(home=home, database_url=database_url)))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, str]]:
    """One SQLite-backed app and one uploaded tagging dataset for the module."""
    home: Path = tmp_path_factory.mktemp("home")
    with serve(home, f"sqlite:///{home / 'db.sqlite'}") as url, httpx.Client(base_url=url) as http:
        response = upload(http, ARRAYS)
        assert response.status_code == 201, response.text
        yield http, response.json()["id"]


def spec(dataset_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "task": "sequence_labeling",
        "dataset": {"name": "uploaded", "id": dataset_id},
        **changes,
    }


def refusal(http: httpx.Client, body: dict[str, Any]) -> str:
    """The 422 of validate, which submit gives alike (and queues nothing)."""
    response = http.post("/v1/jobs/validate", json=body)
    assert response.status_code == 422, response.text
    detail: str = response.json()["detail"]
    submitted = http.post("/v1/jobs", json=body)
    assert (submitted.status_code, submitted.json()["detail"]) == (422, detail)
    return detail


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_a_sequence_upload_is_stored_as_sequences_and_a_job_is_queued(
    database_url: str, tmp_path: Path
) -> None:
    with serve(tmp_path, database_url) as url, httpx.Client(base_url=url) as http:
        response = upload(http, ARRAYS)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["kind"] == "sequences"
        assert body["shapes"]["x_train"] == [N_TRAIN, STEPS]
        assert body["shapes"]["chars_train"] == [N_TRAIN, STEPS, 6]
        assert body["class_names"] == TAG_NAMES and body["num_classes"] == 7
        # Words per tag; padding (tagged 0 in y_train) is not counted as "O".
        words = ARRAYS["x_train"] != 0
        expected = np.bincount(ARRAYS["y_train"][words], minlength=7).tolist()
        assert body["class_counts"]["train"] == expected
        assert http.get(f"/v1/datasets/{body['id']}").json()["kind"] == "sequences"

        job = http.post("/v1/jobs", json=spec(body["id"], class_weight="balanced"))
        assert job.status_code == 202, job.text
        stored = http.get(f"/v1/jobs/{job.json()['id']}").json()
        assert stored["status"] == "queued"


def test_validate_reports_per_tag_weights_over_words(shared: tuple[httpx.Client, str]) -> None:
    http, dataset_id = shared
    response = http.post("/v1/jobs/validate", json=spec(dataset_id, class_weight="balanced"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["class_names"] == TAG_NAMES
    train = report["counts"]["train"]
    assert sum(train) + sum(report["counts"]["val"]) == int((ARRAYS["x_train"] != 0).sum())
    n = sum(train)
    assert report["class_weight"] == pytest.approx([n / (7 * c) for c in train])
    resolved = report["spec"]
    assert resolved["model"]["arch"] == "bilstm_tagger"
    assert resolved["train"]["select_by"] == "macro_f1"
    # The generated rare tag is rare indeed; and this small upload validates on a few
    # words of most tags, too few to select an epoch by.
    noisy, small_validation = report["warnings"]
    assert noisy == (
        f"class 6 ('RARE') has only {train[6]} training words (fewer than 10); its metrics "
        "will be noisy"
    )
    assert small_validation.startswith("train.select_by: validation holds fewer than 10")
    assert "so the job keeps its last epoch" in small_validation


def test_weights_that_grow_with_tag_frequency_are_flagged(shared: tuple[httpx.Client, str]) -> None:
    http, dataset_id = shared
    weights = {"O": 10.0, "RARE": 0.5}
    report = http.post("/v1/jobs/validate", json=spec(dataset_id, class_weight=weights)).json()
    assert any("grow with class frequency" in w and "('O')" in w for w in report["warnings"])
    # The tags the object left out get 1.0, with a warning each.
    assert report["class_weight"][0] == 10.0 and report["class_weight"][6] == 0.5
    assert sum("does not name" in w for w in report["warnings"]) == 5


def test_sample_weights_per_sentence_and_per_step_multiply_class_weights(
    shared: tuple[httpx.Client, str],
) -> None:
    http, dataset_id = shared
    per_sentence = [2.0] * N_TRAIN
    per_step = [[2.0] * STEPS for _ in range(N_TRAIN)]
    reports = [
        http.post(
            "/v1/jobs/validate", json=spec(dataset_id, class_weight="balanced", sample_weight=w)
        ).json()
        for w in (None, per_sentence, per_step)
    ]
    plain, sentence, step = (r["class_weight"] for r in reports)
    assert sentence == pytest.approx([2 * w for w in plain])
    assert step == sentence


@pytest.mark.parametrize(
    "shape",
    [(7,), (STEPS,), (N_TRAIN, STEPS + 1), (N_TRAIN - 1,), (N_TRAIN, STEPS, 1)],
    ids=["tags", "steps", "T+1", "N-1", "3-D"],
)
def test_a_sample_weight_of_the_wrong_shape_is_422_with_the_shapes_accepted(
    shared: tuple[httpx.Client, str], shape: tuple[int, ...]
) -> None:
    http, dataset_id = shared
    weights = np.ones(shape).tolist()
    detail = refusal(http, spec(dataset_id, sample_weight=weights))
    if len(shape) == 3:  # not even a list of lists of numbers: pydantic names the field
        assert "sample_weight" in detail
        return
    assert f"sample_weight has shape {shape}" in detail
    assert f"({N_TRAIN},), one weight per sentence" in detail
    assert f"({N_TRAIN}, {STEPS}), one weight per step" in detail


def test_ragged_and_negative_sample_weights_are_422(shared: tuple[httpx.Client, str]) -> None:
    http, dataset_id = shared
    ragged = [[1.0] * STEPS for _ in range(N_TRAIN)]
    ragged[3] = [1.0] * (STEPS - 1)
    assert "rows have different lengths" in refusal(http, spec(dataset_id, sample_weight=ragged))
    negative = [[1.0] * STEPS for _ in range(N_TRAIN)]
    negative[4][2] = -1.0
    detail = refusal(http, spec(dataset_id, sample_weight=negative))
    assert "sample_weight[4, 2] is -1.0" in detail


def test_class_weight_as_a_list_says_what_to_send(shared: tuple[httpx.Client, str]) -> None:
    http, dataset_id = shared
    detail = refusal(http, spec(dataset_id, class_weight=[1.0] * 7))
    assert detail.startswith("class_weight:")
    assert 'an object mapping tag to weight, e.g. {"0": 1.0, "3": 20.0}' in detail
    assert '"balanced"' in detail


@pytest.mark.parametrize("key", ["7", "B-MISC"])
def test_class_weight_naming_a_tag_outside_the_tag_set_is_422(
    shared: tuple[httpx.Client, str], key: str
) -> None:
    http, dataset_id = shared
    detail = refusal(http, spec(dataset_id, class_weight={key: 2.0}))
    assert f"class_weight: class {key!r} is not in this job" in detail
    assert "6 ('RARE')" in detail


@pytest.mark.parametrize(
    "imbalance",
    [{"profile": "step", "ratio": 10}, {"profile": "counts", "counts": [5, 5]}, {"seed": 3}],
    ids=["step", "counts", "seed"],
)
def test_imbalance_options_do_not_apply_to_sequences(
    shared: tuple[httpx.Client, str], imbalance: dict[str, Any]
) -> None:
    http, dataset_id = shared
    detail = refusal(http, spec(dataset_id, imbalance=imbalance))
    assert "no imbalance options apply to sequence_labeling (none do" in detail
    assert "class_weight" in detail


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"sampler": "oversample"}, "sampler: 'oversample' balances whole samples"),
        ({"model": {"arch": "mlp"}}, "model.arch: sequence_labeling needs bilstm_tagger"),
        ({"dataset": {"name": "digits"}}, "dataset.name: sequence_labeling trains on uploaded"),
        ({"train": {"augment": True}}, "train.augment: random crop and flip need images"),
    ],
    ids=["sampler", "arch", "builtin", "augment"],
)
def test_options_for_whole_samples_are_refused(
    shared: tuple[httpx.Client, str], changes: dict[str, Any], expected: str
) -> None:
    http, dataset_id = shared
    assert expected in refusal(http, {**spec(dataset_id), **changes})


def test_tasks_and_uploads_must_match(shared: tuple[httpx.Client, str]) -> None:
    http, dataset_id = shared
    as_classes = {"dataset": {"name": "uploaded", "id": dataset_id}}
    assert "holds sequences" in refusal(http, as_classes)
    features = {
        "x_train": np.random.default_rng(0).random((6, 3)).astype(np.float32),
        "y_train": np.array([0, 1, 0, 1, 0, 1]),
        "x_test": np.random.default_rng(1).random((2, 3)).astype(np.float32),
        "y_test": np.array([0, 1]),
    }
    other = upload(http, features).json()["id"]
    assert "holds classification data" in refusal(http, spec(other))
    per_step = {"dataset": {"name": "digits"}, "sample_weight": [[1.0, 2.0]]}
    assert "per-timestep weights (N, T) are for task sequence_labeling" in refusal(http, per_step)
    tagger = {"dataset": {"name": "digits"}, "model": {"arch": "bilstm_tagger"}}
    assert "bilstm_tagger is for task sequence_labeling" in refusal(http, tagger)


def _with(**changes: Any) -> dict[str, Any]:
    return {**ARRAYS, **changes}


def _tags_out_of_range() -> np.ndarray:
    y = ARRAYS["y_train"].copy()
    y[2, 1] = 9
    return y


def _gap() -> np.ndarray:
    x = ARRAYS["x_train"].copy()
    x[5, 1] = 0
    return x


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "tag out of range": (
        _with(y_train=_tags_out_of_range()),
        "y_train has tag 9 at row 2, step 1; tags must be 0..6 (k from tag_names)",
    ),
    "y shape": (
        _with(y_test=ARRAYS["y_test"][:, :-1]),
        f"y_test has shape (20, {STEPS - 1}) but x_test has (20, {STEPS})",
    ),
    "chars shape": (
        _with(chars_train=ARRAYS["chars_train"][:, :-2]),
        f"chars_train has shape ({N_TRAIN}, {STEPS - 2}, 6); expected (N, T, C) = "
        f"({N_TRAIN}, {STEPS}, C)",
    ),
    "chars on one split": (
        {k: v for k, v in ARRAYS.items() if k != "chars_test"},
        "chars_test: missing; chars_train is given",
    ),
    "weight shape": (
        _with(sample_weight=np.ones(7)),
        f"sample_weight has shape (7,); accepted: ({N_TRAIN},), one weight per sentence of "
        f"x_train, or ({N_TRAIN}, {STEPS}), one per step",
    ),
    "float words": (
        _with(x_train=ARRAYS["x_train"].astype(np.float32)),
        "x_train has dtype float32; expected integer ids",
    ),
    "negative word id": (
        _with(x_test=np.where(ARRAYS["x_test"] == 3, -3, ARRAYS["x_test"])),
        "x_test has id -3 at",
    ),
    "padding inside a sentence": (
        _with(x_train=_gap()),
        "x_train row 5 has padding (0) at step 1 and a word after it",
    ),
    "empty sentence": (
        _with(x_test=np.vstack([ARRAYS["x_test"][:-1], np.zeros((1, STEPS), np.int32)])),
        "x_test row 19 is all padding (0)",
    ),
    "unknown array": (_with(lengths=np.ones(N_TRAIN)), "lengths: not an array a sequence upload"),
    "pickled tag names": (
        _with(tag_names=np.array(TAG_NAMES, dtype=object)),
        "tag_names: the file holds pickled objects",
    ),
    "pickled tags": (
        _with(y_train=ARRAYS["y_train"].astype(object)),
        "y_train: the file holds pickled objects",
    ),
}


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
def test_invalid_sequence_upload_is_422_naming_the_array(
    shared: tuple[httpx.Client, str], case: str
) -> None:
    http, _ = shared
    arrays, expected = INVALID[case]
    response = upload(http, arrays)
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]


def test_an_uploads_per_step_weights_are_used_from_the_dataset(
    shared: tuple[httpx.Client, str],
) -> None:
    http, without_weights = shared
    # RARE words weigh 4, every other word 1; padding steps 7, which must count for nothing.
    weights = np.where(ARRAYS["y_train"] == 6, 4.0, 1.0)
    weights[ARRAYS["x_train"] == 0] = 7.0
    uploaded = upload(http, {**ARRAYS, "sample_weight": weights})
    assert uploaded.json()["has_sample_weight"] is True
    body = spec(uploaded.json()["id"], sample_weight="from_dataset")
    report = http.post("/v1/jobs/validate", json=body).json()
    assert report["class_weight"] == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 4.0]
    plain = spec(uploaded.json()["id"])
    assert "has none" in refusal(http, spec(without_weights, sample_weight="from_dataset"))
    assert http.post("/v1/jobs/validate", json=plain).json()["class_weight"] == [1.0] * 7
