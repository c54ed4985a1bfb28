"""The outbox: job events become webhook deliveries, none lost, each job's in order.

Every status and epoch event is written with `webhook_pending` set, in the transaction
that changes its job (service.store.queue.events). A dispatcher takes pending events in
id order, writes one delivery per target that asks for the event (the job's own
`notify`, the tenant's subscriptions), and clears the flag, all in one transaction: a
crash before the commit leaves the events pending, one after leaves the deliveries.

Fan-outs run one at a time. The rows are locked FOR UPDATE without SKIP LOCKED on
Postgres (a second dispatcher waits, then finds them done); SQLite's write lock does the
same. So an event's delivery never exists before those of the job's earlier events,
which is what lets the claim hold a job's later events back (service.store.webhooks.
deliveries). A job's events get ids in seq order: each is written under its job's row
lock, after the one before it committed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from counterweight.service.store.engine import dumps_json
from counterweight.service.store.models import (
    Job,
    JobEvent,
    WebhookDelivery,
    WebhookSubscription,
    new_job_id,
)

NOTIFY_TARGET = "notify"
FINAL_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "g_mean")


def subscription_target(subscription_id: str) -> str:
    return f"subscription:{subscription_id}"


def event_name(event: JobEvent) -> str | None:
    """The webhook event an outbox row is: a status (queued ... cancelled) or epoch."""
    if event.type == "epoch":
        return "epoch"
    if event.type == "status":
        status = event.data.get("status")
        return status if isinstance(status, str) else None
    return None


def fan_out(session: Session, *, limit: int, public_url: str | None) -> int:
    """Turn up to `limit` pending events into deliveries; returns how many were taken."""
    events = session.scalars(
        select(JobEvent)
        .where(JobEvent.webhook_pending)  # as the partial index's condition reads
        .order_by(JobEvent.id)
        .limit(limit)
        .with_for_update()
    ).all()
    if not events:
        return 0
    jobs = _jobs(session, events)
    subscriptions: dict[str, list[WebhookSubscription]] = defaultdict(list)
    tenants = {job.tenant for job in jobs.values()}
    for row in session.scalars(
        select(WebhookSubscription).where(WebhookSubscription.tenant.in_(tenants))
    ):
        subscriptions[row.tenant].append(row)
    for event in events:
        job = jobs[event.job_id]
        name = event_name(event)
        for target, subscription_id, url in _targets(job, name, subscriptions[job.tenant]):
            delivery_id = new_job_id()
            body = payload(delivery_id, name or "", event, job, public_url)
            session.add(
                WebhookDelivery(
                    id=delivery_id,
                    job_id=job.id,
                    event_id=event.id,
                    seq=event.seq,
                    event=name,
                    target=target,
                    subscription_id=subscription_id,
                    url=url,
                    body=dumps_json(body),
                    attempt_log=[],
                )
            )
    session.execute(
        update(JobEvent)
        .where(JobEvent.id.in_([event.id for event in events]))
        .values(webhook_pending=False)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return len(events)


@dataclass(frozen=True)
class JobFacts:
    """What a delivery's body and targets need of its job: never the whole spec, which
    may hold a million inline weights, nor a result unless the job succeeded."""

    id: str
    tenant: str
    notify: dict[str, Any] | None
    sweep_id: str | None
    attempt: int
    result: dict[str, Any] | None


def _jobs(session: Session, events: Sequence[JobEvent]) -> dict[str, JobFacts]:
    ids = {event.job_id for event in events}
    succeeded = {event.job_id for event in events if event_name(event) == "succeeded"}
    results: dict[str, dict[str, Any] | None] = {}
    if succeeded:
        query_results = select(Job.id, Job.result).where(Job.id.in_(succeeded))
        results = {job_id: result for job_id, result in session.execute(query_results)}
    query = select(
        Job.id, Job.tenant, Job.spec["notify"].label("notify"), Job.sweep_id, Job.attempt
    ).where(Job.id.in_(ids))
    return {
        row.id: JobFacts(
            row.id, row.tenant, row.notify, row.sweep_id, row.attempt, results.get(row.id)
        )
        for row in session.execute(query)
    }


def _targets(
    job: JobFacts, name: str | None, subscriptions: Sequence[WebhookSubscription]
) -> list[tuple[str, str | None, str]]:
    """(target, subscription id, url) of everyone who asked for this event of this job."""
    if name is None:
        return []
    targets: list[tuple[str, str | None, str]] = []
    notify = job.notify
    if isinstance(notify, dict) and name in notify.get("events", ()):
        targets.append((NOTIFY_TARGET, None, str(notify["url"])))
    for row in subscriptions:
        if name in row.events:
            targets.append((subscription_target(row.id), row.id, row.url))
    return targets


def payload(
    delivery_id: str, name: str, event: JobEvent, job: JobFacts, public_url: str | None
) -> dict[str, Any]:
    """The JSON body of a delivery (DESIGN.md section 3, "Webhooks")."""
    data = event.data
    base = f"{(public_url or '').rstrip('/')}/v1/jobs/{job.id}"
    links = {"job": base, "events": f"{base}/events", "deliveries": f"{base}/deliveries"}
    body: dict[str, Any] = {
        "id": delivery_id,
        "type": f"job.{name}",
        "event": name,
        "created_at": _iso(event.created_at),
        "job": {
            "id": job.id,
            "status": "running" if name == "epoch" else data.get("status"),
            "attempt": data.get("attempt", job.attempt),
            "error": data.get("error"),
            "sweep_id": job.sweep_id,
        },
        "seq": event.seq,
        "metrics": None,
    }
    if name == "epoch":
        body["epoch"] = data.get("epoch")
        body["metrics"] = {
            key: value for key, value in data.items() if key in ("train_loss", "val_loss")
        } | {"val": data.get("val")}
    elif name == "succeeded" and job.result is not None:
        final = job.result.get("final") or {}
        body["metrics"] = {key: final.get(key) for key in FINAL_METRICS} | {
            "selected_epoch": job.result.get("selected_epoch"),
            "epochs_trained": job.result.get("epochs_trained"),
        }
        links |= {
            "metrics": f"{base}/metrics",
            "model": f"{base}/model",
            "card": f"{base}/model/card",
        }
    body["links"] = links
    return body


def _iso(moment: datetime) -> str:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()
