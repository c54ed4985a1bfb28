"""API keys (`api_keys`): made, revoked, listed, and looked up by their hash.

A key is "cw_" + 256 random bits (urlsafe base64). Only its SHA-256 is stored: with
that much entropy a plain hash cannot be brute-forced, and a fast one keeps the
lookup on every request cheap. The key itself is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from counterweight.service.errors import KeyNotFound
from counterweight.service.store.clock import db_now
from counterweight.service.store.models import ApiKey

KEY_PREFIX = "cw_"
SHOWN_PREFIX_CHARS = 10  # "cw_" and 7 more: enough to tell keys apart in a listing
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


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


def live_key(session: Session, key: str) -> ApiKey | None:
    """The row of a live key, or None for an unknown or revoked one."""
    return session.scalars(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).one_or_none()


def keys_exist(session: Session) -> bool:
    """Whether any key was ever made (revoked ones count: auth stays on once a key existed,
    so that revoking the last key cannot open the service)."""
    return session.scalar(select(ApiKey.id).limit(1)) is not None
