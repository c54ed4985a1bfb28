"""The dispatcher on a real database, against a real receiver: leases between several
dispatchers, a dead one's delivery taken over, retries bounded in time, redirects and
private addresses refused, a deleted subscription's deliveries cancelled."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.settings import Settings
from counterweight.service.spec import JobSpec
from counterweight.service.store.engine import read_only, transaction
from counterweight.service.store.models import DeliveryState, WebhookDelivery
from counterweight.service.store.queue.cancel import request_cancel
from counterweight.service.store.queue.enqueue import enqueue
from counterweight.service.store.webhooks.deliveries import Outcome, claim_due, record_attempt
from counterweight.service.store.webhooks.outbox import fan_out
from counterweight.service.store.webhooks.subscriptions import (
    create_subscription,
    delete_subscription,
    set_tenant_secret,
)
from counterweight.service.webhooks.dispatcher import Dispatcher
from tests.integration.test_webhooks import BACKENDS, settings_for
from tests.webhook_receiver import Receiver, first_arrivals

SECRET = "whsec_test"


def submit(sessions: sessionmaker[Session], url: str, events: list[str] | None = None) -> str:
    notify = {"url": url, "events": events or ["queued", "cancelled"]}
    spec = JobSpec.model_validate({"dataset": {"name": "digits"}, "notify": notify})
    with transaction(sessions) as session:
        set_tenant_secret(session, "default", SECRET)
        job, _ = enqueue(session, spec)
        return job.id


def deliveries(sessions: sessionmaker[Session]) -> list[WebhookDelivery]:
    with read_only(sessions) as session:
        query = select(WebhookDelivery).order_by(WebhookDelivery.job_id, WebhookDelivery.seq)
        return list(session.scalars(query))


def drain(settings: Settings, sessions: sessionmaker[Session], timeout: float = 30) -> None:
    """Run one dispatcher's rounds until every delivery has ended."""
    dispatcher = Dispatcher(settings, sessions)
    deadline = time.monotonic() + timeout
    try:
        while not deliveries(sessions) or any(not d.state.is_final for d in deliveries(sessions)):
            assert time.monotonic() < deadline, deliveries(sessions)
            if not dispatcher.run_once():
                time.sleep(0.05)
    finally:
        dispatcher.stop()


@BACKENDS
def test_several_dispatchers_deliver_each_event_once_in_order(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with Receiver() as receiver:
        receiver.secrets["/h"] = SECRET
        jobs = [submit(sessions, f"{receiver.url}/h") for _ in range(6)]
        with transaction(sessions) as session:
            for job_id in jobs:
                request_cancel(session, job_id)
        dispatchers = [Dispatcher(settings_for(database_url, tmp_path), sessions) for _ in range(3)]
        stop = threading.Event()

        def loop(dispatcher: Dispatcher) -> None:
            while not stop.is_set():
                dispatcher.run_once()

        threads = [threading.Thread(target=loop, args=(d,)) for d in dispatchers]
        for thread in threads:
            thread.start()
        try:
            receiver.wait_for(lambda: len(receiver.accepted()) >= 12)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            for dispatcher in dispatchers:
                dispatcher.stop()
    assert len(receiver.received) == 12  # each once: no two dispatchers sent one delivery
    assert all(r.signed for r in receiver.received)
    for job_id in jobs:
        mine = [r for r in receiver.received if r.body["job"]["id"] == job_id]
        assert first_arrivals(mine) == [("queued", 1), ("cancelled", 2)]


@BACKENDS
def test_a_dead_dispatchers_delivery_is_sent_again_and_its_late_record_ignored(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with Receiver() as receiver:
        receiver.secrets["/h"] = SECRET
        submit(sessions, f"{receiver.url}/h", ["queued"])
        with transaction(sessions) as session:
            fan_out(session, limit=10, public_url=None)
            (dead,) = claim_due(session, owner="dead", lease_seconds=0.5, limit=10)
        with transaction(sessions) as session:  # leased: nobody else takes it meanwhile
            assert claim_due(session, owner="other", lease_seconds=5, limit=10) == []
        time.sleep(0.6)
        drain(settings_for(database_url, tmp_path), sessions)
        assert len(receiver.accepted()) == 1
        with transaction(sessions) as session:
            late = Outcome(status_code=500, error="HTTP 500", response="", duration_ms=1)
            kwargs = {"backoff_seconds": 1.0, "retry_seconds": 60.0}
            row = record_attempt(
                session, dead.id, owner="dead", attempt=dead.attempt, outcome=late, **kwargs
            )
            assert row is None
    (delivery,) = deliveries(sessions)
    assert (delivery.state, delivery.attempts) == (DeliveryState.delivered, 2)


@BACKENDS
def test_retries_back_off_and_give_up_after_the_retry_window(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with Receiver(fail_first=1000) as receiver:
        receiver.secrets["/h"] = SECRET
        job_id = submit(sessions, f"{receiver.url}/h")
        with transaction(sessions) as session:
            request_cancel(session, job_id)
        settings = settings_for(
            database_url, tmp_path, webhook_backoff_seconds=0.2, webhook_retry_seconds=1.0
        )
        drain(settings, sessions)
    queued, cancelled = deliveries(sessions)
    # 0.2, 0.4 s between tries; the next (0.8 s) would end past 1 s: given up, then the
    # job's next event went out (and failed the same way).
    assert (queued.state, queued.attempts) == (DeliveryState.failed, 3)
    assert [a["status_code"] for a in queued.attempt_log] == [500, 500, 500]
    assert cancelled.state == DeliveryState.failed
    first = [r for r in receiver.received if r.body["event"] == "queued"]
    assert len(first) == 3


@BACKENDS
def test_redirects_are_not_followed(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with Receiver(status=302, headers={"Location": "/elsewhere"}) as receiver:
        receiver.secrets["/h"] = SECRET
        submit(sessions, f"{receiver.url}/h", ["queued"])
        settings = settings_for(database_url, tmp_path, webhook_retry_seconds=0.1)
        drain(settings, sessions)
        assert [r.path for r in receiver.received] == ["/h"]
    (delivery,) = deliveries(sessions)
    assert delivery.state == DeliveryState.failed
    assert "redirect to /elsewhere: redirects are not followed" in delivery.attempt_log[0]["error"]


@BACKENDS
def test_a_private_address_is_refused_unless_allowed(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with Receiver() as receiver:
        receiver.secrets["/h"] = SECRET
        submit(sessions, f"{receiver.url}/h", ["queued"])
        settings = settings_for(
            database_url, tmp_path, webhook_allowed_networks="", webhook_retry_seconds=0.1
        )
        drain(settings, sessions)
        assert receiver.received == []
    (delivery,) = deliveries(sessions)
    assert delivery.state == DeliveryState.failed
    error = delivery.attempt_log[0]["error"]
    assert "127.0.0.1 is a loopback address" in error
    assert "COUNTERWEIGHT_WEBHOOK_ALLOWED_NETWORKS" in error


@BACKENDS
def test_deleting_a_subscription_cancels_what_it_owes(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with transaction(sessions) as session:
        row = create_subscription(
            session, "default", url="http://127.0.0.1:9/", events=["queued"], secret=SECRET
        )
    submit(sessions, "http://127.0.0.1:9/n", ["succeeded"])
    with transaction(sessions) as session:
        fan_out(session, limit=10, public_url=None)
        delete_subscription(session, row.id, "default")
    (delivery,) = deliveries(sessions)
    assert (delivery.state, delivery.subscription_id) == (DeliveryState.cancelled, row.id)
