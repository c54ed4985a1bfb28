"""A job's files: their names, and where a host keeps its copies.

The worker writes them (workers.training.checkpoint, workers.plots) into
<home>/artifacts/jobs/<job id>/, the artifact store keeps them for every host
(service.storage.jobs), and the API serves them. The store key of a file is its path
relative to the home directory, so a host's copies sit where the default store (a
directory, the home itself) keeps them. Names are made here, never taken from a
client, so no request can reach a path outside the artifact directory.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT = "checkpoint.pt"
MODEL = "model.safetensors"
CARD = "card.json"
PLOTS = "plots"  # <job dir>/plots/<name>.png
PLOT_NAMES = ("curves", "recall", "confusion")
LOGS = "logs"  # <job dir>/logs/attempt-<n>.log: the worker's lines about the job


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


def log_name(attempt: int) -> str:
    """The file of one attempt's log lines (workers.job_logs)."""
    return f"{LOGS}/attempt-{attempt}.log"
