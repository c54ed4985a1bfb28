"""The API while its artifact store hangs (the S3 server stopped with SIGSTOP: connections
accepted, never answered) or refuses (the server killed), against moto's real server.

What needs the store gets a quick 503 with Retry-After and no word of where the store
is; nothing else waits for it: health, readiness, job status, /metrics, validate, and
predict on a model already loaded. A job is admitted only on an upload the store holds.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.artifacts import CARD, MODEL, job_dir, job_key
from counterweight.service.settings import Settings
from counterweight.service.storage import storage_for
from counterweight.service.store.engine import make_engine, make_session_factory, transaction
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.lease import Lease, finish
from counterweight.workers.training.checkpoint import save_model
from counterweight.workers.training.models import build_model
from tests.conftest import ThreadedUvicorn
from tests.s3server import BUCKET, S3Server

DIGITS: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}
# Short bounds, so that a hung store costs seconds here, as the defaults make it cost
# tens of seconds in production.
MAX_CALLS = 4
WAIT_SECONDS = 2.0
BOUNDS: dict[str, Any] = {
    "s3_connect_timeout_seconds": 1,
    "s3_read_timeout_seconds": 2,
    "s3_max_attempts": 2,
    "storage_max_calls": MAX_CALLS,
    "storage_wait_seconds": WAIT_SECONDS,
}
UNAFFECTED_SECONDS = 1.0  # what a request that needs no store may take while it hangs
# A 503 that waited for the store: the wait, plus room for a loaded test machine (45
# requests at once, from this process to a server in this process, on 2 shared cores).
SLOW_503_SECONDS = WAIT_SECONDS + 3
INPUT = np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 4, 4).tolist()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[S3Server]:
    with S3Server(tmp_path) as server:
        yield server


@pytest.fixture
def api(store: S3Server, database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(
        home=tmp_path / "api", database_url=database_url, **{**store.settings(), **BOUNDS}
    )
    # One client for all the test's threads, with a connection for each request at once.
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    with (
        ThreadedUvicorn(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=30, limits=limits) as http,
    ):
        yield http


def succeeded_jobs(
    http: httpx.Client, store: S3Server, database_url: str, home: Path, count: int
) -> list[str]:
    """`count` jobs, succeeded as a worker on host `home` would leave them: a small model
    and its card in the store, nothing of them in the API's home."""
    for _ in range(count):
        assert http.post("/v1/jobs", json=DIGITS).status_code == 202
    worker = Settings(home=home, database_url=database_url, **store.settings())
    storage = storage_for(worker)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    ids = []
    try:
        for _ in range(count):
            with transaction(sessions) as session:
                job = claim(session, worker_id="w", lease_seconds=60)
                assert job is not None
                lease = Lease.of(job)
            model = build_model("mlp", (1, 4, 4), 3, width=8)
            card = {
                "arch": "mlp",
                "model_kwargs": {"input_shape": [1, 4, 4], "num_classes": 3, "width": 8},
                "input_shape": [1, 4, 4],
                "class_names": ["a", "b", "c"],
            }
            workdir = job_dir(worker.artifacts_dir, lease.job_id)
            workdir.mkdir(parents=True)
            save_model(workdir, model.state_dict(), card)
            for name in (MODEL, CARD):
                storage.upload(job_key(lease.job_id, name), home / job_key(lease.job_id, name))
            with transaction(sessions) as session:
                finish(session, lease, result={"final": {}, "history": [], "plots": []})
            ids.append(lease.job_id)
    finally:
        engine.dispose()
    return ids


def timed(
    http: httpx.Client, method: str, path: str, **kwargs: Any
) -> tuple[httpx.Response, float]:
    """A request, and how long its answer took."""
    started = time.monotonic()
    response = http.request(method, path, **kwargs)
    return response, time.monotonic() - started


def assert_discreet_503(response: httpx.Response, store: S3Server) -> None:
    """A 503 saying when to retry, and nothing of where the store is."""
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert BUCKET not in response.text
    assert store.url not in response.text


