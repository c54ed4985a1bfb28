"""/v1/webhooks: a tenant's subscriptions and its notify secret; a job's deliveries."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from counterweight.service.api.deps import PrincipalDep, SessionsDep, SettingsDep
from counterweight.service.api.notify import check_url
from counterweight.service.api.webhook_schemas import (
    DeliveryOut,
    DeliveryPage,
    SecretCreated,
    SubscriptionCreated,
    SubscriptionOut,
    SubscriptionPage,
)
from counterweight.service.errors import WebhookError
from counterweight.service.notify_spec import NotifySpec
from counterweight.service.store.engine import read_only, transaction
from counterweight.service.store.queue.inspect import get_job
from counterweight.service.store.webhooks.deliveries import job_deliveries
from counterweight.service.store.webhooks.subscriptions import (
    MAX_SUBSCRIPTIONS_PER_TENANT,
    count_subscriptions,
    create_subscription,
    delete_subscription,
    get_subscription,
    list_subscriptions,
    set_tenant_secret,
)
from counterweight.service.webhooks.signing import new_secret

router = APIRouter(prefix="/v1", tags=["webhooks"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No subscription with this id"}}


@router.post("/webhooks/secret", status_code=201)
def create_webhook_secret(sessions: SessionsDep, principal: PrincipalDep) -> SecretCreated:
    """Make (or replace) the secret that signs the deliveries of the caller's jobs' own
    `notify`. Shown once. Replacing it re-signs every delivery sent from now on."""
    with transaction(sessions) as session:
        return SecretCreated.of(set_tenant_secret(session, principal.tenant, new_secret()))


@router.post("/webhooks", status_code=201)
def create_webhook(
    body: NotifySpec,
    response: Response,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> SubscriptionCreated:
    """Subscribe a URL to the events of every job of the caller's tenant from now on,
    with a secret of its own, shown once."""
    check_url("url", body.url, settings)
    secret = new_secret()
    with transaction(sessions) as session:
        if count_subscriptions(session, principal.tenant) >= MAX_SUBSCRIPTIONS_PER_TENANT:
            raise WebhookError(
                f"url: tenant {principal.tenant!r} has {MAX_SUBSCRIPTIONS_PER_TENANT} "
                "subscriptions, as many as it may; delete one first"
            )
        row = create_subscription(
            session, principal.tenant, url=body.url, events=list(body.events), secret=secret
        )
    response.headers["Location"] = f"/v1/webhooks/{row.id}"
    return SubscriptionCreated(**SubscriptionOut.of(row).model_dump(), secret=secret)


@router.get("/webhooks")
def list_webhooks(sessions: SessionsDep, principal: PrincipalDep) -> SubscriptionPage:
    """The caller's subscriptions, oldest first (secrets are never shown again)."""
    with read_only(sessions) as session:
        rows = list_subscriptions(session, principal.scope)
        return SubscriptionPage(data=[SubscriptionOut.of(row) for row in rows])


@router.get("/webhooks/{subscription_id}", responses=NOT_FOUND)
def get_webhook(
    subscription_id: str, sessions: SessionsDep, principal: PrincipalDep
) -> SubscriptionOut:
    with read_only(sessions) as session:
        return SubscriptionOut.of(get_subscription(session, subscription_id, principal.scope))


@router.delete("/webhooks/{subscription_id}", status_code=204, responses=NOT_FOUND)
def delete_webhook(subscription_id: str, sessions: SessionsDep, principal: PrincipalDep) -> None:
    """Unsubscribe; deliveries it still owes are cancelled, those made stay listed."""
    with transaction(sessions) as session:
        delete_subscription(session, subscription_id, principal.scope)


@router.get("/jobs/{job_id}/deliveries", responses={404: {"description": "No job with this id"}})
def list_deliveries(job_id: str, sessions: SessionsDep, principal: PrincipalDep) -> DeliveryPage:
    """Every webhook delivery of the job's events, in event order: state, attempts with
    the receivers' answers, and the body sent."""
    with read_only(sessions) as session:
        get_job(session, job_id, principal.scope)  # another tenant's job is a 404
        rows = job_deliveries(session, job_id)
        return DeliveryPage(data=[DeliveryOut.of(row) for row in rows])
