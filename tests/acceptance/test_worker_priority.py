"""A worker training on the CPU yields it to an API on the same host
(COUNTERWEIGHT_WORKER_NICE): every one of its threads, torch's included, runs niced."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.conftest import SLOW_DIGITS
from tests.processes import Service


def thread_niceness(pid: int) -> dict[str, int]:
    """Each thread's nice value (field 19 of /proc/<pid>/task/<tid>/stat), by thread name."""
    niceness = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        niceness[f"{task.name} {(task / 'comm').read_text().strip()}"] = int(fields[16])
    return niceness


def test_a_training_worker_runs_every_thread_niced(database_url: str, tmp_path: Path) -> None:
    service = Service(tmp_path, database_url, worker_nice="7")
    try:
        service.start_api()
        worker = service.start_worker()
        job_id = service.submit(SLOW_DIGITS)
        service.wait_for(job_id, lambda job: (job["progress"] or {}).get("epoch", 0) >= 1)
        niceness = thread_niceness(worker.pid)
        assert len(niceness) > 2  # torch's threads, the heartbeat: not just the main one
        assert set(niceness.values()) == {7}, niceness
    finally:
        service.stop()
