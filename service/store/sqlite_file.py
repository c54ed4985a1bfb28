"""The SQLite file of the embedded default, kept to the file it is.

SQLite creates a database file wherever it is asked to open one, and a process keeps
writing into a file that was deleted under it. Either way a service can lose every
job without a word: submissions answered 202 into a deleted file, or a restart that
finds no file, makes an empty one and, holding no API key, runs open. So:

- Engines open the file, never create it (`keep_to_file`): a connection made once the
  file is gone fails, saying so.
- Each connection remembers which file it opened; one whose file was deleted or
  replaced since is discarded when next checked out, so that the next one opens the
  file now there, or fails if there is none.
- Start-up (`prepare`, from service.store.engine.upgrade) creates the file once and
  writes a marker beside it, `<file>.created`. A missing file beside its marker is an
  error, not a fresh start: restore the file, or delete the marker to start afresh.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from counterweight.service.durable import sync_directory
from counterweight.service.errors import DatabaseUnavailable

MARKER_SUFFIX = ".created"
# connection record info: (st_dev, st_ino) of the file the connection opened.
OPENED_FILE = "counterweight_opened_file"


class DatabaseFileMissing(sqlite3.OperationalError):
    """The file is not there to open (the DBAPI's own error, so that SQLAlchemy wraps it
    as it wraps SQLite's)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} does not exist: deleted or moved?")
        self.sqlite_errorname = "SQLITE_CANTOPEN"


def database_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for Postgres, in-memory, or a URL that is already
    an SQLite URI (its `mode` is the operator's choice)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.query.get("uri"):
        return None
    if not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def marker_path(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def prepare(path: Path) -> None:
    """Before the first connection of a process that starts: create the database file and
    its marker on first use; refuse a missing file whose marker says it existed. A file
    from before markers existed gets one now."""
    marker = marker_path(path)
    had_file = marker.exists()  # looked at first: a file, once made, precedes its marker
    if path.exists():
        if not had_file:
            _write_marker(marker, path, adopted=True)
        return
    if had_file:
        raise DatabaseUnavailable(
            f"the database file {path} is missing, but {marker} says this home has had one: "
            "refusing to start with an empty database (every job gone, and no API keys, "
            "so open to anyone). Restore the file (and its -wal file, if any) from a "
            f"backup; or, to start afresh on purpose, delete {marker}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(path).close()  # an empty file: a database with no tables yet
    sync_directory(path.parent)
    _write_marker(marker, path, adopted=False)


def _write_marker(marker: Path, path: Path, *, adopted: bool) -> None:
    how = "found" if adopted else "created"
    text = (
        f"{path.name} {how} {datetime.now(UTC).isoformat(timespec='seconds')}.\n"
        f"While this file exists, counterweight refuses to start if {path.name} is missing\n"
        "(it would otherwise start empty and, with no API keys, open). Delete this file\n"
        "to start afresh on purpose.\n"
    )
    try:
        marker.write_text(text)
        sync_directory(marker.parent)
    except OSError:
        if not adopted:
            raise
        # A read-only home at start-up: readiness says so; the marker waits for a start
        # that can write it.


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def keep_to_file(engine: Engine, path: Path) -> None:
    """Open `path` only if it exists, and drop connections to a file that is gone."""
    absolute = path.resolve()
    # mode=rw: open for reading and writing, never create. The path is percent-encoded,
    # as a URI's path must be.
    uri = f"file:{quote(str(absolute))}?mode=rw"

    @event.listens_for(engine, "do_connect")
    def _open_existing(
        dialect: Dialect, record: ConnectionPoolEntry, cargs: list[Any], cparams: dict[str, Any]
    ) -> sqlite3.Connection:
        if not absolute.exists():
            raise DatabaseFileMissing(absolute)
        connection: sqlite3.Connection = dialect.loaded_dbapi.connect(uri, uri=True, **cparams)
        record.info[OPENED_FILE] = _identity(absolute)
        return connection

    @event.listens_for(engine, "checkout")
    def _same_file(
        dbapi_conn: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        # One stat per checkout: microseconds, next to a transaction's milliseconds.
        if record.info.get(OPENED_FILE) != _identity(absolute):
            # The pool discards this connection and makes a new one (_open_existing).
            raise DisconnectionError(f"the database file {absolute} was deleted or replaced")
