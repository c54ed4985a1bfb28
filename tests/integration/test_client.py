"""The Python client against a real server: the real app under uvicorn for the API, and
tiny real apps for retries, event streams that drop, and servers without events."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from counterweight_client import (
    AsyncClient,
    Client,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    JobEvent,
    NotFound,
    RetryPolicy,
    WaitTimeout,
)
from tests.conftest import ThreadedUvicorn
from tests.processes import free_port

FAST = RetryPolicy(attempts=3, backoff=0.01)
SPEC: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 2}}


@pytest.fixture
def api_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings(home=tmp_path, database_url=database_url)
    with ThreadedUvicorn(create_app(settings)) as url:
        yield url


def test_submit_get_cancel_and_errors_against_the_real_app(api_url: str) -> None:
    with Client(api_url, retry=FAST) as client:
        job = client.submit(SPEC, idempotency_key="k1")
        assert job.status == "queued" and len(job.id) == 32
        assert client.submit(SPEC, idempotency_key="k1").id == job.id  # a replay, not a new job
        assert client.get(job.id).id == job.id
        with pytest.raises(Conflict) as conflict:
            client.metrics(job.id)
        assert conflict.value.status == 409 and "queued" in conflict.value.detail
        with pytest.raises(WaitTimeout):
            client.wait(job.id, timeout=0.5)
        cancelled = client.cancel(job.id)
        assert cancelled.status == "cancelled" and cancelled.done
        assert client.wait(job.id, timeout=30).status == "cancelled"  # ended: returns at once

        with pytest.raises(InvalidRequest) as invalid:
            client.submit({"dataset": {"name": "digits"}, "train": {"epochs": 0}})
        assert invalid.value.status == 422 and "train.epochs" in invalid.value.detail
        with pytest.raises(NotFound) as missing:
            client.get("0" * 32)
        assert missing.value.status == 404

        # Its logs (it never ran: no attempt), then its deletion, safe to repeat.
        assert client.logs(job.id)["attempts"] == []
        assert [e.type for e in client.follow_logs(job.id)] == ["end"]
        deleted = client.delete(job.id)
        assert deleted == {"id": job.id, "deleted": True, "status": "cancelled", "files": "removed"}
        assert client.delete(job.id) == deleted
        with pytest.raises(NotFound):
            client.get(job.id)


def test_datasets_and_upload(api_url: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        x_train=rng.random((20, 4), dtype=np.float32),
        y_train=np.arange(20) % 2,
        x_test=rng.random((10, 4), dtype=np.float32),
        y_test=np.arange(10) % 2,
    )
    with Client(api_url, retry=FAST) as client:
        uploaded = client.upload_dataset(path)
        assert uploaded["num_classes"] == 2
        ids = [row["id"] for row in client.datasets()]
        assert "digits" in ids and uploaded["id"] in ids


def test_async_client_against_the_real_app(api_url: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(api_url, retry=FAST) as client:
            job = await client.submit(SPEC)
            assert (await client.get(job.id)).status == "queued"
            assert (await client.cancel(job.id)).status == "cancelled"
            assert (await client.wait(job.id, timeout=30)).status == "cancelled"
            assert (await client.logs(job.id))["attempts"] == []
            assert [e.data async for e in client.follow_logs(job.id)] == [{"status": "cancelled"}]
            assert (await client.delete(job.id))["deleted"] is True
            with pytest.raises(InvalidRequest, match=r"train\.epochs"):
                await client.submit({"dataset": {"name": "digits"}, "train": {"epochs": 0}})
            assert any(row["id"] == "digits" for row in await client.datasets())

    asyncio.run(scenario())


def _job(status: str) -> dict[str, Any]:
    return {"id": "j1", "status": status, "attempt": 1, "max_attempts": 3, "progress": None}


def flaky_app(calls: list[Request]) -> FastAPI:
    """503 twice, then the job; a 422 with a detail; a sweep that is always 503."""
    app = FastAPI()

    @app.post("/v1/jobs")
    async def submit(request: Request) -> Response:
        calls.append(request)
        if len(calls) <= 2:
            return JSONResponse({"detail": "busy"}, status_code=503)
        return JSONResponse(_job("queued"), status_code=202)

    @app.get("/v1/jobs/{job_id}")
    async def read(job_id: str, request: Request) -> Response:
        calls.append(request)
        return JSONResponse({"detail": "train.epochs: must be at least 1"}, status_code=422)

    return app


def test_retries_503_with_one_idempotency_key_and_never_4xx() -> None:
    calls: list[Request] = []
    with ThreadedUvicorn(flaky_app(calls)) as url, Client(url, retry=FAST) as client:
        assert client.submit(SPEC).status == "queued"
        keys = {request.headers["idempotency-key"] for request in calls}
        assert len(calls) == 3 and len(keys) == 1  # the retries repeat the same key
        calls.clear()
        with pytest.raises(InvalidRequest) as error:
            client.get("j1")
        assert len(calls) == 1  # a 4xx is final
        assert error.value.status == 422
        assert error.value.detail == "train.epochs: must be at least 1"


def test_gives_up_on_a_refused_port_after_the_bounded_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, retry=FAST) as client, pytest.raises(ConnectionFailed) as error:
        client.get("j1")
    assert error.value.status is None
    assert url in error.value.detail and "after 3 attempt(s)" in error.value.detail


def _sse(seq: int, kind: str, data: dict[str, Any]) -> str:
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"


def dropping_events_app(last_event_ids: list[str | None]) -> FastAPI:
    """The first stream sends two events and drops; the next resumes after Last-Event-ID."""
    app = FastAPI()
    events = [
        (1, "status", {"status": "running"}),
        (2, "progress", {"epoch": 1, "epochs": 2, "fraction": 0.5, "metrics": {}}),
        (3, "epoch", {"epoch": 1, "train_loss": 0.5}),
        (4, "status", {"status": "succeeded"}),
    ]

    @app.get("/v1/jobs/{job_id}/events")
    async def stream(request: Request) -> StreamingResponse:
        after = request.headers.get("last-event-id")
        last_event_ids.append(after)
        start = int(after or 0)
        end = 2 if after is None else len(events)  # the first connection drops early

        async def body() -> AsyncIterator[str]:
            yield ": keep-alive\n\n"
            for seq, kind, data in events[start:end]:
                yield _sse(seq, kind, data)

        return StreamingResponse(body(), media_type="text/event-stream")

    @app.get("/v1/jobs/{job_id}")
    async def read(job_id: str) -> dict[str, Any]:
        # Still running at the drop; succeeded once all events were sent.
        return _job("succeeded" if len(last_event_ids) > 1 else "running")

    return app


def test_wait_follows_events_and_resumes_with_last_event_id() -> None:
    last_event_ids: list[str | None] = []
    seen: list[JobEvent] = []
    app = dropping_events_app(last_event_ids)
    with ThreadedUvicorn(app) as url, Client(url, retry=FAST) as client:
        job = client.wait("j1", on_progress=seen.append, timeout=30)
    assert job.status == "succeeded"
    assert [event.id for event in seen] == [1, 2, 3, 4]  # nothing lost, nothing repeated
    assert [event.type for event in seen] == ["status", "progress", "epoch", "status"]
    assert last_event_ids == [None, "2"]


def test_async_wait_resumes_too() -> None:
    last_event_ids: list[str | None] = []
    seen: list[JobEvent] = []

    async def scenario(url: str) -> str:
        async with AsyncClient(url, retry=FAST) as client:
            return (await client.wait("j1", on_progress=seen.append, timeout=30)).status

    with ThreadedUvicorn(dropping_events_app(last_event_ids)) as url:
        assert asyncio.run(scenario(url)) == "succeeded"
    assert [event.id for event in seen] == [1, 2, 3, 4] and last_event_ids == [None, "2"]


def test_wait_polls_a_server_without_events() -> None:
    reads: list[int] = []
    app = FastAPI()

    @app.get("/v1/jobs/{job_id}")
    async def read(job_id: str) -> dict[str, Any]:
        reads.append(1)
        job = _job("succeeded" if len(reads) >= 3 else "running")
        job["progress"] = {"epoch": len(reads), "epochs": 3, "fraction": len(reads) / 3}
        return job

    seen: list[JobEvent] = []
    with ThreadedUvicorn(app) as url, Client(url, retry=FAST, poll_interval=0.05) as client:
        assert client.wait("j1", on_progress=seen.append, timeout=30).status == "succeeded"
    assert [e.data["status"] for e in seen if e.type == "status"] == ["running", "succeeded"]
    assert [e.data["epoch"] for e in seen if e.type == "progress"] == [1, 2, 3]


def live_events_app(seen_first: threading.Event, held: list[bool]) -> FastAPI:
    """Sends `running`, then holds the stream open until the client has seen that event
    (at most 10 s), then ends the job. `held` records whether the client saw it live."""
    app = FastAPI()

    @app.get("/v1/jobs/{job_id}/events")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            yield _sse(1, "status", {"status": "running"})
            for _ in range(200):
                if seen_first.is_set():
                    break
                await asyncio.sleep(0.05)
            held.append(seen_first.is_set())
            yield _sse(2, "status", {"status": "succeeded"})

        return StreamingResponse(body(), media_type="text/event-stream")

    @app.get("/v1/jobs/{job_id}")
    async def read(job_id: str) -> dict[str, Any]:
        return _job("succeeded")

    return app


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_wait_hands_each_event_over_as_it_comes(kind: str) -> None:
    """A progress bar is live: the first event reaches on_progress while the stream is
    still open, not when the job has ended."""
    seen_first, held = threading.Event(), []

    def on_progress(event: JobEvent) -> None:
        if event.id == 1:
            seen_first.set()

    async def scenario(url: str) -> None:
        async with AsyncClient(url, retry=FAST) as client:
            await client.wait("j1", on_progress=on_progress, timeout=30)

    with ThreadedUvicorn(live_events_app(seen_first, held)) as url:
        if kind == "sync":
            with Client(url, retry=FAST) as client:
                client.wait("j1", on_progress=on_progress, timeout=30)
        else:
            asyncio.run(scenario(url))
    assert held == [True]


def test_wait_retries_a_refused_stream_after_its_retry_after() -> None:
    opened: list[float] = []
    app = FastAPI()

    @app.get("/v1/jobs/{job_id}/events")
    async def stream() -> Response:
        opened.append(time.monotonic())
        if len(opened) == 1:
            return JSONResponse({"detail": "busy"}, status_code=503, headers={"Retry-After": "1"})
        return StreamingResponse(
            iter([_sse(1, "status", {"status": "succeeded"})]), media_type="text/event-stream"
        )

    @app.get("/v1/jobs/{job_id}")
    async def read(job_id: str) -> dict[str, Any]:
        return _job("running" if len(opened) < 2 else "succeeded")

    with ThreadedUvicorn(app) as url, Client(url, retry=FAST) as client:
        assert client.wait("j1", timeout=30).status == "succeeded"
    assert len(opened) == 2 and opened[1] - opened[0] >= 1  # not FAST's 0.01 s backoff
