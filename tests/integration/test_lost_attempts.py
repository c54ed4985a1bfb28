"""Attempts lost to a dead worker, on real SQLite and Postgres: one counts against
max_attempts only if the job made no progress (no new epoch reported) during it.

A "kill" here is what the sweeper sees after a SIGKILL: a lease that ran out without
the worker saying anything more (the end-to-end run with real processes is
tests/acceptance/test_lost_attempts.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.spec import JobSpec
from counterweight.service.store.engine import transaction
from counterweight.service.store.models import Job, JobStatus
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.enqueue import enqueue
from counterweight.service.store.queue.lease import Lease, fail, finish, heartbeat
from counterweight.service.store.queue.sweeper import sweep_expired

pytestmark = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)

Sessions = sessionmaker[Session]
LEASE = 0.2


def add_job(sessions: Sessions, max_attempts: int) -> str:
    spec = JobSpec.model_validate({"dataset": {"name": "digits"}, "max_attempts": max_attempts})
    with transaction(sessions) as session:
        return enqueue(session, spec)[0].id


def start(sessions: Sessions) -> Lease:
    with transaction(sessions) as session:
        job = claim(session, worker_id="w", lease_seconds=LEASE)
    assert job is not None
    return Lease.of(job)


def report(sessions: Sessions, lease: Lease, **progress: Any) -> None:
    with transaction(sessions) as session:
        heartbeat(session, lease, lease_seconds=LEASE, progress=progress)


def die(sessions: Sessions, job_id: str) -> JobStatus:
    """The worker goes silent; once its lease ran out, a sweep decides the job."""
    time.sleep(LEASE + 0.1)
    with transaction(sessions) as session:
        outcome = dict(sweep_expired(session))
    return outcome[job_id]


def load(sessions: Sessions, job_id: str) -> Job:
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_kills_after_progress_never_use_up_the_attempts(sessions: Sessions) -> None:
    """A job that checkpoints every epoch and loses its worker every time, more often
    than it may fail, and last after its final epoch (finished, not yet reported)."""
    job_id = add_job(sessions, max_attempts=1)
    for epoch in range(1, 6):
        lease = start(sessions)
        report(sessions, lease, epoch=epoch - 1, epochs=5)  # resumed: not progress yet
        report(sessions, lease, epoch=epoch, epochs=5)
        assert die(sessions, job_id) == JobStatus.queued
        job = load(sessions, job_id)
        assert "not counted as an attempt" in (job.error or "")
    lease = start(sessions)
    assert (lease.attempt, lease.forgiven_attempts, lease.counted) == (6, 5, 1)
    with transaction(sessions) as session:
        finish(session, lease, result={"ok": True})
    job = load(sessions, job_id)
    assert (job.status, job.attempt, job.forgiven_attempts) == (JobStatus.succeeded, 6, 5)


def test_a_job_that_kills_its_worker_before_any_progress_fails_after_max_attempts(
    sessions: Sessions,
) -> None:
    job_id = add_job(sessions, max_attempts=2)
    lease = start(sessions)
    report(sessions, lease, epoch=2, epochs=10)
    assert die(sessions, job_id) == JobStatus.queued  # progress: forgiven
    # From here every attempt dies in its third epoch, before checkpointing it: reports
    # of the epochs it resumed from, or none at all, are no progress.
    lease = start(sessions)
    report(sessions, lease, epoch=2, epochs=10, fraction=0.25)
    assert die(sessions, job_id) == JobStatus.queued  # counted: 1 of 2
    start(sessions)
    assert die(sessions, job_id) == JobStatus.failed  # counted: 2 of 2
    job = load(sessions, job_id)
    assert (job.attempt, job.forgiven_attempts) == (3, 1)
    assert job.error is not None and "no retries left" in job.error
    assert job.finished_at is not None


def test_reported_epochs_never_go_down_so_forgiveness_is_bounded(sessions: Sessions) -> None:
    """Reruns that resume from an older checkpoint (the newest was not stored) report
    epochs the job had reached before: getting back there is not progress."""
    job_id = add_job(sessions, max_attempts=2)
    lease = start(sessions)
    report(sessions, lease, epoch=3, epochs=10)
    assert die(sessions, job_id) == JobStatus.queued  # forgiven
    lease = start(sessions)
    report(sessions, lease, epoch=2, epochs=10)
    assert die(sessions, job_id) == JobStatus.queued  # counted: 1 of 2
    assert load(sessions, job_id).progress_epoch == 3
    lease = start(sessions)
    report(sessions, lease, epoch=3, epochs=10)  # epoch 3 again
    assert die(sessions, job_id) == JobStatus.failed  # counted: 2 of 2


def test_a_failure_the_worker_reports_counts_only_the_attempts_that_count(
    sessions: Sessions,
) -> None:
    job_id = add_job(sessions, max_attempts=2)
    lease = start(sessions)
    report(sessions, lease, epoch=1, epochs=10)
    assert die(sessions, job_id) == JobStatus.queued  # forgiven
    for expected in (JobStatus.queued, JobStatus.failed):
        lease = start(sessions)
        with transaction(sessions) as session:
            fail(session, lease, error="RuntimeError: boom", retryable=True, backoff_seconds=0)
        assert load(sessions, job_id).status == expected
    job = load(sessions, job_id)
    assert job.error is not None and "attempt 2 of 2; no retries left" in job.error
    assert (job.attempt, job.forgiven_attempts) == (3, 1)
