"""Sending one delivery: a signed POST to a checked address, with nothing left open.

- The host is resolved and every address checked (service.webhooks.addresses); the
  request goes to the address checked, with the URL's host in `Host` and in TLS's SNI
  and certificate check, so no second lookup can send it elsewhere.
- No redirect is followed (a 3xx is a failed attempt): a redirect could point anywhere.
- One attempt takes at most COUNTERWEIGHT_WEBHOOK_TIMEOUT_SECONDS, connecting included,
  and reads at most RESPONSE_BYTES of the answer, which is kept (as text) for the record.
- No proxy from the environment, and a client per attempt: no cookie or connection
  passes from one receiver to another.
"""

from __future__ import annotations

import ipaddress
import ssl
import time
from collections.abc import Sequence
from functools import cache
from urllib.parse import urlsplit, urlunsplit

import httpx

from counterweight.service.errors import WebhookAddressRefused
from counterweight.service.settings import IPNetwork
from counterweight.service.store.webhooks.deliveries import Claimed, Outcome
from counterweight.service.webhooks.addresses import resolve
from counterweight.service.webhooks.signing import SIGNATURE_HEADER, signature_header

RESPONSE_BYTES = 4096  # read of the answer; the record keeps the first KEPT_RESPONSE chars
KEPT_RESPONSE = 1024
USER_AGENT = "Counterweight-Webhooks/1"
NO_SECRET = (
    "not sent: the tenant has no webhook secret to sign with; create one with "
    "POST /v1/webhooks/secret"
)


def send(delivery: Claimed, *, allowed: Sequence[IPNetwork], timeout: float) -> Outcome:
    """One attempt; never raises for what the receiver or the network does."""
    started = time.monotonic()

    def outcome(status: int | None, error: str | None, response: str = "") -> Outcome:
        elapsed = int((time.monotonic() - started) * 1000)
        return Outcome(status, error, response[:KEPT_RESPONSE], elapsed)

    if delivery.secret is None:
        return outcome(None, NO_SECRET)
    parts = urlsplit(delivery.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        address = resolve(host, port, allowed)
    except WebhookAddressRefused as exc:
        return outcome(None, f"refused: {exc}")
    literal = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    target = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
    body = delivery.body.encode()
    headers = {
        "Host": parts.netloc,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Counterweight-Delivery": delivery.id,
        SIGNATURE_HEADER: signature_header(delivery.secret, body),
    }
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    deadline = started + timeout
    try:
        with (
            _client(timeout) as client,
            client.stream(
                "POST", target, content=body, headers=headers, extensions=extensions
            ) as response,
        ):
            text = _bounded_text(response, deadline)
            return outcome(response.status_code, _error_of(response), text)
    except httpx.HTTPError as exc:
        return outcome(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    except TimeoutError as exc:
        return outcome(None, str(exc))


def _bounded_text(response: httpx.Response, deadline: float) -> str:
    """At most RESPONSE_BYTES of the answer, read before the attempt's deadline."""
    read = bytearray()
    for chunk in response.iter_raw():
        read += chunk
        if len(read) >= RESPONSE_BYTES:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("the receiver's answer took longer than the attempt may")
    return bytes(read[:RESPONSE_BYTES]).decode("utf-8", "replace")


def _error_of(response: httpx.Response) -> str | None:
    if 200 <= response.status_code < 300:
        return None
    if response.is_redirect:
        where = response.headers.get("location", "?")
        return f"HTTP {response.status_code} redirect to {where[:200]}: redirects are not followed"
    return f"HTTP {response.status_code}"


def _client(timeout: float) -> httpx.Client:
    """A client of its own per attempt (no cookies or connections carried from one
    receiver to the next), without the environment's proxies, following no redirect."""
    return httpx.Client(
        verify=_tls(),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        follow_redirects=False,
        trust_env=False,
    )


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every attempt: loading the CA certificates is most of what a
    client costs to make (a context holds no per-server state; clients share it)."""
    return ssl.create_default_context()
