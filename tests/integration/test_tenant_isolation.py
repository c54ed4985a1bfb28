"""Tenants: for every /v1 route (enumerated from the app, so a new route cannot be left
out) no key is a 401; for every route that takes an id, another tenant's key gets the
same 404 as a missing id, while the owner and an admin key get past it. Listings show
only the caller's; jobs may name only the caller's uploads; idempotency keys are per
tenant. Real app under uvicorn, real SQLite and Postgres."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from counterweight.service.store.engine import (
    make_engine,
    make_session_factory,
    transaction,
    upgrade,
)
from counterweight.service.store.keys import create_key
from tests.conftest import ThreadedUvicorn

DIGITS: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}
# What each kind of path parameter is filled with: the owner's object, or a value.
ID_PARAMS = {
    "job_id": "job",
    "sweep_id": "sweep",
    "dataset_id": "dataset",
    "subscription_id": "webhook",
}
OTHER_PARAMS = {"name": "curves"}  # a plot name; the job id before it decides the 404
BODIES: dict[str, Any] = {"predict": {"inputs": [[0.0] * 64]}}


@dataclass
class World:
    http: httpx.Client
    routes: list[tuple[str, str]]  # (method, path) of every /v1 operation
    keys: dict[str, dict[str, str]]  # "alice", "bob", "admin" -> headers
    ids: dict[str, str]  # "job", "sweep", "dataset", "webhook" -> alice's


def new_webhook(http: httpx.Client, headers: dict[str, str]) -> str:
    body = {"url": "https://hooks.example.com/a"}
    webhook_id: str = http.post("/v1/webhooks", json=body, headers=headers).json()["id"]
    return webhook_id


def tiny_npz() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    x, y = rng.random((40, 4), dtype=np.float32), np.arange(40) % 2
    np.savez(buffer, x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    return buffer.getvalue()


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    upgrade(database_url)
    engine = make_engine(database_url)
    keys = {}
    with transaction(make_session_factory(engine)) as session:
        for name, tenant, admin in (
            ("alice", "a", False),
            ("bob", "b", False),
            ("admin", "ops", True),
        ):
            keys[name] = {
                "Authorization": f"Bearer {create_key(session, tenant, is_admin=admin)[1]}"
            }
    engine.dispose()
    app = create_app(Settings(home=tmp_path, database_url=database_url))
    routes = v1_routes(app)
    with ThreadedUvicorn(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        alice = keys["alice"]
        job = http.post("/v1/jobs", json=DIGITS, headers=alice).json()["id"]
        sweep_body = {"base": DIGITS, "grid": {"train.seed": [0, 1]}}
        sweep = http.post("/v1/sweeps", json=sweep_body, headers=alice).json()["id"]
        files = {"file": ("tiny.npz", tiny_npz())}
        dataset = http.post("/v1/datasets", files=files, headers=alice).json()["id"]
        ids = {"job": job, "sweep": sweep, "dataset": dataset, "webhook": new_webhook(http, alice)}
        yield World(http, routes, keys, ids)


def v1_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves under /v1, from its router as it dispatches."""
    found = set()
    for context in iter_route_contexts(app.routes):
        route, path = context.original_route, context.path
        if isinstance(route, APIRoute) and path is not None and path.startswith("/v1"):
            found |= {(method, path) for method in route.methods}
    return sorted(found)


def send(world: World, method: str, template: str, headers: dict[str, str]) -> int:
    params = re.findall(r"{(\w+)}", template)
    values = {p: world.ids[ID_PARAMS[p]] if p in ID_PARAMS else OTHER_PARAMS[p] for p in params}
    path = template.format(**values)
    body = BODIES.get(path.rsplit("/", 1)[-1], DIGITS) if method != "GET" else None
    # Streamed: the events of a queued job never end; the status line is all we need.
    with world.http.stream(method, path, json=body, headers=headers) as response:
        return response.status_code


