"""Labels on jobs and sweeps, and GET /v1/jobs's filters (label, status, dataset, loss
type, created range) with cursor paging: real SQLite and Postgres, a real uvicorn."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from counterweight.service.store.engine import make_engine
from counterweight.service.store.models import JobLabel
from tests.conftest import ThreadedUvicorn

BACKENDS = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)


def spec(labels: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 1}, **extra}
    if labels is not None:
        body["labels"] = labels
    return body


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(home=tmp_path, database_url=database_url)
    with (
        ThreadedUvicorn(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        yield http


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def listed(client: httpx.Client, limit: int = 2, **params: Any) -> list[str]:
    """Every job id the filters select, page by page (`limit` a page)."""
    ids: list[str] = []
    cursor = None
    while True:
        query = {**params, "limit": limit} | ({"cursor": cursor} if cursor else {})
        response = client.get("/v1/jobs", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        ids += [job["id"] for job in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


@BACKENDS
def test_labels_are_returned_wherever_the_job_is(client: httpx.Client) -> None:
    labels = {"team": "fraud", "ticket": "ML-42", "run/kind": "nightly:2026"}
    job = submit(client, spec(labels))
    assert job["labels"] == labels
    assert client.get(f"/v1/jobs/{job['id']}").json()["labels"] == labels
    (row,) = client.get("/v1/jobs").json()["data"]
    assert row["labels"] == labels
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert cancelled["labels"] == labels
    assert submit(client, spec())["labels"] == {}


@BACKENDS
def test_label_filters_are_anded_and_page_with_the_cursor(
    client: httpx.Client, database_url: str
) -> None:
    fraud = [submit(client, spec({"team": "fraud", "n": str(i)}))["id"] for i in range(5)]
    nightly = submit(client, spec({"team": "fraud", "kind": "nightly"}))["id"]
    other = submit(client, spec({"team": "search", "kind": "nightly"}))["id"]
    submit(client, spec())

    newest_first = [nightly, *reversed(fraud)]
    assert listed(client, label="team:fraud") == newest_first
    assert listed(client, label=["team:fraud", "kind:nightly"]) == [nightly]
    assert listed(client, label="kind:nightly") == [other, nightly]
    assert listed(client, label="team:nobody") == []
    # A value is matched whole: a prefix is not a match.
    assert listed(client, label="team:fra") == []

    # One row per label, found through the (key, value) index.
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(JobLabel.key, JobLabel.value).where(JobLabel.job_id == other))
        assert dict(rows.all()) == {"team": "search", "kind": "nightly"}
    engine.dispose()


@BACKENDS
def test_status_dataset_loss_and_created_filters(client: httpx.Client) -> None:
    first = submit(client, spec({"k": "v"}))
    focal = submit(client, spec({"k": "v"}, loss={"type": "focal"}))
    middle = submit(client, spec({"k": "v"}, dataset={"name": "digits", "classes": [0, 1]}))
    last = submit(client, spec())
    client.post(f"/v1/jobs/{first['id']}/cancel")

    assert listed(client, status="cancelled") == [first["id"]]
    assert listed(client, status="queued", label="k:v") == [middle["id"], focal["id"]]
    assert listed(client, loss_type="focal") == [focal["id"]]
    assert listed(client, dataset="digits", loss_type="cross_entropy", label="k:v") == [
        middle["id"],
        first["id"],
    ]
    assert listed(client, dataset="cifar10") == []
    # Exclusive bounds, on the times the API answered.
    after = listed(client, created_after=focal["created_at"])
    assert after == [last["id"], middle["id"]]
    assert listed(client, created_before=middle["created_at"]) == [focal["id"], first["id"]]
    between = listed(
        client, created_after=first["created_at"], created_before=last["created_at"], limit=1
    )
    assert between == [middle["id"], focal["id"]]


@BACKENDS
def test_an_uploaded_dataset_is_filtered_by_its_id(client: httpx.Client, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=rng.random((40, 4), dtype=np.float32),
        y_train=np.arange(40) % 2,
        x_test=rng.random((10, 4), dtype=np.float32),
        y_test=np.arange(10) % 2,
    )
    upload = client.post("/v1/datasets", files={"file": ("d.npz", buffer.getvalue())})
    assert upload.status_code == 201, upload.text
    dataset_id = upload.json()["id"]
    job = submit(client, {"dataset": {"name": "uploaded", "id": dataset_id}})
    submit(client, spec())
    assert listed(client, dataset=dataset_id) == [job["id"]]


@BACKENDS
def test_bad_labels_are_a_422_naming_the_field(client: httpx.Client) -> None:
    cases = {
        "a space": "label key",
        ":colon": "label key",
        "x" * 64: "label key",
    }
    for key, expected in cases.items():
        response = client.post("/v1/jobs", json=spec({key: "v"}))
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith("labels:"), response.text
        assert expected in response.json()["detail"]
    too_long = client.post("/v1/jobs", json=spec({"k": "v" * 257}))
    assert too_long.status_code == 422 and "at most 256" in too_long.json()["detail"]
    control = client.post("/v1/jobs", json=spec({"k": "a\nb"}))
    assert control.status_code == 422 and "control character" in control.json()["detail"]
    number = client.post("/v1/jobs", json=spec({"k": 3}))
    assert number.status_code == 422 and number.json()["detail"].startswith("labels.k:")
    many = client.post("/v1/jobs", json=spec({f"k{i}": "v" for i in range(33)}))
    assert many.status_code == 422 and "at most 32" in many.json()["detail"]
    assert client.get("/v1/jobs").json()["data"] == []  # nothing was queued

    bad_filter = client.get("/v1/jobs", params={"label": "no-colon"})
    assert bad_filter.status_code == 422
    assert bad_filter.json()["detail"].startswith("label:"), bad_filter.text
    bad_time = client.get("/v1/jobs", params={"created_after": "yesterday"})
    assert bad_time.status_code == 422 and "created_after" in bad_time.json()["detail"]
    bad_loss = client.get("/v1/jobs", params={"loss_type": "hinge"})
    assert bad_loss.status_code == 422 and "loss_type" in bad_loss.json()["detail"]


@BACKENDS
def test_a_sweep_s_labels_go_on_the_sweep_and_each_job(client: httpx.Client) -> None:
    base = spec({"team": "fraud", "kind": "base"})
    body = {"base": base, "grid": {"train.seed": [0, 1]}, "labels": {"kind": "sweep"}}
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 202, response.text
    sweep = response.json()
    assert sweep["labels"] == {"kind": "sweep"}
    assert client.get(f"/v1/sweeps/{sweep['id']}").json()["labels"] == {"kind": "sweep"}
    for job_id in sweep["job_ids"]:
        assert client.get(f"/v1/jobs/{job_id}").json()["labels"] == {
            "team": "fraud",
            "kind": "sweep",
        }
    assert sorted(listed(client, label="kind:sweep")) == sorted(sweep["job_ids"])
    bad = client.post("/v1/sweeps", json={**body, "labels": {"bad key": "x"}})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("labels:"), bad.text


@BACKENDS
def test_the_same_idempotency_key_with_other_labels_is_a_conflict(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "k1"}
    first = client.post("/v1/jobs", json=spec({"a": "1"}), headers=headers)
    again = client.post("/v1/jobs", json=spec({"a": "1"}), headers=headers)
    assert again.json()["id"] == first.json()["id"]
    other = client.post("/v1/jobs", json=spec({"a": "2"}), headers=headers)
    assert other.status_code == 409


@BACKENDS
def test_the_label_filter_is_served_by_the_key_value_index(database_url: str) -> None:
    """The filter's subquery (service.store.queue.inspect.list_jobs) finds a label's jobs
    through ix_job_labels_key_value on both backends, not by reading every label."""
    engine = make_engine(database_url)
    labelled = select(JobLabel.job_id).where(JobLabel.key == "team", JobLabel.value == "fraud")
    compiled = labelled.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = " ".join(
                str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
            )
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")  # an empty table: scan is cheaper
            plan = " ".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}"))
    engine.dispose()
    assert "ix_job_labels_key_value" in plan, plan
