"""Input a careless client or an attacker sends: numbers that overflow float32 or never end,
loose types, NUL characters and lone surrogates, a job whose loss turns NaN. Each is a 4xx
naming what is wrong, or a job that fails with a clear error, and never a 500 or a stored
row that breaks later reads. Real app under uvicorn, real SQLite and Postgres; the diverged
job is trained by a real Worker."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from counterweight.service.store.engine import make_engine, make_session_factory, transaction
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.lease import Lease, finish, heartbeat
from counterweight.workers.worker import Worker
from tests.conftest import ThreadedUvicorn

DIGITS: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}
DIGITS_TRAIN_ROWS = 1347  # rows of digits' training split as stored
BOTH = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, database_url=database_url)


@pytest.fixture
def http(settings: Settings) -> Iterator[httpx.Client]:
    with ThreadedUvicorn(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


def spec_with(**sections: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(DIGITS))
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(name), dict):
            spec[name].update(value)
        else:
            spec[name] = value
    return spec


# (body, the field the answer must name)
OUT_OF_RANGE: list[tuple[Any, str]] = [
    (spec_with(class_weight={"0": 1e39}), "class_weight"),  # inf in float32
    ('{"dataset": {"name": "digits"}, "train": {"weight_decay": Infinity}}', "train.weight_decay"),
    ('{"dataset": {"name": "digits"}, "train": {"lr": NaN}}', "train.lr"),
    (spec_with(train={"weight_decay": 1e308}), "train.weight_decay"),
    (spec_with(train={"warmup_epochs": 10**30}), "train.warmup_epochs"),
    (spec_with(train={"epochs": 5, "warmup_epochs": 5}), "train.warmup_epochs"),
    (spec_with(train={"step_milestones": [10**9]}), "train.step_milestones"),
    (spec_with(train={"step_milestones": list(range(1, 5000))}), "train.step_milestones"),
    (spec_with(train={"early_stopping_patience": 10**9}), "train.early_stopping_patience"),
    (spec_with(train={"amp": "yes"}), "train.amp"),
    (spec_with(train={"epochs": "3"}), "train.epochs"),
    (spec_with(train={"epochs": 2.5}), "train.epochs"),
    (spec_with(loss={"type": "focal", "gamma": 1e308}), "loss.gamma"),
    (spec_with(loss={"type": "ldam", "scale": 1e308}), "loss.scale"),
    (spec_with(loss={"type": "ldam", "max_margin": 1e308}), "loss.max_margin"),
    (spec_with(loss={"type": "logit_adjusted", "tau": 1e308}), "loss.tau"),
    (spec_with(loss={"type": "focal", "alpha": [1e39] + [1.0] * 9}), "loss.alpha"),
    (spec_with(imbalance={"profile": "step", "ratio": 1e308}), "imbalance.ratio"),
    (spec_with(sample_weight=[1e39] * DIGITS_TRAIN_ROWS), "sample_weight"),
    # Each factor fits float32; their product does not.
    (
        spec_with(class_weight={"0": 1e30}, sample_weight=[1e20] * DIGITS_TRAIN_ROWS),
        "class_weight x sample_weight",
    ),
]


@pytest.mark.parametrize(("body", "field"), OUT_OF_RANGE)
def test_numbers_that_overflow_or_never_end_are_422_naming_the_field(
    http: httpx.Client, body: Any, field: str
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    for route in ("/v1/jobs/validate", "/v1/jobs"):
        response = http.post(route, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 422, (route, response.text)
        assert field in response.json()["detail"], response.text
    assert http.get("/v1/jobs").json()["data"] == []


def test_values_within_the_bounds_are_still_accepted(http: httpx.Client) -> None:
    spec = spec_with(
        class_weight={"0": 3e38},
        train={"epochs": 3, "warmup_epochs": 2, "step_milestones": [1, 2], "amp": False},
        loss={"type": "focal", "gamma": 5, "alpha": [0.5] * 10},
    )
    response = http.post("/v1/jobs/validate", json=spec)
    assert response.status_code == 200, response.text


BAD_TEXT = ["a\u0000b", "a\ud800b"]  # a NUL; a lone surrogate (valid JSON, not valid text)


def raw_post(http: httpx.Client, route: str, body: dict[str, Any]) -> httpx.Response:
    # json.dumps escapes the surrogate as \ud800, as a client's JSON encoder would.
    return http.post(route, content=json.dumps(body), headers={"content-type": "application/json"})


@BOTH
@pytest.mark.parametrize("text", BAD_TEXT)
def test_nul_and_lone_surrogates_in_a_spec_are_422(http: httpx.Client, text: str) -> None:
    cases = [
        ({"dataset": {"name": "image_folder", "path": text}}, "dataset.path"),
        ({"dataset": {"name": "uploaded", "id": text}}, "dataset.id"),
        ({"dataset": {"name": "digits"}, "class_weight": {text: 1.0}}, "class_weight"),
    ]
    for body, field in cases:
        for route in ("/v1/jobs/validate", "/v1/jobs"):
            response = raw_post(http, route, body)
            assert response.status_code == 422, (body, route, response.text)
            assert field in response.json()["detail"]
    sweep = raw_post(http, "/v1/sweeps", {"base": DIGITS, "grid": {text: [1, 2]}})
    assert sweep.status_code == 422, sweep.text
    assert http.get("/v1/jobs").json()["data"] == []


@BOTH
def test_nul_in_any_id_or_query_is_4xx(http: httpx.Client) -> None:
    job = http.post("/v1/jobs", json=DIGITS).json()["id"]
    paths = [
        "/v1/jobs/%00",
        "/v1/jobs/%00/events",
        "/v1/jobs/%00/metrics",
        "/v1/jobs/%00/model",
        "/v1/jobs/%00/model/card",
        f"/v1/jobs/{job}/plots/%00.png",
        "/v1/datasets/%00",
        "/v1/sweeps/%00",
        "/v1/sweeps/%00/plots/compare.png",
        "/v1/jobs?cursor=%00",
        "/v1/datasets?cursor=a%00b",
        f"/v1/jobs/{job}/events?after=%00",
        "/v1/jobs/%ED%A0%80",  # the UTF-8 bytes of a lone surrogate
    ]
    for path in paths:
        response = http.get(path)
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
    for method, path in (("POST", "/v1/jobs/%00/cancel"), ("POST", "/v1/jobs/%00/predict")):
        response = http.request(method, path, json={"inputs": [[0.0] * 64]})
        assert 400 <= response.status_code < 500, (path, response.text)


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def features(**extra: Any) -> bytes:
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 4), dtype=np.float32), np.arange(40) % 2
    return npz(x_train=x, y_train=y, x_test=x[:10], y_test=y[:10], **extra)


@BOTH
def test_nul_and_surrogates_in_uploads_are_refused_or_dropped(http: httpx.Client) -> None:
    for name in BAD_TEXT:
        body = features(class_names=np.array([name, "dog"]))
        response = http.post("/v1/datasets", files={"file": ("d.npz", body)})
        assert response.status_code == 422, response.text
        assert "class_names[0]" in response.json()["detail"]
    # The client's file name is shown, never used: control characters are dropped.
    # (Sent by hand: httpx would percent-encode them.)
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a\x00b\tc.npz"\r\n'
    body = head + b"Content-Type: application/octet-stream\r\n\r\n" + features() + b"\r\n--b--\r\n"
    response = http.post(
        "/v1/datasets", content=body, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == "abc.npz"
    listed = http.get("/v1/datasets").json()["data"]
    assert "abc.npz" in [d.get("filename") for d in listed]


@pytest.mark.parametrize("scale", [1e300, -1e39])
def test_inputs_that_overflow_float32_are_refused_at_upload(
    http: httpx.Client, scale: float
) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((40, 4))  # float64: finite there, infinite in float32
    x[7, 2] *= scale
    y = np.arange(40) % 2
    body = npz(x_train=x, y_train=y, x_test=x[:5] / scale, y_test=y[:5])
    response = http.post("/v1/datasets", files={"file": ("d.npz", body)})
    assert response.status_code == 422, response.text
    assert re.search(r"x_train .*too large for float32, the first in row 7", response.text)


@BOTH
def test_a_job_whose_loss_turns_nan_fails_at_once_and_reads_still_work(
    http: httpx.Client, settings: Settings
) -> None:
    # Finite in float32, but the weighted sum over a batch is not: the loss is NaN.
    spec = spec_with(class_weight={"0": 3e38}, model={"width": 16}, max_attempts=3)
    job_id = http.post("/v1/jobs", json=spec).json()["id"]
    worker = Worker(settings, device="cpu")
    try:
        assert worker.run_one()
    finally:
        worker.engine.dispose()
    job = http.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["attempt"]) == ("failed", 1), job  # not retried
    assert "training diverged" in job["error"] and "epoch 1" in job["error"]
    assert http.get("/v1/jobs").status_code == 200


@BOTH
def test_a_stored_run_with_nan_metrics_never_breaks_a_read(
    http: httpx.Client, database_url: str
) -> None:
    job_id = http.post("/v1/jobs", json=DIGITS).json()["id"]
    nan = float("nan")
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:
        job = claim(session, worker_id="w", lease_seconds=60)
        assert job is not None
        lease = Lease.of(job)
    progress = {"epoch": 1, "epochs": 1, "fraction": 1.0, "eta_seconds": float("inf")}
    progress["metrics"] = {"train_loss": nan, "val_balanced_accuracy": 0.5}
    with transaction(sessions) as session:
        heartbeat(session, lease, lease_seconds=60, progress=progress)
    result = {"final": {"balanced_accuracy": nan}, "history": [{"epoch": 1, "val_loss": nan}]}
    with transaction(sessions) as session:
        finish(session, lease, result=result)
    engine.dispose()
    read = http.get(f"/v1/jobs/{job_id}")
    assert read.status_code == 200, read.text
    assert read.json()["progress"]["metrics"]["train_loss"] is None
    assert read.json()["progress"]["eta_seconds"] is None
    assert http.get("/v1/jobs").status_code == 200
    metrics = http.get(f"/v1/jobs/{job_id}/metrics")
    assert metrics.status_code == 200 and metrics.json()["final"]["balanced_accuracy"] is None
