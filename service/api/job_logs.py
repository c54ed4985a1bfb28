"""A job's log lines, every attempt, read from the artifact store (workers.job_logs), at
once (GET /v1/jobs/{id}/logs) or followed as server-sent events (`?follow=true`).

Following polls the store every FOLLOW_POLL_SECONDS for the attempts whose log is not
whole yet (a log is whole once its last line is service.logs.end_of_log) and sends the
lines it has not sent. It ends once the job has ended and its last attempt's log is
whole, or END_GRACE_SECONDS after the job ended without that line (its worker was
killed: the store has what it shipped). A store that does not answer skips a poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.api.storage_calls import StorageCalls
from counterweight.service.errors import StorageRetryLater
from counterweight.service.logs import end_of_log
from counterweight.service.settings import Settings
from counterweight.service.storage.jobs import read_log
from counterweight.service.store.engine import dumps_json, read_only
from counterweight.service.store.models import Job, JobStatus

FOLLOW_POLL_SECONDS = 1.0
END_GRACE_SECONDS = 15.0
KEEP_ALIVE_SECONDS = 15.0


@dataclass
class AttemptLog:
    attempt: int
    lines: list[str]
    complete: bool  # its worker wrote the last line: nothing more will come


def attempt_log(text: str | None, job_id: str, attempt: int) -> AttemptLog:
    """The whole lines of what the store holds (a copy made while a line was being
    written ends with part of it: left for the next read)."""
    lines = (text or "").split("\n")[:-1]
    complete = bool(lines) and lines[-1].endswith(end_of_log(job_id, attempt))
    return AttemptLog(attempt, lines, complete)


def read_attempts(
    settings: Settings, calls: StorageCalls, job_id: str, attempts: range
) -> list[AttemptLog]:
    """The logs of `attempts` (numbers from 1) that the store has (a bounded store call
    each, service.api.storage_calls): an attempt that shipped no line is left out."""
    logs = []
    for attempt in attempts:
        what = f"job {job_id}: reading the log of attempt {attempt} from the artifact store"
        text = calls.run(what, read_log, settings, job_id, attempt)
        if text is not None:
            logs.append(attempt_log(text, job_id, attempt))
    return logs


def _status(sessions: sessionmaker[Session], job_id: str) -> tuple[JobStatus, int] | None:
    """The job's status and attempt; None once it is gone (deleted meanwhile)."""
    with read_only(sessions) as session:
        row = session.execute(select(Job.status, Job.attempt).where(Job.id == job_id)).first()
    return None if row is None else (row.status, row.attempt)


def _event(kind: str, data: dict[str, object], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {dumps_json(data)}\n\n"


def parse_resume(last_event_id: str | None) -> tuple[int, int]:
    """Last-Event-ID `<attempt>.<line>` (1-based, as the stream's ids): where to resume;
    anything else starts from the beginning."""
    attempt, _, line = (last_event_id or "").partition(".")
    if attempt.isdecimal() and line.isdecimal() and len(attempt) < 10 and len(line) < 10:
        return int(attempt), int(line)
    return 1, 0


async def follow(
    sessions: sessionmaker[Session],
    settings: Settings,
    calls: StorageCalls,
    job_id: str,
    resume: tuple[int, int],
) -> AsyncIterator[str]:
    """Events `line` ({"attempt", "line"}, id `<attempt>.<n>`) as the worker ships them,
    then `end` ({"status"}) once the job has ended (module docstring)."""
    first, sent_in_first = resume
    sent: dict[int, int] = {first: sent_in_first}  # lines sent, by attempt
    complete: set[int] = set(range(1, first))
    ended_at: float | None = None
    last_write = time.monotonic()
    while True:
        state = await asyncio.to_thread(_status, sessions, job_id)
        if state is None:
            yield _event("end", {"status": "deleted"})
            return
        status, attempts = state
        pending = [a for a in range(1, attempts + 1) if a not in complete]
        try:
            logs = await asyncio.to_thread(
                read_attempts, settings, calls, job_id, range(min(pending or [1]), attempts + 1)
            )
        except StorageRetryLater:
            logs = []  # the store is away or busy: the next poll tries again
        for log in logs:
            if log.attempt in complete:
                continue
            start = sent.get(log.attempt, 0)
            for number, line in enumerate(log.lines[start:], start=start + 1):
                yield _event(
                    "line", {"attempt": log.attempt, "line": line}, f"{log.attempt}.{number}"
                )
                last_write = time.monotonic()
            sent[log.attempt] = max(start, len(log.lines))
            if log.complete:
                complete.add(log.attempt)
        if status.is_terminal:
            ended_at = ended_at or time.monotonic()
            last_whole = attempts == 0 or attempts in complete
            if last_whole or time.monotonic() - ended_at > END_GRACE_SECONDS:
                yield _event("end", {"status": status.value})
                return
        if time.monotonic() - last_write > KEEP_ALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_write = time.monotonic()
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
