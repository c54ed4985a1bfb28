"""Webhook signatures (Stripe's scheme), the addresses deliveries may reach, and the
retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from pathlib import Path
from typing import Any

import pytest

from counterweight.service.errors import WebhookAddressRefused
from counterweight.service.settings import parse_networks
from counterweight.service.store.webhooks.deliveries import retry_delay
from counterweight.service.webhooks.addresses import blocked_reason, check_literal, refusal, resolve
from counterweight.service.webhooks.signing import new_secret, signature_header, verify

BODY = b'{"event": "succeeded"}'


def test_the_header_is_hmac_sha256_over_timestamp_dot_body() -> None:
    header = signature_header("whsec_x", BODY, timestamp=1700000000)
    expected = hmac.new(b"whsec_x", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_verify_accepts_the_signed_body_and_nothing_else() -> None:
    header = signature_header("whsec_x", BODY, timestamp=1000)
    assert verify("whsec_x", header, BODY, now=1000)
    assert not verify("whsec_y", header, BODY, now=1000)  # another secret
    assert not verify("whsec_x", header, BODY + b" ", now=1000)  # a changed body
    assert not verify("whsec_x", header.replace("t=1000", "t=1001"), BODY, now=1000)
    assert not verify("whsec_x", header, BODY, now=1000 + 301)  # replayed too late
    assert not verify("whsec_x", "v1=abc", BODY, now=1000)  # no timestamp
    assert not verify("whsec_x", "", BODY, now=1000)


def test_verify_takes_any_of_several_signatures() -> None:
    signed = signature_header("whsec_new", BODY, timestamp=5).split(",")[1]
    assert verify("whsec_new", f"t=5,v1=deadbeef,{signed}", BODY, now=5)


def test_secrets_are_fresh_and_fit_their_column() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert first.startswith("whsec_") and len(first) <= 64


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not a public address"),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
    ],
)
def test_address_classification(address: str, reason: str | None) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


def test_the_operators_networks_are_allowed_and_only_they() -> None:
    allowed = parse_networks("127.0.0.1/32, 10.0.0.0/8")
    assert refusal(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert refusal(ipaddress.ip_address("10.9.9.9"), allowed) is None
    assert "192.168.0.1 is a private address" in (
        refusal(ipaddress.ip_address("192.168.0.1"), allowed) or ""
    )
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/33")


def test_literal_hosts_are_checked_at_submit_names_when_resolved() -> None:
    with pytest.raises(WebhookAddressRefused, match="loopback"):
        check_literal("localhost", ())
    with pytest.raises(WebhookAddressRefused, match="link-local"):
        check_literal("[fe80::1]", ())
    check_literal("hooks.example.com", ())  # a name: checked at delivery
    check_literal("localhost", parse_networks("127.0.0.0/8, ::1/128"))


def test_a_name_that_resolves_to_a_blocked_address_is_refused() -> None:
    with pytest.raises(WebhookAddressRefused, match=r"localhost resolves to .* loopback"):
        resolve("localhost", 80, ())
    allowed = parse_networks("127.0.0.0/8, ::1/128")
    assert resolve("localhost", 80, allowed).is_loopback
    with pytest.raises(WebhookAddressRefused, match="cannot resolve"):
        resolve("no-such-host.invalid", 80, ())


def test_backoff_doubles_from_the_base_up_to_an_hour() -> None:
    assert [retry_delay(n, 10.0) for n in (1, 2, 3, 4)] == [10.0, 20.0, 40.0, 80.0]
    assert retry_delay(30, 10.0) == 3600.0


def test_the_readme_verification_snippet_verifies_a_delivery() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("```python\nimport hashlib, hmac, time")
    snippet = readme[start + len("```python\n") : readme.index("```", start + 10)]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    header = signature_header("whsec_x", BODY)
    assert namespace["verify"]("whsec_x", header, BODY)
    assert not namespace["verify"]("whsec_y", header, BODY)
    assert not namespace["verify"]("whsec_x", header, BODY + b"x")
    old = signature_header("whsec_x", BODY, timestamp=int(time.time()) - 600)
    assert not namespace["verify"]("whsec_x", old, BODY)