def test_a_hung_store_costs_store_requests_a_quick_503_and_nothing_else(
    api: httpx.Client, store: S3Server, database_url: str, tmp_path: Path
) -> None:
    # More requests for uncached cards than the API has threads (40).
    jobs = succeeded_jobs(api, store, database_url, tmp_path / "worker", 45)
    assert api.post("/v1/jobs/validate", json=DIGITS).status_code == 200  # digits decoded once
    store.pause()
    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            cards = [pool.submit(timed, api, "GET", f"/v1/jobs/{j}/model/card") for j in jobs]
            time.sleep(0.5)  # every card request is in; MAX_CALLS wait for the store
            for method, path, body in [
                ("GET", "/healthz", None),
                ("GET", "/readyz", None),
                ("GET", f"/v1/jobs/{jobs[0]}", None),
                ("GET", "/metrics", None),
                ("POST", "/v1/jobs/validate", DIGITS),
            ]:
                response, seconds = timed(api, method, path, json=body)
                print(f"{method} {path}: {response.status_code} in {seconds:.3f} s")
                assert response.status_code == 200, (path, response.text)
                assert seconds < UNAFFECTED_SECONDS, (path, seconds)
            # The bound is full: a request for another file of the store is refused at once.
            model, seconds = timed(api, "GET", f"/v1/jobs/{jobs[0]}/model")
            assert_discreet_503(model, store)
            assert seconds < UNAFFECTED_SECONDS
            answers = [card.result() for card in cards]
    finally:
        store.resume()

    for response, _ in answers:
        assert_discreet_503(response, store)
    # MAX_CALLS requests waited for the store, the others were refused without waiting.
    waited = [s for r, s in answers if f"no answer within {WAIT_SECONDS:g} s" in r.text]
    refused = [s for r, s in answers if "COUNTERWEIGHT_STORAGE_MAX_CALLS" in r.text]
    print(f"waited {sorted(waited)}\nrefused {sorted(refused)}")
    assert len(waited) == MAX_CALLS and len(refused) == len(jobs) - MAX_CALLS
    assert min(waited) >= WAIT_SECONDS and max(waited) < SLOW_503_SECONDS
    assert max(refused) < WAIT_SECONDS


def test_predict_on_a_loaded_model_answers_while_another_model_waits_for_a_hung_store(
    api: httpx.Client, store: S3Server, database_url: str, tmp_path: Path
) -> None:
    loaded, uncached = succeeded_jobs(api, store, database_url, tmp_path / "worker", 2)
    body = {"inputs": [INPUT]}
    first = api.post(f"/v1/jobs/{loaded}/predict", json=body)
    assert first.status_code == 200, first.text
    store.pause()
    try:
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(timed, api, "POST", f"/v1/jobs/{uncached}/predict", json=body)
            time.sleep(0.5)  # its model's load is waiting for the store
            again, seconds = timed(api, "POST", f"/v1/jobs/{loaded}/predict", json=body)
            assert again.status_code == 200, again.text
            assert again.json() == first.json()
            assert seconds < UNAFFECTED_SECONDS
            refused, waited = waiting.result()
    finally:
        store.resume()
    assert_discreet_503(refused, store)
    assert waited < SLOW_503_SECONDS
    # Back up, the model loads: a failed load is not remembered. (A fetch from the hung
    # time may still be ending: a client retries a 503 with Retry-After.)
    deadline = time.monotonic() + 10
    while (later := api.post(f"/v1/jobs/{uncached}/predict", json=body)).status_code == 503:
        assert time.monotonic() < deadline, later.text
        time.sleep(0.5)
    assert later.status_code == 200, later.text


def test_a_store_that_refuses_is_a_503_that_does_not_say_where_the_store_is(
    api: httpx.Client, store: S3Server, database_url: str, tmp_path: Path
) -> None:
    (job,) = succeeded_jobs(api, store, database_url, tmp_path / "worker", 1)
    store.kill()
    for path in (f"/v1/jobs/{job}/model/card", f"/v1/jobs/{job}/model"):
        response = api.get(path)
        assert_discreet_503(response, store)
        assert "the store is unavailable" in response.json()["detail"]
    predict = api.post(f"/v1/jobs/{job}/predict", json={"inputs": [INPUT]})
    assert_discreet_503(predict, store)
    upload = api.post("/v1/datasets", files={"file": ("d.npz", features_npz())})
    assert_discreet_503(upload, store)


