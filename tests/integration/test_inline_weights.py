"""Inline sample weights at scale: a sweep stores each job's spec whole, so its jobs'
inline weights together are held to one job's cap (COUNTERWEIGHT_MAX_INLINE_WEIGHTS),
and a page of GET /v1/jobs shows an inline array by its shape alone, while the job's own
GET keeps it whole. The real app under uvicorn, real SQLite and Postgres, httpx.
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
from tests.sequences import STEPS, tagging_arrays

N = 40  # training rows of the uploaded features
CAP = 100  # max_inline_weights: two jobs of N weights fit, three do not


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(home=tmp_path, database_url=database_url, max_inline_weights=CAP)
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http


def uploaded(http: httpx.Client, arrays: dict[str, Any]) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    response = http.post("/v1/datasets", files={"file": ("d.npz", buffer.getvalue(), "x/y")})
    assert response.status_code == 201, response.text
    dataset_id: str = response.json()["id"]
    return dataset_id


def features(**extra: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    y = np.arange(N) % 2
    x = rng.random((N, 3)).astype(np.float32)
    return {"x_train": x, "y_train": y, "x_test": x, "y_test": y, **extra}


def jobs_listed(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = http.get("/v1/jobs", params={"limit": 500, **params})
    assert response.status_code == 200
    data: list[dict[str, Any]] = response.json()["data"]
    return data


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_a_sweeps_jobs_hold_their_inline_weights_to_one_jobs_cap(client: httpx.Client) -> None:
    dataset_id = uploaded(client, features())
    weights = [1.0 + (i % 3) for i in range(N)]
    base = {"dataset": {"name": "uploaded", "id": dataset_id}, "sample_weight": weights}
    accepted = client.post("/v1/sweeps", json={"base": base, "grid": {"train.seed": [0, 1]}})
    assert accepted.status_code == 202, accepted.text  # 2 x 40 = 80 weights stored
    # Before: accepted, and the weights stored once per job (64 seeds of 50,000: 31 MB).
    grid = {"train.seed": [0, 1, 2]}
    refused = client.post("/v1/sweeps", json={"base": base, "grid": grid})
    assert refused.status_code == 422
    assert refused.json()["detail"] == (
        "sample_weight: the sweep's 3 jobs would store 120 inline weights between them (each "
        "job keeps its own copy), more than this service allows (100, "
        "COUNTERWEIGHT_MAX_INLINE_WEIGHTS, counted over a sweep's jobs together); put the "
        'weights in the uploaded dataset as its sample_weight array and send "from_dataset": '
        "they are then stored once"
    )
    # A grid of inline arrays counts each cell's.
    by_grid = {"sample_weight": [weights, [2.0] * N, [3.0] * N]}
    refused = client.post(
        "/v1/sweeps", json={"base": {**base, "sample_weight": None}, "grid": by_grid}
    )
    assert refused.status_code == 422
    assert "the sweep's 3 jobs would store 120 inline weights" in refused.json()["detail"]
    assert len(jobs_listed(client)) == 2
    # The way the message points to: the weights stored once, with the upload.
    with_weights = uploaded(client, features(sample_weight=np.array(weights)))
    from_dataset = {
        "dataset": {"name": "uploaded", "id": with_weights},
        "sample_weight": "from_dataset",
    }
    many = client.post(
        "/v1/sweeps", json={"base": from_dataset, "grid": {"train.seed": list(range(10))}}
    )
    assert many.status_code == 202, many.text
    assert len(jobs_listed(client)) == 12


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_listings_show_inline_weights_by_shape_and_a_jobs_own_read_in_full(
    client: httpx.Client,
) -> None:
    plain = uploaded(client, features())
    with_weights = uploaded(client, features(sample_weight=np.ones(N)))
    sentences = tagging_arrays(n_train=30, n_test=10)
    tags = uploaded(client, sentences)
    per_step = np.where(sentences["x_train"] == 0, 0.0, 2.0).tolist()
    submitted = {
        "inline": {"dataset": {"name": "uploaded", "id": plain}, "sample_weight": [0.5] * N},
        "from_dataset": {
            "dataset": {"name": "uploaded", "id": with_weights},
            "sample_weight": "from_dataset",
        },
        "none": {"dataset": {"name": "uploaded", "id": plain}},
        "per_step": {
            "task": "sequence_labeling",
            "dataset": {"name": "uploaded", "id": tags},
            "sample_weight": per_step,
        },
    }
    ids = {}
    for name, body in submitted.items():
        response = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": name})
        assert response.status_code == 202, response.text
        ids[name] = response.json()["id"]
    # A replay is still recognised (the stored spec and its fingerprint are unchanged).
    replay = client.post(
        "/v1/jobs", json=submitted["inline"], headers={"Idempotency-Key": "inline"}
    )
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == ids["inline"]

    full = {name: client.get(f"/v1/jobs/{job_id}").json()["spec"] for name, job_id in ids.items()}
    assert full["inline"]["sample_weight"] == [0.5] * N
    assert full["per_step"]["sample_weight"] == per_step
    # Before: every page carried every job's arrays.
    listed = {job["id"]: job["spec"] for job in jobs_listed(client)}
    shown = {name: listed[job_id]["sample_weight"] for name, job_id in ids.items()}
    assert shown == {
        "inline": {"shape": [N]},
        "from_dataset": "from_dataset",
        "none": None,
        "per_step": {"shape": [30, STEPS]},
    }
    for name, job_id in ids.items():  # the rest of the spec as the job's own read has it
        assert {**listed[job_id], "sample_weight": None} == {**full[name], "sample_weight": None}
    # Filters and pages read the same way.
    paged: dict[str, Any] = {}
    cursor = None
    while True:
        params = {"limit": 1, "status": "queued", **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        assert len(page["data"]) == 1
        paged |= {job["id"]: job["spec"]["sample_weight"] for job in page["data"]}
        if (cursor := page["next_cursor"]) is None:
            break
    assert paged == {job_id: shown[name] for name, job_id in ids.items()}