def id_routes(world: World) -> list[tuple[str, str]]:
    found = []
    for method, path in world.routes:
        params = set(re.findall(r"{(\w+)}", path))
        unknown = params - set(ID_PARAMS) - set(OTHER_PARAMS)
        assert not unknown, f"{path}: decide how tenants see {unknown}, then add it here"
        if params & set(ID_PARAMS):
            found.append((method, path))
    return found


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_another_tenants_id_is_a_404_and_no_key_a_401_on_every_route(world: World) -> None:
    assert len(world.routes) >= 15
    for method, path in world.routes:
        assert send(world, method, path, {}) == 401, f"{method} {path} without a key"
    checked = id_routes(world)
    assert {path for _, path in checked} >= {
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/predict",
        "/v1/sweeps/{sweep_id}",
        "/v1/datasets/{dataset_id}",
    }
    # Deletions last, by their owner alone: what they delete is gone for the routes after.
    checked.sort(key=lambda route: route[0] == "DELETE")
    for method, path in checked:
        assert send(world, method, path, world.keys["bob"]) == 404, f"{method} {path}"
        for owner in ("alice",) if method == "DELETE" else ("alice", "admin"):
            status = send(world, method, path, world.keys[owner])
            assert status not in (401, 404), f"{owner}: {method} {path} -> {status}"
            if (method, path) == ("DELETE", "/v1/webhooks/{subscription_id}"):
                world.ids["webhook"] = new_webhook(world.http, world.keys["alice"])


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_listings_and_references_stay_within_the_tenant(world: World) -> None:
    http, alice, bob, admin = world.http, *(world.keys[k] for k in ("alice", "bob", "admin"))

    def job_ids(headers: dict[str, str]) -> set[str]:
        return {job["id"] for job in http.get("/v1/jobs", headers=headers).json()["data"]}

    def upload_ids(headers: dict[str, str]) -> set[str]:
        rows = http.get("/v1/datasets", headers=headers).json()["data"]
        return {row["id"] for row in rows if row["source"] == "uploaded"}

    assert world.ids["job"] in job_ids(alice) and len(job_ids(alice)) == 3  # job + 2 of sweep
    assert job_ids(bob) == set()
    assert job_ids(admin) == job_ids(alice)
    sweeps = {k: http.get("/v1/sweeps", headers=world.keys[k]).json()["data"] for k in world.keys}
    assert [sweep["id"] for sweep in sweeps["alice"]] == [world.ids["sweep"]]
    assert sweeps["bob"] == [] and sweeps["admin"] == sweeps["alice"]
    assert upload_ids(bob) == set() and upload_ids(admin) == upload_ids(alice) == {
        world.ids["dataset"]
    }

    # Bob cannot train on Alice's upload, and learns nothing beyond "no such upload".
    theirs = {"dataset": {"name": "uploaded", "id": world.ids["dataset"]}, "model": {"arch": "mlp"}}
    missing = {"dataset": {"name": "uploaded", "id": "0" * 32}, "model": {"arch": "mlp"}}
    refused = http.post("/v1/jobs", json=theirs, headers=bob)
    absent = http.post("/v1/jobs", json=missing, headers=bob)
    assert refused.status_code == absent.status_code == 422
    assert refused.json()["detail"] == absent.json()["detail"].replace(
        "0" * 32, world.ids["dataset"]
    )
    sweep = http.post("/v1/sweeps", json={"base": theirs, "grid": {"train.seed": [0]}}, headers=bob)
    assert sweep.status_code == 422 and "no uploaded dataset" in sweep.json()["detail"]
    assert http.post("/v1/jobs/validate", json=theirs, headers=bob).status_code == 422
    assert http.post("/v1/jobs", json=theirs, headers=alice).status_code == 202
    assert http.post("/v1/jobs", json=theirs, headers=admin).status_code == 202

    # The same Idempotency-Key from two tenants is two jobs, not one replayed to the other.
    key = {"Idempotency-Key": "same-key"}
    first = http.post("/v1/jobs", json=DIGITS, headers={**alice, **key})
    other = http.post("/v1/jobs", json={**DIGITS, "priority": 5}, headers={**bob, **key})
    assert (first.status_code, other.status_code) == (202, 202)
    assert first.json()["id"] != other.json()["id"]
    again = http.post("/v1/jobs", json=DIGITS, headers={**alice, **key})
    assert again.json()["id"] == first.json()["id"]
