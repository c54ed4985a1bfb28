"""Where a job's files live: <home>/artifacts/jobs/<job id>/.

Names are made here, never taken from a client, so no request can reach a
path outside the artifact directory.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT = "checkpoint.pt"
MODEL = "model.safetensors"
CARD = "card.json"


def job_dir(artifacts_dir: Path, job_id: str) -> Path:
    if not job_id.isalnum():
        raise ValueError(f"not a job id: {job_id!r}")
    return artifacts_dir / "jobs" / job_id
