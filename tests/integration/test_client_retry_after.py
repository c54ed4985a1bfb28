"""The Python client honours Retry-After on 429 and 503, within a bounded number of
tries and a bounded total wait. Against the real app under a real uvicorn, its artifact
store a real S3 server (moto) that is stopped to make the 503s, and its queue cap for the
429s. Every request the client sends is seen through a recording transport.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from counterweight_client import AsyncClient, Client, QueueFull, RetryPolicy, ServerError
from tests.conftest import ThreadedUvicorn
from tests.integration.test_immutable_files import succeeded_job
from tests.s3server import S3Server

DIGITS: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}
RETRY_AFTER = 1  # the API's COUNTERWEIGHT_STORAGE_WAIT_SECONDS, so its 503s say 1 s


class Recording(httpx.HTTPTransport):
    """The client's real transport, noting when each request was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[float] = []
        self.first_answered = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(time.monotonic())
        response = super().handle_request(request)
        self.first_answered.set()
        return response

    def gaps(self) -> list[float]:
        return [later - earlier for earlier, later in zip(self.sent, self.sent[1:], strict=False)]


class AsyncRecording(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(time.monotonic())
        return await super().handle_async_request(request)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[S3Server]:
    with S3Server(tmp_path) as server:
        yield server


@pytest.fixture
def api(store: S3Server, database_url: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings(
        home=tmp_path / "api",
        database_url=database_url,
        storage_wait_seconds=RETRY_AFTER,
        s3_connect_timeout_seconds=1,
        s3_read_timeout_seconds=2,
        s3_max_attempts=1,
        max_queued_jobs_per_tenant=1,
        **store.settings(),
    )
    with ThreadedUvicorn(create_app(settings)) as url:
        yield url


def finished_job(api: str, database_url: str, store: S3Server, home: Path) -> str:
    assert httpx.post(f"{api}/v1/jobs", json=DIGITS).status_code == 202
    return succeeded_job(database_url, store, home)


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_a_503_is_retried_after_what_retry_after_says_until_the_store_answers(
    api: str, store: S3Server, database_url: str, tmp_path: Path
) -> None:
    job_id = finished_job(api, database_url, store, tmp_path / "worker")
    store.pause()  # hung: each request waits RETRY_AFTER s, then 503 with Retry-After
    transport = Recording()
    policy = RetryPolicy(attempts=6, backoff=0.01, max_wait=30)
    resumer = threading.Thread(target=lambda: (transport.first_answered.wait(), store.resume()))
    resumer.start()
    with Client(api, retry=policy, transport=transport) as client:
        card = client.model_card(job_id)
    resumer.join()
    assert card["arch"] == "mlp"
    assert len(transport.sent) >= 2  # the first was a 503
    # Each retry waited what the server said, not the policy's 0.01 s backoff.
    assert all(gap >= RETRY_AFTER for gap in transport.gaps())


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_retries_stop_at_the_attempts_and_at_the_total_wait(
    api: str, store: S3Server, database_url: str, tmp_path: Path
) -> None:
    job_id = finished_job(api, database_url, store, tmp_path / "worker")
    store.kill()  # refused: a 503 with Retry-After at once, every time

    transport = Recording()
    with (
        Client(api, retry=RetryPolicy(attempts=3, max_wait=30), transport=transport) as client,
        pytest.raises(ServerError) as error,
    ):
        client.model_card(job_id)
    assert len(transport.sent) == 3
    assert all(gap >= RETRY_AFTER for gap in transport.gaps())
    assert (error.value.status, error.value.retry_after) == (503, RETRY_AFTER)
    assert "artifact store" in error.value.detail

    # A second wait of ~1 s would go past max_wait: the error comes after one retry.
    transport = Recording()
    bounded = RetryPolicy(attempts=10, max_wait=RETRY_AFTER * 1.5)
    with (
        Client(api, retry=bounded, transport=transport) as client,
        pytest.raises(ServerError),
    ):
        client.model_card(job_id)
    assert len(transport.sent) == 2

    async def with_async_client() -> AsyncRecording:
        recording = AsyncRecording()
        policy = RetryPolicy(attempts=2, max_wait=30)
        async with AsyncClient(api, retry=policy, transport=recording) as client:
            with pytest.raises(ServerError):
                await client.model_card(job_id)
        return recording

    sent = asyncio.run(with_async_client()).sent
    assert len(sent) == 2 and sent[1] - sent[0] >= RETRY_AFTER


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_a_full_queue_asking_for_more_than_max_wait_is_raised_at_once(api: str) -> None:
    transport = Recording()
    with Client(api, transport=transport) as client:
        client.submit(DIGITS)
        transport.sent.clear()
        with pytest.raises(QueueFull) as error:
            client.submit(DIGITS)
    assert len(transport.sent) == 1  # Retry-After 30 s is more than the default max_wait
    assert error.value.status == 429 and error.value.retry_after == 30
    assert "at most 1" in error.value.detail
