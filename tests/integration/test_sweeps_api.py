"""POST/GET /v1/sweeps against a real database, served by a real uvicorn, called with httpx."""

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

BASE: dict[str, Any] = {
    "dataset": {"name": "digits", "classes": [0, 1, 2]},
    "imbalance": {"profile": "step", "ratio": 10, "minority": [2]},
    "train": {"epochs": 2},
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(home=tmp_path, database_url=database_url)
    with (
        ThreadedUvicorn(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        yield http


def queued_jobs(client: httpx.Client) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = client.get("/v1/jobs", params={"limit": 500}).json()["data"]
    return jobs


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_a_sweep_queues_one_job_per_combination(client: httpx.Client) -> None:
    grid = {"imbalance.ratio": [10, 20], "train.seed": [0, 1]}
    response = client.post("/v1/sweeps", json={"base": BASE, "grid": grid})
    assert response.status_code == 202, response.text
    sweep = response.json()
    assert response.headers["location"] == f"/v1/sweeps/{sweep['id']}"
    assert sweep["status"] == "queued"
    assert sweep["progress"] | {"ended": 0, "total": 4, "queued": 4} == sweep["progress"]
    assert [row["cell"] for row in sweep["table"]] == [
        {"imbalance.ratio": 10},
        {"imbalance.ratio": 20},
    ]
    assert all(row["n"] == 0 and len(row["jobs"]) == 2 for row in sweep["table"])

    specs = {job["id"]: job["spec"] for job in queued_jobs(client)}
    assert set(specs) == set(sweep["job_ids"])
    settings = [
        (specs[i]["imbalance"]["ratio"], specs[i]["train"]["seed"]) for i in sweep["job_ids"]
    ]
    assert settings == [(10, 0), (10, 1), (20, 0), (20, 1)]
    assert all(spec["train"]["epochs"] == 2 for spec in specs.values())

    again = client.get(f"/v1/sweeps/{sweep['id']}")
    assert again.status_code == 200
    assert again.json() == sweep

    plot = client.get(f"/v1/sweeps/{sweep['id']}/plots/compare.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert plot.content.startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_one_invalid_cell_refuses_the_whole_sweep(client: httpx.Client) -> None:
    # class 5 is not in a job of 3 classes: only the data check can tell, after 3 good cells.
    grid = {"loss.type": ["cross_entropy", "focal"], "imbalance.minority": [[2], [5]]}
    response = client.post("/v1/sweeps", json={"base": BASE, "grid": grid})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith('grid cell {loss.type: "cross_entropy", imbalance.minority: [5]}: ')
    assert "minority" in detail
    assert queued_jobs(client) == []

    grid = {"imbalance.ratio": [10, 0.5]}
    response = client.post("/v1/sweeps", json={"base": BASE, "grid": grid})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("grid cell {imbalance.ratio: 0.5}: imbalance.ratio")
    assert queued_jobs(client) == []


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_bad_grids_are_422s_that_name_the_field(client: httpx.Client) -> None:
    cases = [
        ({"loss.typ": ["focal"]}, "grid.loss.typ: not a job spec field"),
        ({"loss.type": []}, "grid.loss.type: expected a non-empty list"),
        ({"train.seed": list(range(300))}, "grid: 300 combinations; at most 256"),
        ({"loss.type": "focal"}, "grid.loss.type: Input should be a valid list"),
    ]
    for grid, message in cases:
        response = client.post("/v1/sweeps", json={"base": BASE, "grid": grid})
        assert response.status_code == 422, grid
        assert response.json()["detail"].startswith(message)
    assert queued_jobs(client) == []


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_unknown_sweep_is_404(client: httpx.Client) -> None:
    assert client.get("/v1/sweeps/nope").status_code == 404
    response = client.get("/v1/sweeps/nope/plots/compare.png")
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


def upload_npz(client: httpx.Client, arrays: dict[str, Any]) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    files = {"file": ("data.npz", buffer.getvalue(), "application/octet-stream")}
    response = client.post("/v1/datasets", files=files)
    assert response.status_code == 201, response.text
    dataset_id: str = response.json()["id"]
    return dataset_id


def features(class_names: list[str], per_class: int = 10) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(len(class_names)), per_class)
    return {
        "x_train": rng.random((len(y), 4)).astype(np.float32),
        "y_train": y,
        "x_test": rng.random((len(y), 4)).astype(np.float32),
        "y_test": y,
        "class_names": np.array(class_names),
    }


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_the_chart_draws_grid_values_that_look_like_mathtext_as_written(
    client: httpx.Client,
) -> None:
    # Class names are the client's; a class_weight grid keyed by them puts them in the
    # chart's cell labels. matplotlib read "$\frac{$" as mathtext: every chart was a 500.
    names = ["$\\frac{$", "$x^2$", "plain"]
    dataset_id = upload_npz(client, features(names))
    base = {"dataset": {"name": "uploaded", "id": dataset_id}, "train": {"epochs": 1}}
    grid = {"class_weight": [{names[0]: 2.0}, {names[1]: 3.0}], "train.seed": [0, 1]}
    response = client.post("/v1/sweeps", json={"base": base, "grid": grid})
    assert response.status_code == 202, response.text
    sweep = response.json()
    assert [row["cell"] for row in sweep["table"]] == [
        {"class_weight": w} for w in grid["class_weight"]
    ]
    plot = client.get(f"/v1/sweeps/{sweep['id']}/plots/compare.png")
    assert plot.status_code == 200, plot.text
    assert plot.content.startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_sweeps_are_listed_newest_first_page_by_page(client: httpx.Client) -> None:
    made = []
    for ratio in (10, 20, 30):
        body = {"base": BASE, "grid": {"imbalance.ratio": [ratio]}, "labels": {"r": str(ratio)}}
        made.append(client.post("/v1/sweeps", json=body).json()["id"])
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/sweeps", params=params).json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [sweep["id"] for sweep in seen] == made[::-1]
    assert seen[0]["labels"] == {"r": "30"}
    assert seen[0]["status"] == "queued"
    assert seen[0]["progress"] | {"total": 1, "queued": 1} == seen[0]["progress"]


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_cancelling_a_sweep_cancels_its_jobs_that_have_not_ended(client: httpx.Client) -> None:
    sweep = client.post("/v1/sweeps", json={"base": BASE, "grid": {"train.seed": [0, 1, 2]}})
    first, *rest = sweep.json()["job_ids"]
    client.post(f"/v1/jobs/{first}/cancel")
    other = client.post("/v1/jobs", json=BASE).json()["id"]  # not the sweep's

    cancelled = client.post(f"/v1/sweeps/{sweep.json()['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["progress"]["cancelled"] == 3
    for job_id in rest:
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{other}").json()["status"] == "queued"
    again = client.post(f"/v1/sweeps/{sweep.json()['id']}/cancel")
    assert again.status_code == 409 and "has ended" in again.json()["detail"]
    assert client.post(f"/v1/sweeps/{'0' * 32}/cancel").status_code == 404
