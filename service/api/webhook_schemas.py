"""Bodies of the webhook routes (/v1/webhooks, GET /v1/jobs/{id}/deliveries)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from counterweight.service.api.schemas import UtcTime
from counterweight.service.notify_spec import WebhookEvent
from counterweight.service.store.models import (
    DeliveryState,
    WebhookDelivery,
    WebhookSecret,
    WebhookSubscription,
)


class SubscriptionOut(BaseModel):
    id: str
    url: str
    events: list[WebhookEvent]
    created_at: UtcTime

    @classmethod
    def of(cls, row: WebhookSubscription) -> SubscriptionOut:
        return cls.model_validate(row, from_attributes=True)


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(
        description="Signs this subscription's deliveries (Counterweight-Signature). Shown "
        "this once: keep it."
    )


class SubscriptionPage(BaseModel):
    data: list[SubscriptionOut]
    next_cursor: None = None


class SecretCreated(BaseModel):
    secret: str = Field(
        description="Signs the deliveries of every job's own notify, from now on (the one it "
        "replaces no longer does). Shown this once: keep it."
    )
    created_at: UtcTime

    @classmethod
    def of(cls, row: WebhookSecret) -> SecretCreated:
        return cls(secret=row.secret, created_at=row.created_at)


class AttemptOut(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None = Field(description="The receiver's answer; null if none came.")
    error: str | None = Field(description="Why the attempt failed; null when it did not.")
    response: str = Field(description="The start of the receiver's answer, as text.")
    duration_ms: int


class DeliveryOut(BaseModel):
    id: str = Field(description="Also the body's id and the Counterweight-Delivery header.")
    event: WebhookEvent
    seq: int = Field(description="The event's seq in GET /v1/jobs/{id}/events.")
    target: Literal["notify", "subscription"]
    subscription_id: str | None
    url: str
    state: DeliveryState
    attempts: int
    attempt_log: list[AttemptOut] = Field(description="The newest attempts, oldest first.")
    next_attempt_at: UtcTime | None = Field(description="When it is tried next, if pending.")
    created_at: UtcTime
    finished_at: UtcTime | None
    body: dict[str, Any] = Field(description="The JSON body sent, the same at every attempt.")

    @classmethod
    def of(cls, row: WebhookDelivery) -> DeliveryOut:
        return cls(
            id=row.id,
            event=row.event,
            seq=row.seq,
            target="notify" if row.subscription_id is None else "subscription",
            subscription_id=row.subscription_id,
            url=row.url,
            state=row.state,
            attempts=row.attempts,
            attempt_log=[AttemptOut.model_validate(entry) for entry in row.attempt_log],
            next_attempt_at=row.next_attempt_at if row.state == DeliveryState.pending else None,
            created_at=row.created_at,
            finished_at=row.finished_at,
            body=json.loads(row.body),
        )


class DeliveryPage(BaseModel):
    data: list[DeliveryOut]
    next_cursor: None = None
