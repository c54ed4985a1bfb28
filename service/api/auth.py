"""Who is calling: the tenant of their API key, and the cache that spares most requests
an auth query.

Every job, dataset and sweep belongs to the tenant of the key that created it; a key
sees only its tenant's, an admin key sees all. With no key in the database the
service runs open: every caller is the tenant "default" with admin rights, which the
CLI allows only on a loopback address. Keys themselves: service.store.keys.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

from counterweight.service.store.models import DEFAULT_TENANT


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
