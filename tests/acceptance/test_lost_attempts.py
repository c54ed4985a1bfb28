"""An attempt lost to a SIGKILLed worker before the job made any progress counts against
max_attempts, with real API and worker processes (one lost after progress does not:
tests/acceptance/test_end_to_end.py; every case at the store level:
tests/integration/test_lost_attempts.py)."""

from __future__ import annotations

import signal

import pytest

from tests.acceptance.conftest import SLOW_DIGITS
from tests.processes import Service

BACKENDS = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)


@BACKENDS
def test_a_job_that_loses_its_worker_before_any_progress_fails_when_out_of_attempts(
    service: Service,
) -> None:
    first = service.start_worker()
    job_id = service.submit({**SLOW_DIGITS, "max_attempts": 1})
    service.wait_for(job_id, lambda job: job["status"] == "running")
    first.send_signal(signal.SIGKILL)  # in its first epoch: as a job that crashes its worker
    first.wait()

    service.start_worker()
    job = service.wait_until_ended(job_id)
    assert job["status"] == "failed", job
    assert (job["attempt"], job["forgiven_attempts"]) == (1, 0)
    assert "no retries left" in job["error"]
