"""Waking idle workers: LISTEN/NOTIFY on Postgres, a plain sleep on SQLite.

Notifications only shorten the wait; workers still poll, so a lost
notification (connection dropped, worker busy when it was sent) delays a job
by at most one poll interval and never strands it.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from sqlalchemy.engine import make_url

from counterweight.service.store.engine import libpq_dsn
from counterweight.service.store.queue.enqueue import NEW_JOB_CHANNEL

log = logging.getLogger(__name__)


class JobWaiter:
    """Blocks until a new job may be available, a timeout passes, or `stop` is set."""

    def __init__(self, database_url: str, stop: threading.Event) -> None:
        self._stop = stop
        url = make_url(database_url)
        self._dsn: str | None = None
        if url.get_backend_name() == "postgresql":
            self._dsn = libpq_dsn(database_url)
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def wait(self, timeout: float) -> None:
        if self._dsn is None or self._stop.is_set():
            self._stop.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        try:
            conn = self._listening_connection()
            # Wake on the first notification (the claim that follows takes whatever is
            # there), checking `stop` between short waits so shutdown is never delayed.
            while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
                if any(True for _ in conn.notifies(timeout=min(left, 0.25), stop_after=1)):
                    return
        except psycopg.Error as exc:
            log.warning("LISTEN connection failed (%s); polling instead", exc)
            self.close()
            self._stop.wait(timeout)

    def _listening_connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            assert self._dsn is not None
            self._conn = psycopg.connect(self._dsn, autocommit=True)
            self._conn.execute(f"LISTEN {NEW_JOB_CHANNEL}")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
