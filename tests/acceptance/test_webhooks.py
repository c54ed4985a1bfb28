"""Webhooks with real processes: the API (which delivers) and a worker, and a receiver on
127.0.0.1 that checks signatures and fails the first deliveries. Every event arrives at
least once, in order, signed; also when the API is SIGKILLed with a delivery in flight,
and when the worker is SIGKILLed mid-job."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import SHORT_LEASES, SLOW_DIGITS
from tests.processes import Service
from tests.webhook_receiver import Receiver, first_arrivals

BACKENDS = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
EVENTS = ["queued", "running", "epoch", "succeeded", "failed", "cancelled"]
QUICK: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 2}}


@pytest.fixture
def webhook_service(database_url: str, tmp_path: Path) -> Iterator[Service]:
    running = Service(
        tmp_path,
        database_url,
        **SHORT_LEASES,
        webhook_allowed_networks="127.0.0.1/32",
        webhook_backoff_seconds="0.2",
        webhook_poll_seconds="0.1",
        webhook_timeout_seconds="1",  # a lease of 2 x 1 + 5 s: a dead API's delivery waits 7 s
    )
    try:
        running.start_api()
        yield running
    finally:
        running.stop()


def subscribe(service: Service, receiver: Receiver) -> dict[str, Any]:
    """The tenant's notify secret, known to the receiver; the job spec's notify."""
    receiver.secrets["/hook"] = service.http.post("/v1/webhooks/secret").json()["secret"]
    return {"url": f"{receiver.url}/hook", "events": EVENTS}


def expected_events(service: Service, job_id: str) -> list[tuple[str, int]]:
    """(event, seq) of every status and epoch event the job has, from its event stream."""
    stream = service.http.get(f"/v1/jobs/{job_id}/events").text
    events = []
    for block in stream.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") == "epoch":
            events.append(("epoch", int(lines["id"])))
        elif lines.get("event") == "status":
            status = lines["data"].split('"status": "')[1].split('"')[0]
            events.append((status, int(lines["id"])))
    return events


def wait_for_all(service: Service, receiver: Receiver, job_id: str) -> list[tuple[str, int]]:
    expected = expected_events(service, job_id)
    receiver.wait_for(lambda: len({r.delivery_id for r in receiver.accepted()}) >= len(expected))
    return expected


@BACKENDS
def test_every_event_arrives_signed_in_order_despite_failures(
    webhook_service: Service,
) -> None:
    with Receiver(fail_first=3) as receiver:
        webhook_service.start_worker()
        job_id = webhook_service.submit({**QUICK, "notify": subscribe(webhook_service, receiver)})
        webhook_service.wait_until_ended(job_id)
        expected = wait_for_all(webhook_service, receiver, job_id)
    assert expected[0] == ("queued", 1) and expected[-1][0] == "succeeded"
    assert [event for event, _ in expected].count("epoch") == 2
    assert first_arrivals(receiver.received) == expected
    assert [r.answered for r in receiver.received[:4]] == [500, 500, 500, 200]
    assert all(r.signed for r in receiver.received)
    done = receiver.accepted()[-1].body
    assert done["job"]["id"] == job_id and done["metrics"]["balanced_accuracy"] > 0
    deliveries = webhook_service.http.get(f"/v1/jobs/{job_id}/deliveries").json()["data"]
    assert {d["state"] for d in deliveries} == {"delivered"}
    assert [a["status_code"] for a in deliveries[0]["attempt_log"]] == [500, 500, 500, 200]


@BACKENDS
def test_events_arrive_after_the_api_is_killed_mid_delivery(webhook_service: Service) -> None:
    with Receiver() as receiver:
        receiver.hold_next()  # the first delivery is in flight when the API dies
        notify = subscribe(webhook_service, receiver)
        webhook_service.start_worker()
        job_id = webhook_service.submit({**QUICK, "notify": notify})
        assert receiver.holding.wait(30), webhook_service.logs()
        api = webhook_service.processes[0]
        api.send_signal(signal.SIGKILL)
        api.wait()
        receiver.release()
        webhook_service.start_api()
        webhook_service.wait_until_ended(job_id)
        expected = wait_for_all(webhook_service, receiver, job_id)
    assert first_arrivals(receiver.received) == expected
    assert all(r.signed for r in receiver.received)


@BACKENDS
def test_events_arrive_when_the_worker_is_killed_mid_job(webhook_service: Service) -> None:
    with Receiver(fail_first=1) as receiver:
        first = webhook_service.start_worker()
        spec = {**SLOW_DIGITS, "train": {**SLOW_DIGITS["train"], "epochs": 2}}
        job_id = webhook_service.submit({**spec, "notify": subscribe(webhook_service, receiver)})
        webhook_service.wait_for(job_id, lambda job: (job["progress"] or {}).get("epoch", 0) >= 1)
        first.send_signal(signal.SIGKILL)
        first.wait()
        webhook_service.start_worker()
        job = webhook_service.wait_until_ended(job_id)
        expected = wait_for_all(webhook_service, receiver, job_id)
    assert job["attempt"] == 2
    statuses = [event for event, _ in expected if event != "epoch"]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"]
    assert first_arrivals(receiver.received) == expected
    assert all(r.signed for r in receiver.received)
