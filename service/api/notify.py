"""What a webhook must pass before it is accepted: a job's `notify` (at submit and
validate, each job of a sweep) and a subscription (POST /v1/webhooks)."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.errors import WebhookAddressRefused, WebhookError
from counterweight.service.notify_spec import NotifySpec
from counterweight.service.settings import Settings
from counterweight.service.store.engine import read_only
from counterweight.service.store.webhooks.subscriptions import tenant_secret
from counterweight.service.webhooks.addresses import check_literal


def check_url(field: str, url: str, settings: Settings) -> None:
    """A host that is an address (or localhost) outside what deliveries may reach is
    refused now; a name is checked at each delivery, once resolved."""
    try:
        check_literal(urlsplit(url).hostname or "", settings.webhook_networks)
    except WebhookAddressRefused as exc:
        raise WebhookAddressRefused(f"{field}: {exc}") from exc


def check_notify(
    notify: NotifySpec, settings: Settings, sessions: sessionmaker[Session], tenant: str
) -> None:
    """The URL, and a secret to sign with: the tenant's, made once beforehand."""
    check_url("notify.url", notify.url, settings)
    with read_only(sessions) as session:
        secret = tenant_secret(session, tenant)
    if secret is None:
        raise WebhookError(
            f"notify: tenant {tenant!r} has no webhook secret to sign deliveries with; "
            "create one with POST /v1/webhooks/secret (it is shown once), then submit again"
        )
