"""Request-scoped access to settings, database sessions and the caller's identity."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from counterweight.service.api.auth import OPEN, KeyCache, Principal
from counterweight.service.api.reads import PollReads
from counterweight.service.api.storage_calls import StorageCalls
from counterweight.service.settings import Settings
from counterweight.service.store.engine import read_only
from counterweight.service.store.keys import hash_key, keys_exist, live_key

V1_PREFIX = "/v1"
MISSING_KEY = (
    "missing API key: send the header 'Authorization: Bearer <key>' "
    "(an operator makes keys with `counterweight keys create --tenant NAME`)"
)
BAD_KEY = "unknown or revoked API key"


# The two are async only because FastAPI runs a plain `def` dependency in its
# threadpool: a thread hop per request for an attribute read.
async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


async def _poll_reads(request: Request) -> PollReads:
    reads: PollReads = request.app.state.poll_reads
    return reads


async def _storage_calls(request: Request) -> StorageCalls:
    calls: StorageCalls = request.app.state.storage_calls
    return calls


SettingsDep = Annotated[Settings, Depends(_settings)]
PollReadsDep = Annotated[PollReads, Depends(_poll_reads)]
# Every call from the API to the artifact store goes through it (service.api.storage_calls).
StorageCallsDep = Annotated[StorageCalls, Depends(_storage_calls)]
# Routes open their own transaction (service.store.engine.transaction) so that the
# commit happens before the response is sent: a 202 always means a stored job.
SessionsDep = Annotated[sessionmaker[Session], Depends(_sessions)]


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="counterweight"'})


def _read_keys(sessions: sessionmaker[Session], key: str | None) -> tuple[bool, Principal | None]:
    """Whether any key exists, and the principal of `key` if it is a live one."""
    with read_only(sessions) as session:
        exist = keys_exist(session)
        row = live_key(session, key) if exist and key else None
        return exist, (None if row is None else Principal(row.tenant, row.is_admin))


async def principal(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer <key>`; 401 without a live key. While no
    key exists, every caller is service.api.auth.OPEN. Read once per request (request.state)."""
    known: Principal | None = getattr(request.state, "principal", None)
    if known is None:
        known = request.state.principal = await authenticate(request, _bearer_token(request))
    return known


async def authenticate(request: Request, key: str | None) -> Principal:
    """The principal of `key` (None: no key sent); 401 unless it is a live key or no key
    exists. The dashboard (service.api.ui) calls it with the key of its session cookie."""
    # Answers come from the app's KeyCache when it has them: most requests cost no query.
    cache: KeyCache = request.app.state.key_cache
    key_hash = hash_key(key) if key else None
    exist = cache.keys_exist()
    if exist is False:
        return OPEN
    if exist and key_hash is not None and (known := cache.principal(key_hash)) is not None:
        return known
    exist_now, found = await _read_keys_once(request, cache, key, key_hash)
    cache.remember_keys_exist(exist_now)
    if not exist_now:
        return OPEN
    if key_hash is None:
        raise _unauthorized(MISSING_KEY)
    if found is None:
        raise _unauthorized(BAD_KEY)
    cache.remember(key_hash, found)
    return found


async def _read_keys_once(
    request: Request, cache: KeyCache, key: str | None, key_hash: str | None
) -> tuple[bool, Principal | None]:
    """One database read for all the requests that miss the cache with the same key at
    once: when an entry expires under load, a hundred pollers would each run it."""
    read = cache.reads_in_flight.get(key_hash)
    if read is None:
        sessions = await _sessions(request)
        read = asyncio.ensure_future(run_in_threadpool(_read_keys, sessions, key))
        cache.reads_in_flight[key_hash] = read
        read.add_done_callback(lambda _: cache.reads_in_flight.pop(key_hash, None))
    # Shielded: a caller that goes away does not cancel the read for the others.
    return await asyncio.shield(read)


PrincipalDep = Annotated[Principal, Depends(principal)]


async def require_key_on_v1(request: Request) -> None:
    """The app-wide dependency (create_app): every route under /v1, whichever router
    brings it, needs a key; /healthz, /readyz, /metrics and the docs do not."""
    # The path requested, not the route's template: a router included with a prefix
    # cannot slip past, whatever its routes call themselves.
    path: str = request.scope["path"]
    if path == V1_PREFIX or path.startswith(V1_PREFIX + "/"):
        await principal(request)
