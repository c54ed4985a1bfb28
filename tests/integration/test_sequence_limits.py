"""Sequence uploads and the tagger against the service's caps: the tagger's size, its
vocabulary included, against COUNTERWEIGHT_MAX_MODEL_PARAMETERS; word ids against
COUNTERWEIGHT_MAX_VOCABULARY; tag names against their cap; and weights at padding steps,
which are never read. The real app under uvicorn, real databases, httpx.
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
from tests.sequences import TAG_NAMES, tagging_arrays

ARRAYS = tagging_arrays(n_train=30, n_test=10)
BIGGEST_TAGGER = {"arch": "bilstm_tagger", "embedding_dim": 1024, "width": 4096, "depth": 8}


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(home=tmp_path, database_url=database_url)
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http


def upload(http: httpx.Client, arrays: dict[str, Any]) -> httpx.Response:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return http.post("/v1/datasets", files={"file": ("tags.npz", buffer.getvalue(), "x/y")})


def uploaded(http: httpx.Client, arrays: dict[str, Any]) -> str:
    response = upload(http, arrays)
    assert response.status_code == 201, response.text
    dataset_id: str = response.json()["id"]
    return dataset_id


def with_word(word_id: int) -> dict[str, Any]:
    """ARRAYS with the first word of the first training sentence set to `word_id`."""
    words = ARRAYS["x_train"].astype(np.int64)
    words[0, 0] = word_id
    return {**ARRAYS, "x_train": words}


def spec(dataset_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "task": "sequence_labeling",
        "dataset": {"name": "uploaded", "id": dataset_id},
        **changes,
    }


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_the_tagger_is_sized_with_its_vocabulary_against_the_parameter_cap(
    client: httpx.Client,
) -> None:
    dataset_id = uploaded(client, with_word(999_999))  # the largest id the default cap allows
    # Before: ~4 billion weights (a row of 1024 per word id, 8 layers of 4096) validated.
    for path in ("/v1/jobs/validate", "/v1/jobs"):
        response = client.post(path, json=spec(dataset_id, model=BIGGEST_TAGGER))
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail.startswith("model: bilstm_tagger with {'embedding_dim': 1024")
        assert "word ids 0..999,999 and character ids 0..26" in detail
        assert "1,024,000,000 of them in the word embeddings" in detail
        assert detail.endswith("(100,000,000, COUNTERWEIGHT_MAX_MODEL_PARAMETERS)")
    # The vocabulary alone can be the bulk: 128 x 1,000,000 word embeddings, one layer.
    wide = {"arch": "bilstm_tagger", "embedding_dim": 128, "width": 8}
    response = client.post("/v1/jobs/validate", json=spec(dataset_id, model=wide))
    assert response.status_code == 422
    assert "128,000,000 of them in the word embeddings" in response.json()["detail"]
    small = {"arch": "bilstm_tagger", "embedding_dim": 16, "width": 16}
    accepted = client.post("/v1/jobs", json=spec(dataset_id, model=small))
    assert accepted.status_code == 202, accepted.text
    assert [job["id"] for job in client.get("/v1/jobs").json()["data"]] == [accepted.json()["id"]]


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_word_ids_are_capped_at_upload(database_url: str, tmp_path: Path) -> None:
    with (
        ThreadedUvicorn(create_app(Settings(home=tmp_path, database_url=database_url))) as url,
        httpx.Client(base_url=url) as http,
    ):
        # Before: ids up to 2,000,000 were taken, so a tagger's embeddings could be 2 billion.
        response = upload(http, with_word(1_000_000))
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert detail.startswith("x_train has id 1000000 at [0, 0]; word ids must be 0..999999")
        assert "at most 1000000 of them (COUNTERWEIGHT_MAX_VOCABULARY)" in detail
    small = Settings(home=tmp_path / "small", database_url=database_url, max_vocabulary=100)
    with ThreadedUvicorn(create_app(small)) as url, httpx.Client(base_url=url) as http:
        assert upload(http, with_word(99)).status_code == 201
        response = upload(http, with_word(100))
        assert response.status_code == 422
        assert response.json()["detail"].startswith("x_train has id 100 at [0, 0]; word ids")


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_tag_names_are_refused_with_the_tag_cap_and_the_name_at_fault(
    client: httpx.Client,
) -> None:
    repeated = np.array([*TAG_NAMES[:3], TAG_NAMES[1], *TAG_NAMES[4:]])
    response = upload(client, {**ARRAYS, "tag_names": repeated})
    assert response.status_code == 422
    # Before: "2 to 10000 of them", the classes' cap, while tags stop at 1,000.
    assert response.json()["detail"] == (
        "tag_names has 7 names; expected one distinct, non-empty name per tag, 2 to 1000 of "
        "them (tag_names[3] repeats tag_names[1])"
    )
    too_many = np.array([f"T{i}" for i in range(1001)])
    response = upload(client, {**ARRAYS, "tag_names": too_many})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("tag_names has 1001 names; expected one")
    assert "2 to 1000 of them" in response.json()["detail"]


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_weights_at_padding_steps_are_never_read_so_any_number_is_taken(
    client: httpx.Client,
) -> None:
    padding = ARRAYS["x_train"] == 0
    weights = np.where(ARRAYS["y_train"] == 6, 4.0, 1.0)
    weights[padding] = -1.0
    weights[0, -1], weights[1, -1] = np.nan, 1e300  # the last step is padding in every row
    assert padding[:, -1].all()
    # Before: "sample_weight has ... negative or non-finite values", for padding alone.
    dataset_id = uploaded(client, {**ARRAYS, "sample_weight": weights})
    report = client.post("/v1/jobs/validate", json=spec(dataset_id, sample_weight="from_dataset"))
    assert report.status_code == 200, report.text
    assert report.json()["class_weight"] == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 4.0]
    inline = np.where(padding, -5.0, 2.0).tolist()
    report = client.post("/v1/jobs/validate", json=spec(dataset_id, sample_weight=inline))
    assert report.status_code == 200, report.text
    assert report.json()["class_weight"] == [2.0] * 7
    assert client.post("/v1/jobs", json=spec(dataset_id, sample_weight=inline)).status_code == 202

    # At a word, a negative weight is still refused, where it is given.
    weights[0, 0] = -1.0
    response = upload(client, {**ARRAYS, "sample_weight": weights})
    assert response.status_code == 422
    assert response.json()["detail"].startswith(
        "sample_weight has 1 negative or non-finite values, the first at [0, 0]"
    )
    inline[0][0] = -1.0
    response = client.post("/v1/jobs/validate", json=spec(dataset_id, sample_weight=inline))
    assert response.status_code == 422
    assert response.json()["detail"].startswith("sample_weight[0, 0] is -1.0")
