"""GET /v1/jobs/{id}/events against a real uvicorn (and, for training, a real worker)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event

from counterweight.service.api.app import create_app
from counterweight.service.api.events import EventHub
from counterweight.service.settings import Settings
from tests.conftest import ThreadedUvicorn
from tests.processes import Service

TINY_DIGITS: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"arch": "mlp", "width": 32},
    "train": {"epochs": 3, "seed": 1},
}
Event = tuple[int, str, dict[str, Any]]  # (seq, type, data)


def parse(lines: Iterator[str]) -> Iterator[Event | None]:
    """Server-sent events from lines; None for a comment (keep-alive)."""
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            yield None
        elif line:
            name, _, value = line.partition(": ")
            fields[name] = value
        elif fields:
            yield int(fields["id"]), fields["event"], json.loads(fields["data"])
            fields = {}


def read_stream(http: httpx.Client, job_id: str, **headers: str) -> list[Event]:
    """Everything the stream sends, until the server ends it."""
    with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [e for e in parse(response.iter_lines()) if e is not None]


# Postgres: there ids are handed out at insert, not at commit, which the poller must
# survive (tests/integration/test_job_events.py covers both backends at the queue).
@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)
def test_a_subscriber_sees_every_epoch_and_the_end_and_a_reconnect_misses_nothing(
    service: Service,
) -> None:
    job_id = service.submit(TINY_DIGITS)
    seen: list[Event] = []
    # Subscribed while the job is still queued: everything after arrives live.
    subscriber = threading.Thread(target=lambda: seen.extend(read_stream(service.http, job_id)))
    subscriber.start()
    service.start_worker()
    subscriber.join(timeout=120)
    assert not subscriber.is_alive(), "the stream did not end with the job"

    assert [seq for seq, _, _ in seen] == list(range(1, len(seen) + 1))
    statuses = [data["status"] for _, kind, data in seen if kind == "status"]
    assert statuses == ["queued", "running", "succeeded"], seen
    assert seen[-1][1:] == ("status", {"status": "succeeded", "attempt": 1, "error": None})
    epochs = [data for _, kind, data in seen if kind == "epoch"]
    assert [row["epoch"] for row in epochs] == [1, 2, 3]
    assert all(0 <= row["val"]["balanced_accuracy"] <= 1 for row in epochs)
    assert all(row["val_loss"] > 0 for row in epochs)
    # The stream's epochs are the job's history, as its metrics report it.
    metrics = service.http.get(f"/v1/jobs/{job_id}/metrics").json()
    assert epochs == metrics["history"]

    # A client that dropped in the middle resumes with exactly the rest, and a
    # finished job's stream replays and ends.
    middle = seen[len(seen) // 2][0]
    assert read_stream(service.http, job_id, **{"Last-Event-ID": str(middle)}) == seen[middle:]
    assert read_stream(service.http, job_id) == seen
    after_all = service.http.get(f"/v1/jobs/{job_id}/events", params={"after": len(seen)})
    assert (after_all.status_code, after_all.text) == (200, "")

    assert service.http.get("/v1/jobs/nope/events").status_code == 404
    bad = service.http.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 422 and "last-event-id" in bad.json()["detail"]


def count_statements(engine: Engine) -> list[int]:
    counter = [0]

    def count(*_: object) -> None:
        counter[0] += 1

    event.listen(engine, "before_cursor_execute", count)
    return counter


async def subscribe(
    stack: AsyncExitStack, client: httpx.AsyncClient, job_id: str
) -> AsyncIterator[str]:
    """Open a stream and wait for its first event (the replayed "queued")."""
    response = await stack.enter_async_context(client.stream("GET", f"/v1/jobs/{job_id}/events"))
    lines = response.aiter_lines()
    assert await anext(lines) == "id: 1"
    return lines


async def statements_while_idle(counter: list[int], seconds: float) -> int:
    before = counter[0]
    await asyncio.sleep(seconds)
    return counter[0] - before


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_a_hundred_idle_subscribers_cost_the_database_what_one_does(
    database_url: str, tmp_path: Path
) -> None:
    app = create_app(Settings(home=tmp_path, database_url=database_url))
    counter = count_statements(app.state.sessions.kw["bind"])

    async def scenario(url: str) -> tuple[int, int, EventHub]:
        hub: EventHub = app.state.event_hub
        limits = httpx.Limits(max_connections=None)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            submitted = await client.post("/v1/jobs", json=TINY_DIGITS)  # no worker: stays queued
            job_id = submitted.json()["id"]
            async with AsyncExitStack() as stack:
                # Kept referenced: a collected line iterator would close its stream.
                streams = [await subscribe(stack, client, job_id)]
                one = await statements_while_idle(counter, 2.0)
                streams += await asyncio.gather(
                    *(subscribe(stack, client, job_id) for _ in range(99))
                )
                assert hub.subscriber_count == 100
                hundred = await statements_while_idle(counter, 2.0)
                assert len(streams) == hub.subscriber_count == 100
            # Clients that hang up leave no queue behind.
            deadline = time.monotonic() + 10
            while hub.subscriber_count and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert hub.subscriber_count == 0
        return one, hundred, hub

    with ThreadedUvicorn(app) as url:
        one, hundred, hub = asyncio.run(scenario(url))
    # About 8 polls in 2 s, each a few statements, whatever the number of subscribers.
    assert 0 < one <= 60 and hundred <= one * 1.5 + 5, (one, hundred)
    assert hub.polls > 0
