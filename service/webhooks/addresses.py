"""Which addresses a delivery may reach: public ones only, unless the operator allows
more (COUNTERWEIGHT_WEBHOOK_ALLOWED_NETWORKS).

A webhook URL is chosen by a tenant, and the server that sends it sits inside the
operator's network: without this check a tenant could make it POST to the database,
a cloud metadata service (169.254.169.254) or anything else on localhost or the LAN.
The check is on the addresses the host name resolves to, every one of them, not on the
name (a public name can resolve to 127.0.0.1), and the sender connects to the address
it checked, so a second lookup cannot answer differently (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from counterweight.service.errors import WebhookAddressRefused
from counterweight.service.settings import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SETTING = "COUNTERWEIGHT_WEBHOOK_ALLOWED_NETWORKS"


def blocked_reason(address: IPAddress) -> str | None:
    """Why a delivery may not go to `address` by default, or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "not a public address"
    return None


def refusal(address: IPAddress, allowed: Sequence[IPNetwork]) -> str | None:
    """Why `address` is refused under the operator's allow-list, or None if it is not."""
    reason = blocked_reason(address)
    if reason is None or any(address in network for network in allowed):
        return None
    return (
        f"{address} is a {reason} address; deliveries go only to public addresses "
        f"unless the operator allows its network ({SETTING})"
    )


def check_literal(host: str, allowed: Sequence[IPNetwork]) -> None:
    """At submit, before any lookup: a host that is an address, or `localhost`, is
    checked as it stands. Names are checked when delivered, once resolved."""
    if host.lower().rstrip(".") == "localhost" or host.lower().endswith(".localhost"):
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    why = refusal(address, allowed)
    if why is not None:
        raise WebhookAddressRefused(why)


def resolve(host: str, port: int, allowed: Sequence[IPNetwork]) -> IPAddress:
    """The address to connect to for `host`: every address it resolves to must be
    allowed (one blocked one refuses the host), and the first is used."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookAddressRefused(f"cannot resolve {host!r}: {exc}") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        why = refusal(address, allowed)
        if why is not None:
            raise WebhookAddressRefused(f"{host} resolves to {why}")
    if not addresses:
        raise WebhookAddressRefused(f"{host!r} resolves to no address")
    return addresses[0]
