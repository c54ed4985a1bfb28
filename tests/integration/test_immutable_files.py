"""A succeeded job's model, card and plots are immutable: a strong ETag, the same on every
API host, `Cache-Control: ... immutable` with a max-age, and a 304 for If-None-Match that
asks nothing of the artifact store. A job that has not succeeded serves no file, so no
cache header either. Two real apps (two API hosts) under real uvicorns, a real S3 server
(moto), real SQLite and Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.artifacts import CARD, MODEL, job_dir, job_key, plot_name
from counterweight.service.settings import Settings
from counterweight.service.storage import storage_for
from counterweight.service.store.engine import make_engine, make_session_factory, transaction
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.lease import Lease, finish
from counterweight.workers.training.checkpoint import save_model
from counterweight.workers.training.models import build_model
from tests.conftest import ThreadedUvicorn
from tests.s3server import S3Server

DIGITS: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}
PNG = b"\x89PNG\r\n\x1a\n not a real image, served as stored"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[S3Server]:
    with S3Server(tmp_path) as server:
        yield server


def host(store: S3Server, database_url: str, home: Path) -> ThreadedUvicorn:
    settings = Settings(home=home, database_url=database_url, **store.settings())
    return ThreadedUvicorn(create_app(settings))


def succeeded_job(database_url: str, store: S3Server, home: Path) -> str:
    """The queued job, succeeded as a worker on host `home` leaves it: model, card and
    the `curves` plot in the store, listed in its metrics."""
    worker = Settings(home=home, database_url=database_url, **store.settings())
    storage = storage_for(worker)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    try:
        with transaction(sessions) as session:
            job = claim(session, worker_id="w", lease_seconds=60)
            assert job is not None
            lease = Lease.of(job)
        workdir = job_dir(worker.artifacts_dir, lease.job_id)
        (workdir / "plots").mkdir(parents=True)
        card = {"arch": "mlp", "model_kwargs": {"input_shape": [1, 4, 4], "num_classes": 3}}
        save_model(workdir, build_model("mlp", (1, 4, 4), 3, width=8).state_dict(), card)
        (workdir / plot_name("curves")).write_bytes(PNG)
        for name in (MODEL, CARD, plot_name("curves")):
            storage.upload(job_key(lease.job_id, name), workdir / name)
        with transaction(sessions) as session:
            finish(session, lease, result={"final": {}, "history": [], "plots": ["curves"]})
    finally:
        engine.dispose()
    return lease.job_id


def claimed(database_url: str) -> None:
    engine = make_engine(database_url)
    with transaction(make_session_factory(engine)) as session:
        assert claim(session, worker_id="w2", lease_seconds=60) is not None
    engine.dispose()


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_a_succeeded_jobs_files_are_immutable_and_revalidate_with_a_304(
    store: S3Server, database_url: str, tmp_path: Path
) -> None:
    with (
        host(store, database_url, tmp_path / "api-1") as first,
        host(store, database_url, tmp_path / "api-2") as second,
        httpx.Client(base_url=first) as http,
        httpx.Client(base_url=second) as other_host,
    ):
        assert http.post("/v1/jobs", json=DIGITS).status_code == 202
        job_id = succeeded_job(database_url, store, tmp_path / "worker")
        running = http.post("/v1/jobs", json=DIGITS).json()["id"]
        claimed(database_url)
        assert http.get(f"/v1/jobs/{running}").json()["status"] == "running"
        files = {
            f"/v1/jobs/{job_id}/model": None,
            f"/v1/jobs/{job_id}/model/card": None,
            f"/v1/jobs/{job_id}/plots/curves.png": PNG,
        }
        tags = {}
        for path, body in files.items():
            served = http.get(path)
            assert served.status_code == 200, served.text
            if body is not None:
                assert served.content == body
            tag = served.headers["etag"]
            assert tag.startswith('"') and not tag.startswith("W/")
            cache = {part.strip() for part in served.headers["cache-control"].split(",")}
            assert {"immutable", "private"} <= cache
            assert any(part.startswith("max-age=") and int(part[8:]) > 0 for part in cache)
            tags[path] = tag

            again = http.get(path, headers={"If-None-Match": tag})
            assert (again.status_code, again.content) == (304, b"")
            assert again.headers["etag"] == tag and "immutable" in again.headers["cache-control"]
            listed = http.get(path, headers={"If-None-Match": f'"other", W/{tag}'})
            assert listed.status_code == 304  # a list, a weak form: GET compares weakly
            stale = http.get(path, headers={"If-None-Match": '"other"'})
            assert stale.status_code == 200 and stale.headers["etag"] == tag
        assert len(set(tags.values())) == len(tags)

        # Another API host gives the same tags, and revalidates without the store: it
        # has no copy of the files, and the store is gone.
        store.kill()
        for path, tag in tags.items():
            assert other_host.get(path, headers={"If-None-Match": tag}).status_code == 304
        unavailable = other_host.get(f"/v1/jobs/{job_id}/model")  # no copy there
        assert unavailable.status_code == 503
        assert unavailable.headers["content-type"] == "application/problem+json"
        assert int(unavailable.headers["retry-after"]) >= 1
        assert unavailable.json()["type"] == "urn:counterweight:problem:storage-error"
        assert "etag" not in unavailable.headers

        # A job that has not succeeded serves no file, and says nothing about caching.
        for path in (f"/v1/jobs/{running}/model", f"/v1/jobs/{running}/model/card"):
            refused = http.get(path, headers={"If-None-Match": "*"})
            assert refused.status_code == 409, refused.text
            assert "etag" not in refused.headers and "cache-control" not in refused.headers
