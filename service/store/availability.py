"""Whether the database takes writes, and what to call it when it does not.

A database that answers reads may still refuse every write: a SQLite file on a file
system that went read-only (ext4 remounts itself so on an error), its file deleted,
a full disk, a Postgres session that is read-only (a standby, or
`default_transaction_read_only`). Readiness and the `counterweight_database_up`
metric ask `check_writable`; the API answers 503 for any error `unavailable` names
(service.api.app); the worker logs `describe_failure` and backs off (workers.worker).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.errors import DatabaseUnavailable
from counterweight.service.store.engine import transaction

# SQLite result codes (extended ones start with these) that say the database cannot be
# written or read now, whatever the statement; anything else (a constraint, bad SQL) is
# a bug, not an outage.
SQLITE_REASONS = {
    "SQLITE_READONLY": "the database is read-only",
    "SQLITE_IOERR": "the disk failed a read or write (the file system may have gone read-only)",
    "SQLITE_FULL": "the disk is full",
    "SQLITE_CANTOPEN": "the database file cannot be opened",
    "SQLITE_CORRUPT": "the database file is damaged",
    "SQLITE_NOTADB": "the database file is damaged",
    "SQLITE_BUSY": "other writers held the lock past COUNTERWEIGHT_SQLITE_BUSY_TIMEOUT_MS",
}
# Postgres SQLSTATEs: whole, or their first three or two characters (a class).
POSTGRES_REASONS = {
    "25006": "the database is read-only (a read-only session, or a standby server)",
    "08": "the database server cannot be reached",
    "57P": "the database server is shutting down or starting up",
    "53": "the database server is out of resources (disk, memory or connections)",
    "3D000": "the database does not exist",
}
# Rewrites alembic's one row with its own value: a write on both backends that changes
# nothing, committed (and on SQLite synced) as any write is. Only a commit shows that a
# SQLite file system went read-only under open connections.
WRITE_PROBE = text("UPDATE alembic_version SET version_num = version_num")


def _reason(exc: DBAPIError) -> str | None:
    name = getattr(exc.orig, "sqlite_errorname", None)
    if name:
        return next((why for code, why in SQLITE_REASONS.items() if name.startswith(code)), None)
    state = getattr(exc.orig, "sqlstate", None)
    if state:
        for prefix in (state, state[:3], state[:2]):
            if prefix in POSTGRES_REASONS:
                return POSTGRES_REASONS[prefix]
        return None
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        return POSTGRES_REASONS["08"]  # psycopg's own: no connection, no SQLSTATE
    return None


def driver_message(exc: BaseException) -> str:
    """The first line of what the driver said, without SQLAlchemy's statement dump."""
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


def unavailable(exc: BaseException) -> DatabaseUnavailable | None:
    """What `exc` means as DatabaseUnavailable, if it says the database cannot be written
    or reached; None for any other error."""
    if isinstance(exc, DatabaseUnavailable):
        return exc
    if not isinstance(exc, DBAPIError):
        return None
    reason = _reason(exc)
    if reason is None:
        return None
    return DatabaseUnavailable(f"database unavailable: {reason} ({driver_message(exc)})")


def describe_failure(exc: BaseException) -> str:
    """A failed database call in one line, for a log: the outage it means, or what the
    driver said."""
    refused = unavailable(exc)
    return str(refused) if refused is not None else f"database error: {driver_message(exc)}"


def check_writable(sessions: sessionmaker[Session]) -> None:
    """Raise DatabaseUnavailable unless a write commits (WRITE_PROBE)."""
    try:
        with transaction(sessions) as session:
            session.execute(WRITE_PROBE)
    except SQLAlchemyError as exc:
        # Whatever stops the probe (a database without its tables, too) is not ready.
        raise unavailable(exc) or DatabaseUnavailable(
            f"database unavailable: {driver_message(exc)}"
        ) from exc
