"""Files that survive a power cut: fsync of a file's bytes and of the folder naming it.

A database row that points to a file (an upload answered 201, the SQLite file's
marker) commits after the file is written; without these the row could outlive the
file after a crash."""

from __future__ import annotations

import os
from pathlib import Path


def sync_directory(directory: Path) -> None:
    """Make the names in `directory` (a file just created or renamed into it) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_file(path: Path) -> None:
    """Put a file written in place, and its name, on disk."""
    with path.open("rb") as file:
        os.fsync(file.fileno())
    sync_directory(path.parent)
