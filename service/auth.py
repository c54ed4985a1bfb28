"""API keys and tenants.

A key is "cw_" + 256 random bits (urlsafe base64). Only its SHA-256 is stored: with
that much entropy a plain hash cannot be brute-forced, and a fast one keeps the
lookup on every request cheap. The key itself is shown once, when it is made.

Every job, dataset and sweep belongs to the tenant of the key that created it; a key
sees only its tenant's, an admin key sees all. With no key in the database the
service runs open: every caller is the tenant "default" with admin rights, which the
CLI allows only on a loopback address. Auth stays on once a key exists, even when
every key is revoked: revoking the last key must not open the service.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.clock import db_now
from service.db.models import DEFAULT_TENANT, ApiKey

KEY_PREFIX = "cw_"
SHOWN_PREFIX_CHARS = 10  # "cw_" and 7 more: enough to tell keys apart in a listing
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class KeyNotFound(LookupError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id!r}")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant their key belongs to, and whether it is an admin key."""

    tenant: str
    is_admin: bool

    @property
    def scope(self) -> str | None:
        """The tenant whose objects this caller may see; None: every tenant's (admin)."""
        return None if self.is_admin else self.tenant


OPEN = Principal(DEFAULT_TENANT, is_admin=True)  # every caller while no key exists


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, tenant: str, *, is_admin: bool = False) -> tuple[ApiKey, str]:
    """Store a new key for `tenant`; returns the row and the key (the only time it exists)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        tenant=tenant, is_admin=is_admin, key_hash=hash_key(key), prefix=key[:SHOWN_PREFIX_CHARS]
    )
    session.add(row)
    session.flush()
    session.refresh(row)  # created_at
    return row, key


def revoke_key(session: Session, key_id: str) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise KeyNotFound(key_id)
    if row.revoked_at is None:
        row.revoked_at = db_now()
        session.flush()
        session.refresh(row)
    return row


def list_keys(session: Session) -> Sequence[ApiKey]:
    return session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)).all()


def lookup(session: Session, key: str) -> Principal | None:
    """The principal of a live key, or None for an unknown or revoked one."""
    row = session.scalars(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).one_or_none()
    return None if row is None else Principal(row.tenant, row.is_admin)


def keys_exist(session: Session) -> bool:
    """Whether any key was ever made (revoked ones count: see the module docstring)."""
    return session.scalar(select(ApiKey.id).limit(1)) is not None


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the service reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


class KeyCache:
    """Recent answers of the database, so that most requests cost no auth query.

    A key's principal is kept for `ttl` seconds: a revoked key stops working within
    that time. Unknown keys are not cached (a key made a moment ago works at once).
    "No keys exist" is re-checked after `ttl` too, so the first key created while the
    API runs switches auth on within that time; "keys exist" never changes back.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._principals: dict[str, tuple[Principal, float]] = {}
        self._keys_exist = False
        self._open_until = 0.0
        # Database reads under way, by key hash (None: no key sent), which concurrent
        # misses share (service.api.deps); only ever touched on the event loop.
        self.reads_in_flight: dict[str | None, asyncio.Future[tuple[bool, Principal | None]]] = {}

    def keys_exist(self) -> bool | None:
        """The cached answer, or None when it must be read from the database."""
        if self._keys_exist:
            return True
        return False if time.monotonic() < self._open_until else None

    def remember_keys_exist(self, exist: bool) -> None:
        with self._lock:
            self._keys_exist = self._keys_exist or exist
            self._open_until = time.monotonic() + self.ttl

    def principal(self, key_hash: str) -> Principal | None:
        entry = self._principals.get(key_hash)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def remember(self, key_hash: str, principal: Principal) -> None:
        with self._lock:
            if len(self._principals) >= self.MAX_ENTRIES:
                self._principals.clear()
            self._principals[key_hash] = (principal, time.monotonic() + self.ttl)
