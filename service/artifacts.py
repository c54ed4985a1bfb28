"""Where a job's files live: <home>/artifacts/jobs/<job id>/.

Names are made here, never taken from a client, so no request can reach a
path outside the artifact directory.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT = "checkpoint.pt"
MODEL = "model.safetensors"
CARD = "card.json"
PLOTS = "plots"  # <job dir>/plots/<name>.png, rendered by workers.plots
PLOT_NAMES = ("curves", "recall", "confusion")


class ArtifactMissing(LookupError):
    """A finished job's file is not in the artifact store (deleted, or another host's disk)."""


def job_file(artifacts_dir: Path, job_id: str, name: str) -> Path:
    path = job_dir(artifacts_dir, job_id) / name
    if not path.is_file():
        raise ArtifactMissing(f"job {job_id} has no {name} in the artifact store")
    return path


def job_dir(artifacts_dir: Path, job_id: str) -> Path:
    if not job_id.isalnum():
        raise ValueError(f"not a job id: {job_id!r}")
    return artifacts_dir / "jobs" / job_id


def plots_dir(workdir: Path) -> Path:
    return workdir / PLOTS


def plot_file(artifacts_dir: Path, job_id: str, name: str, listed: list[str]) -> Path:
    """The PNG of plot `name` of a job whose metrics list `listed`. Only the known
    names reach the filesystem; anything else is ArtifactMissing naming what there is."""
    if name not in PLOT_NAMES or name not in listed:
        available = ", ".join(listed) or "none"
        raise ArtifactMissing(f"job {job_id} has no plot {name!r}; available plots: {available}")
    path = plots_dir(job_dir(artifacts_dir, job_id)) / f"{name}.png"
    if not path.is_file():
        raise ArtifactMissing(f"job {job_id} has no {PLOTS}/{name}.png in the artifact store")
    return path