def features_npz() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=rng.random((60, 4), dtype=np.float32),
        y_train=np.arange(60) % 3,
        x_test=rng.random((30, 4), dtype=np.float32),
        y_test=np.arange(30) % 3,
    )
    return buffer.getvalue()


def upload_spec(dataset_id: str) -> dict[str, Any]:
    return {"dataset": {"name": "uploaded", "id": dataset_id}, "train": {"epochs": 1}}


def test_a_job_on_an_upload_the_store_no_longer_holds_is_refused(
    api: httpx.Client, store: S3Server
) -> None:
    uploaded = api.post("/v1/datasets", files={"file": ("d.npz", features_npz())})
    assert uploaded.status_code == 201, uploaded.text
    dataset_id = uploaded.json()["id"]
    assert api.post("/v1/jobs/validate", json=upload_spec(dataset_id)).status_code == 200
    # The API's home keeps its copy; the store, where workers fetch it, has lost it.
    store.client().delete_object(Bucket=BUCKET, Key=f"cw/datasets/{dataset_id}.npz")
    sweep = {"base": upload_spec(dataset_id), "grid": {"train.seed": [1, 2]}}
    for path, body in [
        ("/v1/jobs", upload_spec(dataset_id)),
        ("/v1/jobs/validate", upload_spec(dataset_id)),
        ("/v1/sweeps", sweep),
    ]:
        refused = api.post(path, json=body)
        assert refused.status_code == 422, (path, refused.text)
        # A sweep's refusal starts with the grid cell: "train.seed=1: dataset.id: ..."
        assert "dataset.id: " in refused.json()["detail"]
        assert "gone from the artifact store" in refused.json()["detail"]
    assert api.get("/v1/jobs").json()["data"] == []


def test_no_job_on_an_upload_is_admitted_while_the_store_hangs_and_built_ins_are(
    api: httpx.Client, store: S3Server
) -> None:
    uploaded = api.post("/v1/datasets", files={"file": ("d.npz", features_npz())})
    assert uploaded.status_code == 201, uploaded.text
    store.pause()
    try:
        refused, seconds = timed(api, "POST", "/v1/jobs", json=upload_spec(uploaded.json()["id"]))
        accepted, accepted_seconds = timed(api, "POST", "/v1/jobs", json=DIGITS)
    finally:
        store.resume()
    assert_discreet_503(refused, store)
    assert refused.json()["detail"].startswith("dataset.id: ")
    assert seconds < SLOW_503_SECONDS
    assert accepted.status_code == 202, accepted.text
    assert accepted_seconds < UNAFFECTED_SECONDS + 2  # digits is decoded on first use
    assert [job["spec"]["dataset"]["name"] for job in api.get("/v1/jobs").json()["data"]] == [
        "digits"
    ]


def test_an_api_host_without_an_upload_fetches_it_from_the_store_to_admit_a_job(
    store: S3Server, database_url: str, tmp_path: Path
) -> None:
    hosts = [
        Settings(home=tmp_path / name, database_url=database_url, **{**store.settings(), **BOUNDS})
        for name in ("a", "b")
    ]
    with (
        ThreadedUvicorn(create_app(hosts[0])) as url_a,
        ThreadedUvicorn(create_app(hosts[1])) as url_b,
    ):
        uploaded = httpx.post(f"{url_a}/v1/datasets", files={"file": ("d.npz", features_npz())})
        assert uploaded.status_code == 201, uploaded.text
        dataset_id = uploaded.json()["id"]
        submitted = httpx.post(f"{url_b}/v1/jobs", json=upload_spec(dataset_id))
        assert submitted.status_code == 202, submitted.text
        assert (tmp_path / "b" / "datasets" / f"{dataset_id}.npz").is_file()
