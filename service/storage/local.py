"""Storage in a directory: <root>/<key>. The default, with root = COUNTERWEIGHT_HOME,
where every file already is where the store would put it, so nothing is copied. A
root on a shared filesystem (NFS, a cluster file system) serves many hosts.

A stored file is synced to disk, its name too: the database row that points to it
commits after it (an upload answered 201, a job marked succeeded) and survives a power
cut, so the file must as well."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from counterweight.service.durable import sync_directory, sync_file
from counterweight.service.storage.base import Storage, check_key


def copy_atomically(source: Path, target: Path) -> None:
    """Copy through a temporary file beside `target`, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        sync_directory(target.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def upload(self, key: str, source: Path) -> None:
        stored = self.path(key)
        if _same_file(source, stored):
            sync_file(stored)  # stored already, but maybe only in the page cache
        else:
            copy_atomically(source, stored)

    def download(self, key: str, target: Path) -> bool:
        stored = self.path(key)
        if not stored.is_file():
            return False
        if not _same_file(stored, target):
            copy_atomically(stored, target)
        return True


def _same_file(a: Path, b: Path) -> bool:
    return b.exists() and os.path.samefile(a, b)
