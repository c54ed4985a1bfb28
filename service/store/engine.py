"""Engines, sessions and schema upgrades for SQLite and Postgres."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, SingletonThreadPool

from counterweight.service.store import sqlite_file

if TYPE_CHECKING:
    from alembic.config import Config

# The folder migrations/ beside service/; installed, counterweight/migrations beside it.
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# Execution option marking a transaction that only reads (see read_only).
READ_ONLY = "counterweight_read_only"
SqliteSynchronous = Literal["full", "normal"]


def _finite(value: Any) -> Any:
    """NaN and infinities (a diverged run's loss) become null: JSON has no such numbers
    and Postgres rejects them, which would strand a finished job's result."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def dumps_json(value: Any) -> str:
    return json.dumps(_finite(value), allow_nan=False)


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy Postgres URL as the plain DSN that psycopg.connect takes."""
    parsed = make_url(url)
    dsn = parsed.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    if not parsed.query:
        return dsn
    # SQLAlchemy writes a space in a query value as "+", which libpq reads as a "+":
    # `options=-c default_transaction_read_only=on` must reach it as %20.
    return f"{dsn}?{urlencode(parsed.query, doseq=True, quote_via=quote)}"


def make_engine(
    url: str,
    *,
    sqlite_busy_timeout_ms: int = 30_000,
    sqlite_synchronous: SqliteSynchronous = "full",
    one_per_thread: bool = False,
) -> Engine:
    """An engine; for SQLite with WAL and IMMEDIATE transactions, on a file that exists
    (made by `upgrade`; service.store.sqlite_file). `one_per_thread`: each thread keeps
    one connection of its own (SingletonThreadPool), so that it never waits for the pool
    (service.api.reads)."""
    parsed = make_url(url)
    pool: dict[str, Any] = {"poolclass": SingletonThreadPool} if one_per_thread else {}
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, json_serializer=dumps_json, **pool)
    synchronous = {"full": "FULL", "normal": "NORMAL"}[sqlite_synchronous]  # nothing else
    engine = create_engine(
        url,
        connect_args={"timeout": sqlite_busy_timeout_ms / 1000},
        json_serializer=dumps_json,
        **pool,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(sqlite_busy_timeout_ms)}")
        # FULL: each commit syncs the WAL, so that a job answered 202 (an upload answered
        # 201) survives a power cut or a file system that fails; NORMAL syncs only at
        # checkpoints and loses the last commits then (BENCHMARKS.md, "SQLite durability").
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front. A deferred transaction that reads
        # and then writes can fail with SQLITE_BUSY without waiting; this one waits
        # its turn (busy_timeout), which is what makes the claim safe across processes.
        # A read-only one never writes, so it needs no lock: in WAL mode it reads the
        # last commit while a writer works, instead of queueing behind every writer.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    path = sqlite_file.database_file(url)
    if path is not None:
        sqlite_file.keep_to_file(engine, path)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on error."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def read_only(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reads (GET routes, status polls): on SQLite it takes no write lock,
    so pollers neither wait for workers' writes nor for each other."""
    with factory() as session, session.begin():
        # The option must reach the connection before its BEGIN: ask for it first.
        session.connection(execution_options={READ_ONLY: True})
        yield session


def alembic_config(url: str) -> Config:
    # Imported here: alembic takes ~0.15 s to import, and only upgrades need it.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the schema to the newest migration. A SQLite file is created on first use,
    and a missing one where one existed is DatabaseUnavailable (service.store.sqlite_file)."""
    path = sqlite_file.database_file(url)
    if path is not None:
        sqlite_file.prepare(path)
    from alembic import command

    command.upgrade(alembic_config(url), "head")
