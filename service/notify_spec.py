"""A job's (or sweep's) `notify`: where its events are POSTed (DESIGN.md section 3,
"Webhooks"). Which addresses a URL may resolve to is the operator's to say, checked at
submit and at each delivery (service.webhooks)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator

from counterweight.service.spec_types import StrictModel, plain_text

WebhookEvent = Literal["queued", "running", "succeeded", "failed", "cancelled", "epoch"]
DEFAULT_WEBHOOK_EVENTS: list[WebhookEvent] = ["succeeded", "failed", "cancelled"]
MAX_URL_LENGTH = 2048


def _webhook_url(value: str) -> str:
    """An absolute http(s) URL a receiver listens on. Which addresses it may resolve to is
    the operator's to say, checked at submit and at each delivery (service.webhooks)."""
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"{len(value)} characters; at most {MAX_URL_LENGTH}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("contains whitespace or a control character")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a port that is not a number in range)
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("expected a host, as in https://hooks.example.com/counterweight")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are refused: deliveries are signed instead")
    if parts.fragment:
        raise ValueError("a URL with a #fragment: a fragment is never sent to the server")
    return value


WebhookUrl = Annotated[str, AfterValidator(plain_text), AfterValidator(_webhook_url)]


class NotifySpec(StrictModel):
    """Where to POST this job's events (DESIGN.md section 3, "Webhooks")."""

    url: WebhookUrl = Field(description="An http(s) URL; each delivery is a signed POST.")
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS),
        min_length=1,
        description="Which events to send: queued, running (each attempt's start), "
        "succeeded, failed, cancelled, epoch (each finished epoch's validation metrics).",
    )

    @field_validator("events")
    @classmethod
    def _distinct_events(cls, value: list[WebhookEvent]) -> list[WebhookEvent]:
        if len(set(value)) != len(value):
            raise ValueError("events must be distinct")
        return value
