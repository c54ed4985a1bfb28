"""Where the API's busiest read, a job's status poll, runs: on the event loop for
SQLite, in the threadpool for Postgres.

A plain `def` route costs two thread hops (FastAPI runs the endpoint, then the
response's serialization, in its threadpool); on two cores shared with a
training worker, those hops and the GIL hand-offs behind them cost more than
the read itself (BENCHMARKS.md, "Load").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool

from service.db.engine import READ_ONLY, make_engine

T = TypeVar("T")


class PollReads:
    """Runs short single-statement reads where they cost least.

    SQLite: on the event loop. A read in WAL mode takes no lock and waits for no
    writer, so it is a local function call of ~0.1 ms, cheaper than a hop to a
    thread and back. It goes through an engine with one connection per thread
    (the loop's own), so it never waits for the shared pool either, which
    threadpool routes may have checked out.

    Postgres: in the threadpool, since the read waits on the network. In
    autocommit: one round trip for the SELECT instead of BEGIN, SELECT, ROLLBACK.
    """

    def __init__(self, engine: Engine, *, sqlite_busy_timeout_ms: int) -> None:
        self._engine = engine
        self._loop_engine: Engine | None = None
        if engine.dialect.name == "sqlite":
            url = engine.url.render_as_string(hide_password=False)
            self._loop_engine = make_engine(
                url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms, one_per_thread=True
            )

    async def run(self, read: Callable[[Connection], T]) -> T:
        if self._loop_engine is not None:
            connection = self._loop_engine.connect().execution_options(**{READ_ONLY: True})
            with connection, connection.begin():  # a deferred BEGIN (service.db.engine)
                return read(connection)
        return await run_in_threadpool(self._autocommit, read)

    def _autocommit(self, read: Callable[[Connection], T]) -> T:
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return read(conn)

    def dispose(self) -> None:
        if self._loop_engine is not None:
            self._loop_engine.dispose()
