"""A job's files (service.artifacts) in the artifact store, and this host's copies of
them under <home>/artifacts/jobs/<job id>/."""

from __future__ import annotations

import tempfile
from pathlib import Path

from counterweight.service.artifacts import PLOT_NAMES, job_key, log_name, plot_name
from counterweight.service.errors import ArtifactMissing
from counterweight.service.settings import Settings
from counterweight.service.storage import Storage, storage_for


def upload(storage: Storage, home: Path, job_id: str, name: str) -> None:
    """Put this host's copy of a job's file into the store."""
    key = job_key(job_id, name)
    storage.upload(key, home / key)


def fetch(storage: Storage, home: Path, job_id: str, name: str) -> bool:
    """Copy a job's file from the store to this host (replacing an older copy);
    False if the store has none."""
    key = job_key(job_id, name)
    return storage.download(key, home / key)


def local_job_file(settings: Settings, job_id: str, name: str) -> Path | None:
    """This host's copy of a finished job's file, if it has one: no call to the store.
    A finished job's files never change, so a copy on this host is never stale."""
    path = settings.home / job_key(job_id, name)
    return path if path.is_file() else None


def job_file(settings: Settings, job_id: str, name: str) -> Path:
    """This host's copy of a finished job's file, fetched from the store on first use."""
    path = settings.home / job_key(job_id, name)
    if path.is_file() or fetch(storage_for(settings), settings.home, job_id, name):
        return path
    raise ArtifactMissing(f"job {job_id} has no {name} in the artifact store")


def checked_plot_name(job_id: str, name: str, listed: list[str]) -> str:
    """The file name (for job_file) of plot `name` of a job whose metrics list `listed`.
    Only the known names reach the store; anything else is ArtifactMissing naming what
    there is."""
    if name not in PLOT_NAMES or name not in listed:
        available = ", ".join(listed) or "none"
        raise ArtifactMissing(f"job {job_id} has no plot {name!r}; available plots: {available}")
    return plot_name(name)


def read_log(settings: Settings, job_id: str, attempt: int) -> str | None:
    """What the store holds of one attempt's log (workers.job_logs), or None: no line
    shipped yet. Read through a file of its own, never this host's copy, which a worker
    here may be writing."""
    with tempfile.TemporaryDirectory(prefix="counterweight-log-") as scratch:
        target = Path(scratch) / "log"
        if not storage_for(settings).download(job_key(job_id, log_name(attempt)), target):
            return None
        return target.read_text(encoding="utf-8", errors="replace")
