"""Background tasks of the API process that run blocking work on threads.

Stopping one waits for the call in flight instead of cancelling the task that awaits
it: a cancelled `asyncio.to_thread` leaves its thread running, still holding a database
connection, which `engine.dispose()` at shutdown cannot close (psycopg then complains
when the connection is collected, and the database keeps it until then)."""

from __future__ import annotations

import asyncio
import contextlib


async def stopped_within(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`, less if `stopping` is set meanwhile; whether it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
    return stopping.is_set()
