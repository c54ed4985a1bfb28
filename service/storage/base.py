"""The storage interface: files that every host must see, named by keys.

A key is a relative path made by the server ("artifacts/jobs/<id>/model.safetensors",
"datasets/<id>.npz"), never by a client; `check_key` refuses anything else, so no key
can reach outside the store. Each host keeps its own copy of what it uses under its
COUNTERWEIGHT_HOME at the same relative path (its local cache, or a worker's scratch).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")


def check_key(key: str) -> str:
    # Every segment starts with a letter, digit, _ or -: no "..", no hidden names.
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a storage key: {key!r}")
    return key


class Storage(ABC):
    """Whole files in, whole files out. Writes are atomic: a reader sees the old file
    or the new one, never part of one."""

    @abstractmethod
    def upload(self, key: str, source: Path) -> None:
        """Store the file at `source` under `key`, replacing what was there."""

    @abstractmethod
    def download(self, key: str, target: Path) -> bool:
        """Write the file stored under `key` to `target` (atomically); False if there is none."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a file is stored under `key` (a cheap check: nothing is read)."""

    @abstractmethod
    def list_files(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size in bytes) of every file stored under the folder `prefix`."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the file stored under `key`, if there is one."""

    @abstractmethod
    def delete_folder(self, prefix: str) -> int:
        """Remove every file stored under the folder `prefix` (none: nothing to do);
        returns how many there were."""


def check_folder(prefix: str) -> str:
    """A folder's key with its trailing slash ("artifacts/jobs/<id>/")."""
    check_key(prefix.rstrip("/"))
    return prefix.rstrip("/") + "/"
