"""Storage in a directory: <root>/<key>. The default, with root = COUNTERWEIGHT_HOME,
where every file already is where the store would put it, so nothing is copied. A
root on a shared filesystem (NFS, a cluster file system) serves many hosts.

A stored file is synced to disk, its name too: the database row that points to it
commits after it (an upload answered 201, a job marked succeeded) and survives a power
cut, so the file must as well.

A directory that fails a read or a write (EIO, full, read-only, a stale NFS handle, not
mounted) is StoreUnavailable: an outage that workers wait out (DESIGN.md section 2)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from counterweight.service.durable import sync_directory, sync_file
from counterweight.service.errors import StoreUnavailable
from counterweight.service.storage.base import Storage, check_folder, check_key


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
        source.stat()  # this host's file missing is not the store's fault: raised as is
        try:
            if _same_file(source, stored):
                sync_file(stored)  # stored already, but maybe only in the page cache
            else:
                copy_atomically(source, stored)
        except OSError as exc:
            raise _unavailable(f"storing {key}", exc) from exc

    def download(self, key: str, target: Path) -> bool:
        stored = self.path(key)
        try:
            if not self._is_stored(stored):
                return False
            if not _same_file(stored, target):
                copy_atomically(stored, target)
        except OSError as exc:
            raise _unavailable(f"reading {key}", exc) from exc
        return True

    def exists(self, key: str) -> bool:
        try:
            return self._is_stored(self.path(key))
        except OSError as exc:
            raise _unavailable(f"looking for {key}", exc) from exc

    def list_files(self, prefix: str) -> Iterator[tuple[str, int]]:
        folder = self.root / check_folder(prefix)
        try:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.name.startswith("."):  # not a copy under way
                    yield path.relative_to(self.root).as_posix(), path.stat().st_size
        except FileNotFoundError:
            return  # the folder went away meanwhile: nothing there
        except OSError as exc:
            raise _unavailable(f"listing {prefix}", exc) from exc

    def delete(self, key: str) -> None:
        stored = self.path(key)
        try:
            stored.unlink(missing_ok=True)
            sync_directory(stored.parent)
        except FileNotFoundError:
            return  # its folder is gone too
        except OSError as exc:
            raise _unavailable(f"removing {key}", exc) from exc

    def delete_folder(self, prefix: str) -> int:
        folder = self.root / check_folder(prefix)
        try:
            count = sum(1 for path in folder.rglob("*") if path.is_file())
            shutil.rmtree(folder)
            sync_directory(folder.parent)  # the removal lasts, as a write would
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise _unavailable(f"removing {prefix}", exc) from exc
        return count

    def _is_stored(self, stored: Path) -> bool:
        """Whether the file is there; StoreUnavailable if the directory itself is gone
        (a shared file system not mounted): not the same as a file that was never stored.
        Other errors (EIO, a stale NFS handle) are raised, where is_file() would say no."""
        try:
            return stat.S_ISREG(stored.stat().st_mode)
        except (FileNotFoundError, NotADirectoryError):
            if self.root.is_dir():
                return False
            raise StoreUnavailable(
                "the artifact store's directory (COUNTERWEIGHT_STORAGE_DIR) is missing: "
                "is its file system mounted?"
            ) from None


def _unavailable(doing: str, exc: OSError) -> StoreUnavailable:
    # strerror, not str(exc): the message may reach an API client, who has no business
    # with the server's paths (the log has them, from the chained exception).
    return StoreUnavailable(f"{doing} in the artifact store: {exc.strerror or exc}")


def _same_file(a: Path, b: Path) -> bool:
    return b.exists() and os.path.samefile(a, b)
