"""The API's busiest read, a job's status poll, without a thread: on the event loop
for SQLite, through psycopg's asyncio connections for Postgres.

A plain `def` route costs two thread hops (FastAPI runs the endpoint, then the
response's serialization, in its threadpool); on two cores shared with a
training worker, those hops and the GIL hand-offs behind them cost more than
the read itself (BENCHMARKS.md, "Load").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Select

from counterweight.service.store.engine import READ_ONLY, libpq_dsn, make_engine

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

# Enough for the polls in flight at once: each holds a connection for one round trip.
POSTGRES_CONNECTIONS = 4
POSTGRES_WAIT_SECONDS = 10.0


class PollReads:
    """Runs one SELECT and returns its first row (columns as attributes) or None.

    SQLite: on the event loop. A read in WAL mode takes no lock and waits for no
    writer, so it is a local function call of ~0.1 ms, cheaper than a hop to a
    thread and back. It goes through an engine with one connection per thread
    (the loop's own), so it never waits for the pool that threadpool routes share.

    Postgres: the read waits on the network, so it must not block the loop; a few
    psycopg asyncio connections in autocommit (one round trip, no BEGIN or
    ROLLBACK) wait for it instead of a thread. The statement is compiled once by
    SQLAlchemy; psycopg decodes JSON columns itself. A status comes back as its
    string, which JobOut validates into the enum.
    """

    def __init__(self, engine: Engine, *, sqlite_busy_timeout_ms: int) -> None:
        url = engine.url.render_as_string(hide_password=False)
        self._dialect = engine.dialect
        self._loop_engine: Engine | None = None
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._compiled: dict[Select[Any], str] = {}
        if engine.dialect.name == "sqlite":
            self._loop_engine = make_engine(
                url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms, one_per_thread=True
            )
        else:
            # Imported here: psycopg takes ~0.1 s to import, which an API on SQLite spares.
            from psycopg.rows import namedtuple_row
            from psycopg_pool import AsyncConnectionPool

            self._pool = AsyncConnectionPool(
                libpq_dsn(url),
                min_size=1,
                max_size=POSTGRES_CONNECTIONS,
                timeout=POSTGRES_WAIT_SECONDS,
                kwargs={"autocommit": True, "row_factory": namedtuple_row},
                open=False,  # opened on the app's event loop (open)
            )

    async def open(self) -> None:
        if self._pool is not None:
            await self._pool.open()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        if self._loop_engine is not None:
            self._loop_engine.dispose()

    async def first(self, statement: Select[Any], params: dict[str, Any]) -> Any:
        if self._loop_engine is not None:
            connection = self._loop_engine.connect().execution_options(**{READ_ONLY: True})
            with connection, connection.begin():  # a deferred BEGIN (service.store.engine)
                return connection.execute(statement, params).first()
        import psycopg  # imported already, with the pool

        assert self._pool is not None
        sql = self._compiled.get(statement)
        if sql is None:
            sql = self._compiled[statement] = str(statement.compile(dialect=self._dialect))
        try:
            return await self._fetch(sql, params)
        except psycopg.OperationalError:
            # The server went away (a restart, a failover): every idle connection is
            # now dead. Drop them and ask once more, as pre-ping would have.
            await self._pool.check()
            return await self._fetch(sql, params)

    async def _fetch(self, sql: str, params: dict[str, Any]) -> Any:
        assert self._pool is not None
        async with self._pool.connection() as connection:
            cursor = await connection.execute(sql, params)
            return await cursor.fetchone()
