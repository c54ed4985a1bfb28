"""The chaos run of bench/chaos.py in short: real workers SIGKILLed while they train,
the API and the database restarted, and still every job succeeds exactly once; and the
home's file system failing under clients (bench/chaos_filesystem.py), and still every
job and upload that was answered 2xx is there once it is repaired; and the artifact
store refused or hung while jobs are claimed, checkpoint and publish
(bench/chaos_store.py), and still every job succeeds without spending an attempt on it."""

from __future__ import annotations

import random

import pytest

from bench.chaos import run_chaos
from bench.chaos_filesystem import run_filesystem_fault
from bench.chaos_store import PROBES, run_store_chaos
from tests.loopfs import can_mount


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "workers", "jobs"), [("postgres", 3, 6), ("sqlite", 2, 5)])
def test_no_job_is_lost_or_run_twice_under_kills_and_restarts(
    backend: str, workers: int, jobs: int
) -> None:
    random.seed(0)
    report = run_chaos(
        backend, workers=workers, jobs=jobs, epochs=3, kill_every=(1.5, 3.0), timeout=170
    )
    figures = str(report)
    assert (report.succeeded, report.lost, report.duplicates) == (jobs, 0, 0), figures
    assert report.incomplete_history == 0 and report.api_mismatches == 0, figures
    assert report.worker_exits == 0, figures  # no worker died of a restart
    assert report.api_restarts == 1, figures
    assert report.database_restarts == (1 if backend == "postgres" else 0), figures
    assert report.kills >= 3, figures
    # Each kill cost the job it hit an attempt: the kills landed on running jobs.
    assert report.attempts >= jobs + report.kills, figures
    # Jobs that lost their worker after an epoch went on from the checkpoint.
    assert report.killed_after_checkpoint >= 1, figures
    assert report.resumed_from_checkpoint == report.killed_after_checkpoint, figures


@pytest.mark.slow
@pytest.mark.skipif(not can_mount(), reason="loop mounts need root (CI runs as root)")
def test_nothing_answered_is_lost_when_the_home_file_system_fails() -> None:
    report = run_filesystem_fault(clients=3, before=4.0, during=2.0)
    figures = str(report)
    assert report.jobs_accepted > 0 and report.uploads_accepted > 0, figures
    assert (report.jobs_missing, report.uploads_missing, report.uploads_altered) == (0, 0, 0)
    assert report.server_errors == 0, figures  # a 503 saying why, never a 500
    assert report.answers_during_fault.get("503", 0) > 0, figures
    assert report.ready_during_fault == 503 and report.database_up_during_fault == 0, figures


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "mode"), [("sqlite", "refused"), ("postgres", "hung")])
def test_no_job_is_lost_and_no_attempt_spent_when_the_artifact_store_fails(
    backend: str, mode: str
) -> None:
    # Two jobs a worker: the last two start after the first outages, so the last
    # outage still finds one in its final epochs; 5 epochs, so that each moment lasts
    # two of them, however fast the machine.
    report = run_store_chaos(
        backend, mode=mode, workers=2, jobs=4, epochs=5, outage=8.0, card_clients=16
    )
    figures = str(report)
    assert (report.succeeded, report.lost, report.attempts_spent_on_outages) == (4, 0, 0), figures
    assert [o["moment"] for o in report.outages] == ["claims", "checkpoints", "results"], figures
    assert report.outages[0]["jobs_waiting"] == 2, figures  # each worker holds one, waiting
    assert report.outages[-1]["recovery_seconds"] is not None, figures  # back to work
    for probe in PROBES:  # health and status never wait for the store
        latency = report.latency_during_outages[probe]
        assert latency["failed"] == 0 and latency["slowest_seconds"] < 5.0, figures
