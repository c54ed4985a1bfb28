"""A job's events as server-sent events, replayed then live (GET /v1/jobs/{id}/events).

A subscriber costs the database nothing while it waits: one EventHub per app
polls `job_events` for new rows (one indexed query, whatever the number of
subscribers) and hands them to the subscribers of each job through asyncio
queues. A subscriber registers its queue first, then replays from the database,
then drains the queue, skipping what it has seen by seq: the two overlap, so
nothing committed in between is missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.api.tasks import stopped_within
from counterweight.service.store.engine import dumps_json, read_only
from counterweight.service.store.models import JobEvent
from counterweight.service.store.queue.events import (
    events_after,
    events_since_id,
    is_terminal,
    newest_event_id,
)
from counterweight.service.store.queue.inspect import get_job

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
KEEP_ALIVE_SECONDS = 15.0
BATCH = 500  # rows per query, for the poller and for a replay
# Postgres hands out ids when rows are inserted, not when they commit: a row with a
# lower id can become visible after a higher one. The poller waits this long for a
# missing id before taking it for a rolled-back insert and moving past it.
GAP_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Event:
    seq: int
    type: str
    data: dict[str, Any]

    @classmethod
    def of(cls, row: JobEvent) -> Event:
        return cls(row.seq, row.type, row.data)

    def encode(self) -> str:
        return f"id: {self.seq}\nevent: {self.type}\ndata: {dumps_json(self.data)}\n\n"


class EventHub:
    """The app's one poller of `job_events`, fanning new rows out to subscribers."""

    def __init__(self, sessions: sessionmaker[Session], *, poll_seconds: float = POLL_SECONDS):
        self._sessions = sessions
        self._poll_seconds = poll_seconds
        self._subscribers: dict[str, set[asyncio.Queue[Event]]] = defaultdict(set)
        # Every id <= _low was delivered (or given up on); _seen holds those above it.
        self._low = 0
        self._seen: set[int] = set()
        self._gap: tuple[int, float] | None = None  # (missing id, since when)
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.polls = 0  # queries made, for tests: independent of the subscriber count

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="job-events-poller")

    async def stop(self) -> None:
        """Stop after the query in flight, if any (service.api.tasks says why)."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    @property
    def subscriber_count(self) -> int:
        return sum(len(queues) for queues in self._subscribers.values())

    async def subscribe(self, job_id: str) -> asyncio.Queue[Event]:
        # Only once the poller knows where it starts: a queue registered earlier could
        # miss rows committed between its replay and the poller's first query.
        await self._ready.wait()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers[job_id].add(queue)
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue[Event]) -> None:
        queues = self._subscribers.get(job_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._subscribers[job_id]

    async def _run(self) -> None:
        while not self._ready.is_set():
            try:
                self._low = await asyncio.to_thread(self._query_start)
                self._ready.set()
            except Exception:
                log.exception("events poller cannot read job_events; retrying")
                if await stopped_within(self._stopping, 1.0):
                    return
        while not await stopped_within(self._stopping, self._poll_seconds):
            try:
                rows = await asyncio.to_thread(self._query_new)
            except Exception:  # a database restart must not end live events for good
                log.exception("events poller query failed; retrying")
                continue
            self._deliver(rows)

    def _query_start(self) -> int:
        with read_only(self._sessions) as session:
            return newest_event_id(session)

    def _query_new(self) -> list[tuple[int, str, Event]]:
        self.polls += 1
        with read_only(self._sessions) as session:
            rows = events_since_id(session, self._low, BATCH)
            return [(row.id, row.job_id, Event.of(row)) for row in rows]

    def _deliver(self, rows: Sequence[tuple[int, str, Event]]) -> None:
        for event_id, job_id, event in rows:
            if event_id in self._seen:
                continue
            self._seen.add(event_id)
            for queue in self._subscribers.get(job_id, ()):
                queue.put_nowait(event)
        self._advance()

    def _advance(self) -> None:
        """Move _low past the contiguous delivered ids, and past gaps older than the grace."""
        while self._seen:
            missing = self._low + 1
            if missing in self._seen:
                self._seen.discard(missing)
                self._low = missing
                continue
            now = time.monotonic()
            if self._gap is None or self._gap[0] != missing:
                self._gap = (missing, now)
            if now - self._gap[1] < GAP_GRACE_SECONDS:
                return
            self._low = min(self._seen) - 1  # rolled back: never to appear
        self._gap = None


async def replay(
    sessions: sessionmaker[Session], job_id: str, after: int
) -> tuple[list[Event], bool]:
    """The stored events after seq `after`, and whether the job had ended by then."""

    def query() -> tuple[list[Event], bool]:
        events: list[Event] = []
        seq = after
        with read_only(sessions) as session:
            # The status read in the same transaction as the events: an ended job's
            # terminal event is committed with its status, so it is in this replay.
            ended = get_job(session, job_id).status.is_terminal
            while True:
                page = events_after(session, job_id, seq, BATCH)
                events.extend(Event.of(row) for row in page)
                if len(page) < BATCH:
                    return events, ended
                seq = page[-1].seq

    return await asyncio.to_thread(query)


async def stream(
    hub: EventHub, sessions: sessionmaker[Session], job_id: str, after: int
) -> AsyncIterator[str]:
    queue = await hub.subscribe(job_id)
    try:
        last = after
        replayed, ended = await replay(sessions, job_id, after)
        while True:
            for event in replayed:
                if event.seq > last:
                    yield event.encode()
                    last = event.seq
                # Ends the stream even when not sent: a client whose cursor is past the
                # job's last event (it claims to have seen more) gets no terminal event
                # to wait for, and would otherwise be followed with keep-alives forever.
                if is_terminal(event.type, event.data):
                    return
            if ended:
                return
            try:
                event = await asyncio.wait_for(queue.get(), KEEP_ALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                replayed = []
                continue
            if event.seq > last + 1:
                # Seq is gapless, so something was skipped (this stream fell behind the
                # poller's start): read the gap from the database instead of guessing.
                replayed, ended = await replay(sessions, job_id, last)
            else:
                replayed = [event]
    finally:
        hub.unsubscribe(job_id, queue)
