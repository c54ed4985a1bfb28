"""A tenant's webhook subscriptions and the secret that signs its jobs' own `notify`.

A secret is kept as made (signing needs it, unlike an API key, which is only compared)
and shown once: in the answer that creates it. Deleting a subscription cancels the
deliveries it still owes, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from counterweight.service.errors import WebhookNotFound
from counterweight.service.store.clock import db_now
from counterweight.service.store.models import (
    DeliveryState,
    WebhookDelivery,
    WebhookSecret,
    WebhookSubscription,
)

MAX_SUBSCRIPTIONS_PER_TENANT = 20


def create_subscription(
    session: Session, tenant: str, *, url: str, events: list[str], secret: str
) -> WebhookSubscription:
    row = WebhookSubscription(tenant=tenant, url=url, events=events, secret=secret)
    session.add(row)
    session.flush()
    session.refresh(row)  # created_at
    return row


def count_subscriptions(session: Session, tenant: str) -> int:
    query = select(func.count()).where(WebhookSubscription.tenant == tenant)
    return session.scalar(query) or 0


def list_subscriptions(session: Session, tenant: str | None) -> Sequence[WebhookSubscription]:
    """The tenant's subscriptions, oldest first; None: every tenant's (an admin)."""
    query = select(WebhookSubscription).order_by(
        WebhookSubscription.created_at, WebhookSubscription.id
    )
    if tenant is not None:
        query = query.where(WebhookSubscription.tenant == tenant)
    return session.scalars(query).all()


def get_subscription(
    session: Session, subscription_id: str, tenant: str | None
) -> WebhookSubscription:
    row = session.get(WebhookSubscription, subscription_id)
    if row is None or (tenant is not None and row.tenant != tenant):
        raise WebhookNotFound(subscription_id)
    return row


def delete_subscription(session: Session, subscription_id: str, tenant: str | None) -> None:
    """Remove it and cancel what it still owes (pending, or being sent: its result is
    then not recorded). Delivered and failed ones stay, for GET .../deliveries."""
    row = get_subscription(session, subscription_id, tenant)
    session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.subscription_id == subscription_id,
            WebhookDelivery.state.in_([DeliveryState.pending, DeliveryState.delivering]),
        )
        .values(state=DeliveryState.cancelled, owner=None, finished_at=db_now())
    )
    session.delete(row)
    session.flush()


def set_tenant_secret(session: Session, tenant: str, secret: str) -> WebhookSecret:
    """Make the tenant's notify secret, or replace it: deliveries sent from now on, those
    already waiting included, are signed with the new one."""
    row = session.get(WebhookSecret, tenant, with_for_update=True)
    if row is None:
        row = WebhookSecret(tenant=tenant, secret=secret)
        session.add(row)
    else:
        row.secret = secret
        row.created_at = db_now()
    session.flush()
    session.refresh(row)
    return row


def tenant_secret(session: Session, tenant: str) -> WebhookSecret | None:
    return session.get(WebhookSecret, tenant)
