"""Webhooks against a real database and a real receiver: the API's subscriptions and
secrets, and the dispatcher delivering the outbox (signed, in order, retried, leased)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.api.app import create_app
from counterweight.service.settings import Settings
from counterweight.service.store.engine import transaction
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.lease import Lease, finish, heartbeat
from tests.conftest import ThreadedUvicorn
from tests.integration.test_auth import bearer, new_key
from tests.webhook_receiver import Receiver, first_arrivals

BACKENDS = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
DIGITS: dict[str, Any] = {"dataset": {"name": "digits"}, "train": {"epochs": 2}}
FAST = {
    "webhook_allowed_networks": "127.0.0.1/32",
    "webhook_backoff_seconds": 0.1,
    "webhook_poll_seconds": 0.05,
    "webhook_timeout_seconds": 2.0,
}


def settings_for(database_url: str, home: Path, **overrides: Any) -> Settings:
    return Settings(home=home, database_url=database_url, **{**FAST, **overrides})


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    app = create_app(settings_for(database_url, tmp_path))
    with ThreadedUvicorn(app) as url, httpx.Client(base_url=url) as http:
        yield http


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(fail_first=2) as running:
        yield running


def run_job(sessions: sessionmaker[Session], epochs: int = 2) -> None:
    """What a worker writes for a job: claim, one heartbeat per epoch, success."""
    with transaction(sessions) as session:
        job = claim(session, worker_id="w", lease_seconds=30)
        assert job is not None
        lease = Lease.of(job)
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch, "train_loss": 0.5, "val_loss": 0.4, "val": {"accuracy": 0.9}}
        with transaction(sessions) as session:
            progress = {"epoch": epoch, "epochs": epochs, "fraction": epoch / epochs}
            heartbeat(session, lease, lease_seconds=30, progress=progress, epochs=[row])
    with transaction(sessions) as session:
        finish(session, lease, result={"final": {"balanced_accuracy": 0.8}, "selected_epoch": 2})


@BACKENDS
def test_events_arrive_signed_in_order_after_failures(
    api: httpx.Client, receiver: Receiver, sessions: sessionmaker[Session]
) -> None:
    secret = api.post("/v1/webhooks/secret").json()["secret"]
    receiver.secrets["/notify"] = secret
    created = api.post("/v1/webhooks", json={"url": f"{receiver.url}/sub"})
    assert created.status_code == 201, created.text
    receiver.secrets["/sub"] = created.json()["secret"]
    events = ["queued", "running", "epoch", "succeeded"]
    spec = {**DIGITS, "notify": {"url": f"{receiver.url}/notify", "events": events}}
    job_id = api.post("/v1/jobs", json=spec).json()["id"]
    run_job(sessions)

    receiver.wait_for(lambda: len(receiver.accepted("/notify")) == 5)
    receiver.wait_for(lambda: len(receiver.accepted("/sub")) == 1)
    notified = [r for r in receiver.received if r.path == "/notify"]
    assert first_arrivals(notified) == [
        ("queued", 1),
        ("running", 2),
        ("epoch", 3),
        ("epoch", 5),
        ("succeeded", 7),
    ]
    assert all(r.signed for r in receiver.received), [
        (r.path, r.body["event"]) for r in receiver.received if not r.signed
    ]
    done = receiver.accepted("/notify")[-1].body
    assert done["job"] == {
        "id": job_id,
        "status": "succeeded",
        "attempt": 1,
        "error": None,
        "sweep_id": None,
    }
    assert done["metrics"]["balanced_accuracy"] == 0.8
    assert done["links"]["metrics"] == f"/v1/jobs/{job_id}/metrics"
    assert receiver.accepted("/sub")[0].body["event"] == "succeeded"

    deliveries = api.get(f"/v1/jobs/{job_id}/deliveries").json()["data"]
    assert [(d["event"], d["target"], d["state"]) for d in deliveries][:2] == [
        ("queued", "notify", "delivered"),
        ("running", "notify", "delivered"),
    ]
    first = deliveries[0]
    assert [a["status_code"] for a in first["attempt_log"]] == [500, 500, 200], receiver.received
    assert first["attempt_log"][0]["error"] == "HTTP 500"
    assert first["body"]["id"] == first["id"]


@BACKENDS
def test_subscriptions_are_managed_and_secrets_shown_once(api: httpx.Client) -> None:
    created = api.post(
        "/v1/webhooks", json={"url": "https://hooks.example.com/cw", "events": ["failed"]}
    )
    assert created.status_code == 201
    body = created.json()
    assert body["secret"].startswith("whsec_")
    listed = api.get("/v1/webhooks").json()["data"]
    assert listed == [{k: v for k, v in body.items() if k != "secret"}]
    assert api.get(f"/v1/webhooks/{body['id']}").json()["events"] == ["failed"]
    assert api.delete(f"/v1/webhooks/{body['id']}").status_code == 204
    assert api.delete(f"/v1/webhooks/{body['id']}").status_code == 404
    assert api.get("/v1/webhooks").json()["data"] == []


@BACKENDS
@pytest.mark.parametrize(
    ("notify", "field", "words"),
    [
        ({"url": "ftp://x.example/"}, "notify.url", "http:// or https://"),
        ({"url": "https://x.example/", "events": ["done"]}, "notify.events.0", "'queued'"),
        ({"url": "https://x.example/", "events": []}, "notify.events", "at least 1"),
        ({"url": "https://x.example/", "colour": "red"}, "notify.colour", "Extra inputs"),
        ({"url": "http://10.0.0.7/hook"}, None, "notify.url: 10.0.0.7 is a private address"),
        ({"url": "http://169.254.169.254/"}, None, "link-local"),
        ({"url": "http://[::1]:9/"}, None, "::1 is a loopback address"),
    ],
)
def test_a_bad_notify_is_a_422_naming_the_field(
    api: httpx.Client, notify: dict[str, Any], field: str | None, words: str
) -> None:
    api.post("/v1/webhooks/secret")
    response = api.post("/v1/jobs", json={**DIGITS, "notify": notify})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert words in detail
    if field is not None:
        assert [e["field"] for e in response.json()["errors"]] == [field]


@BACKENDS
def test_notify_needs_the_tenants_secret_first(api: httpx.Client) -> None:
    spec = {**DIGITS, "notify": {"url": "https://hooks.example.com/x"}}
    response = api.post("/v1/jobs", json=spec)
    assert response.status_code == 422
    assert "POST /v1/webhooks/secret" in response.json()["detail"]
    api.post("/v1/webhooks/secret")
    assert api.post("/v1/jobs", json=spec).status_code == 202


@BACKENDS
def test_a_sweeps_notify_goes_to_each_job(api: httpx.Client) -> None:
    api.post("/v1/webhooks/secret")
    notify = {"url": "https://hooks.example.com/x", "events": ["succeeded"]}
    sweep = api.post(
        "/v1/sweeps", json={"base": DIGITS, "grid": {"train.seed": [0, 1]}, "notify": notify}
    )
    assert sweep.status_code == 202, sweep.text
    for job_id in sweep.json()["job_ids"]:
        assert api.get(f"/v1/jobs/{job_id}").json()["spec"]["notify"] == notify
    both = {"base": {**DIGITS, "notify": notify}, "grid": {"train.seed": [0]}, "notify": notify}
    refused = api.post("/v1/sweeps", json=both)
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("notify:")


@BACKENDS
def test_webhooks_and_deliveries_are_the_tenants_own(api: httpx.Client, database_url: str) -> None:
    _, acme = new_key(database_url, "acme")
    _, other = new_key(database_url, "other")
    api.post("/v1/webhooks/secret", headers=bearer(acme))
    spec = {**DIGITS, "notify": {"url": "https://hooks.example.com/x"}}
    job_id = api.post("/v1/jobs", json=spec, headers=bearer(acme)).json()["id"]
    sub = api.post("/v1/webhooks", json={"url": "https://a.example/"}, headers=bearer(acme))
    sub_id = sub.json()["id"]

    assert api.get(f"/v1/jobs/{job_id}/deliveries", headers=bearer(acme)).status_code == 200
    assert api.get(f"/v1/jobs/{job_id}/deliveries", headers=bearer(other)).status_code == 404
    assert api.get("/v1/webhooks", headers=bearer(other)).json()["data"] == []
    assert api.get(f"/v1/webhooks/{sub_id}", headers=bearer(other)).status_code == 404
    assert api.delete(f"/v1/webhooks/{sub_id}", headers=bearer(other)).status_code == 404
    # other's jobs need other's own secret: acme's does not sign for them
    refused = api.post("/v1/jobs", json=spec, headers=bearer(other))
    assert refused.status_code == 422
    assert "tenant 'other' has no webhook secret" in refused.json()["detail"]
