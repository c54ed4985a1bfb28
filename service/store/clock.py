"""The database's clock as a SQL expression.

Leases are compared against the database's time, never a worker's, so that
machines with skewed clocks agree on when a lease expired.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Float, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class db_now(FunctionElement[datetime]):  # lower case: reads like SQL's now()
    """Current UTC time with microseconds, plus an optional offset in seconds."""

    type = DateTime(timezone=True)
    inherit_cache = True
    name = "db_now"

    def __init__(self, offset_seconds: float | ColumnElement[float] = 0.0) -> None:
        # The offset is a bound parameter so that cached SQL serves every offset.
        if not isinstance(offset_seconds, ColumnElement):
            offset_seconds = literal(float(offset_seconds), Float())
        super().__init__(offset_seconds)


@compiles(db_now, "postgresql")
def _pg_now(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    # clock_timestamp(), not now(): now() is frozen at the start of the transaction.
    offset = compiler.process(element.clauses, **kw)
    return f"(clock_timestamp() + make_interval(secs => CAST({offset} AS double precision)))"


@compiles(db_now, "sqlite")
def _sqlite_now(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    # Same text layout as SQLAlchemy's SQLite DateTime ("YYYY-MM-DD HH:MM:SS.ffffff"),
    # so stored values compare correctly as strings: %f has milliseconds, pad to micro.
    offset = compiler.process(element.clauses, **kw)
    return f"(strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', {offset})) || '000')"
