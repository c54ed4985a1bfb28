"""The cursor of GET /v1/jobs/{id}/events (`?after=`, `Last-Event-ID`) at its edges, on a
real uvicorn and a real SQLite and Postgres: out of range is a 422 before the stream
starts, and a cursor past a job's last event still ends the stream when the job ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from counterweight.service.api.app import create_app
from counterweight.service.api.events import EventHub
from counterweight.service.settings import Settings
from tests.conftest import ThreadedUvicorn

pytestmark = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)

DIGITS: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}
INT4_MAX = 2**31 - 1  # job_events.seq is an INTEGER: Postgres's int4


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[tuple[httpx.Client, FastAPI]]:
    app = create_app(Settings(home=tmp_path, database_url=database_url))
    with ThreadedUvicorn(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield http, app


def events_path(http: httpx.Client) -> str:
    job_id = http.post("/v1/jobs", json=DIGITS).json()["id"]
    return f"/v1/jobs/{job_id}/events"


def test_a_cursor_out_of_range_is_422_naming_it_and_its_bound(
    served: tuple[httpx.Client, FastAPI],
) -> None:
    http, _ = served
    path = events_path(http)
    for after in (INT4_MAX + 1, 2**63, 2**64, 10**30):
        response = http.get(path, params={"after": after})
        assert response.status_code == 422, (after, response.text)
        assert response.json()["detail"] == (
            f"after: Input should be less than or equal to {INT4_MAX}"
        )
    for last_event_id in (INT4_MAX + 1, 2**64):
        response = http.get(path, headers={"Last-Event-ID": str(last_event_id)})
        assert response.status_code == 422, (last_event_id, response.text)
        assert response.json()["detail"] == (
            f"last-event-id: Input should be less than or equal to {INT4_MAX}"
        )
    below = http.get(path, params={"after": -1})
    assert below.json()["detail"] == "after: Input should be greater than or equal to 0"
    # The largest accepted cursor streams (the job is queued: nothing after it yet).
    with http.stream("GET", path, params={"after": INT4_MAX}) as response:
        assert response.status_code == 200


def test_the_schema_declares_the_cursor_range(served: tuple[httpx.Client, FastAPI]) -> None:
    http, _ = served
    operation = http.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/events"]["get"]
    ranges = {
        p["name"]: (p["schema"].get("minimum"), p["schema"].get("maximum"))
        for p in operation["parameters"]
        if p["name"] == "after"
    }
    header = next(p for p in operation["parameters"] if p["name"] == "last-event-id")
    (bounds,) = (s for s in header["schema"]["anyOf"] if s.get("type") == "integer")
    assert ranges == {"after": (0, INT4_MAX)}
    assert (bounds["minimum"], bounds["maximum"]) == (0, INT4_MAX)


def read_all(http: httpx.Client, path: str, **headers: str) -> str:
    with http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        return response.read().decode()


def test_a_cursor_past_the_last_event_ends_with_the_job(
    served: tuple[httpx.Client, FastAPI],
) -> None:
    http, app = served
    path = events_path(http)  # one event so far: seq 1, "queued"
    hub: EventHub = app.state.event_hub
    read: list[str] = []
    failed: list[BaseException] = []

    def follow() -> None:
        try:  # keep-alives come every 15 s: a stream that outlives the job times out at 10
            read.append(read_all(http, path, **{"Last-Event-ID": "5"}))
        except BaseException as exc:
            failed.append(exc)

    follower = threading.Thread(target=follow)
    follower.start()
    deadline = time.monotonic() + 10
    while hub.subscriber_count == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # past its replay, which found the job still queued
    assert http.post(f"{path.removesuffix('/events')}/cancel").status_code == 200
    started = time.monotonic()
    follower.join(timeout=15)
    assert not follower.is_alive() and failed == [], failed
    # Seq 2, the "cancelled" status, is at or before the cursor: not sent, but it ends.
    assert read == [""] and time.monotonic() - started < 5

    # A finished job's stream ends at once for any cursor: at its end, past it, or before.
    for cursor in ("2", "5", str(INT4_MAX)):
        started = time.monotonic()
        assert read_all(http, path, **{"Last-Event-ID": cursor}) == ""
        assert time.monotonic() - started < 2
    rest = read_all(http, path, **{"Last-Event-ID": "1"})
    assert rest.startswith("id: 2\nevent: status\n") and rest.count("id: ") == 1
