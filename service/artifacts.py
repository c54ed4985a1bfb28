"""A job's files: named here, kept in the artifact store (service.storage), and
copied to <home>/artifacts/jobs/<job id>/ on the hosts that use them.

The store key of a file is its path relative to the home directory, so a host's
copies sit where the default store (a directory, the home itself) keeps them.
Names are made here, never taken from a client, so no request can reach a path
outside the artifact directory.
"""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings
from service.storage import Storage, storage_for

CHECKPOINT = "checkpoint.pt"
MODEL = "model.safetensors"
CARD = "card.json"
PLOTS = "plots"  # <job dir>/plots/<name>.png, rendered by workers.plots
PLOT_NAMES = ("curves", "recall", "confusion")


class ArtifactMissing(LookupError):
    """A finished job's file is not in the artifact store (deleted, or never uploaded)."""


def job_dir(artifacts_dir: Path, job_id: str) -> Path:
    if not job_id.isalnum():
        raise ValueError(f"not a job id: {job_id!r}")
    return artifacts_dir / "jobs" / job_id


def job_key(job_id: str, name: str) -> str:
    """The store key of file `name` ("model.safetensors", "plots/curves.png") of a job."""
    return job_dir(Path("artifacts"), job_id).joinpath(name).as_posix()


def plots_dir(workdir: Path) -> Path:
    return workdir / PLOTS


def plot_name(name: str) -> str:
    return f"{PLOTS}/{name}.png"


def upload(storage: Storage, home: Path, job_id: str, name: str) -> None:
    """Put this host's copy of a job's file into the store."""
    key = job_key(job_id, name)
    storage.upload(key, home / key)


def fetch(storage: Storage, home: Path, job_id: str, name: str) -> bool:
    """Copy a job's file from the store to this host (replacing an older copy);
    False if the store has none."""
    key = job_key(job_id, name)
    return storage.download(key, home / key)


def job_file(settings: Settings, job_id: str, name: str) -> Path:
    """This host's copy of a finished job's file, fetched from the store on first use.
    A finished job's files never change, so a copy on this host is never stale."""
    path = settings.home / job_key(job_id, name)
    if path.is_file() or fetch(storage_for(settings), settings.home, job_id, name):
        return path
    raise ArtifactMissing(f"job {job_id} has no {name} in the artifact store")


def plot_file(settings: Settings, job_id: str, name: str, listed: list[str]) -> Path:
    """The PNG of plot `name` of a job whose metrics list `listed`. Only the known
    names reach the store; anything else is ArtifactMissing naming what there is."""
    if name not in PLOT_NAMES or name not in listed:
        available = ", ".join(listed) or "none"
        raise ArtifactMissing(f"job {job_id} has no plot {name!r}; available plots: {available}")
    return job_file(settings, job_id, plot_name(name))
