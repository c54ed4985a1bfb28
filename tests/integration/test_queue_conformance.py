"""One conformance suite for the queue, run against SQLite and Postgres alike."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.errors import IdempotencyConflict, JobStateConflict, LeaseLost
from counterweight.service.spec import JobSpec
from counterweight.service.store.engine import transaction
from counterweight.service.store.models import Job, JobStatus
from counterweight.service.store.queue.cancel import request_cancel
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.enqueue import enqueue
from counterweight.service.store.queue.lease import (
    Lease,
    fail,
    finish,
    heartbeat,
    mark_cancelled,
    release,
)
from counterweight.service.store.queue.sweeper import sweep_expired

pytestmark = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)

Sessions = sessionmaker[Session]


def spec(**overrides: object) -> JobSpec:
    return JobSpec.model_validate({"dataset": {"name": "digits"}, **overrides})


def add_jobs(sessions: Sessions, count: int, **overrides: object) -> list[str]:
    with transaction(sessions) as session:
        return [enqueue(session, spec(**overrides))[0].id for _ in range(count)]


def claim_one(sessions: Sessions, worker: str, lease_seconds: float = 60) -> Job | None:
    with transaction(sessions) as session:
        return claim(session, worker_id=worker, lease_seconds=lease_seconds)


def load(sessions: Sessions, job_id: str) -> Job:
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_eight_processes_claim_each_of_1000_jobs_exactly_once(
    sessions: Sessions, database_url: str
) -> None:
    ids = set(add_jobs(sessions, 1000))
    claimer = Path(__file__).with_name("claimer.py")
    procs = [
        subprocess.Popen(
            [sys.executable, str(claimer), database_url, f"w{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    claimed: list[str] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        claimed += out.split()
    assert len(claimed) == len(set(claimed)) == 1000
    assert set(claimed) == ids
    with transaction(sessions) as session:
        jobs = session.scalars(select(Job)).all()
    assert {(j.status, j.attempt) for j in jobs} == {(JobStatus.succeeded, 1)}
    # More than one process did real work: the claim is not just serial by accident.
    assert len({j.result["by"] for j in jobs if j.result}) > 1


def test_priority_first_then_age(sessions: Sessions) -> None:
    order = []
    for priority in [0, 5, -1, 5, 10]:
        order.append((priority, add_jobs(sessions, 1, priority=priority)[0]))
        time.sleep(0.002)  # distinct creation times
    expected = [job_id for _, job_id in sorted(order, key=lambda p: -p[0])]
    claimed = []
    while (job := claim_one(sessions, "w")) is not None:
        claimed.append(job.id)
    assert claimed == expected


def test_finish_racing_the_sweeper_is_never_rescued(sessions: Sessions) -> None:
    """Workers finish jobs around the moment their lease ends while a sweeper runs
    flat out: each job is either finished by its worker or rescued, never both."""
    ids = add_jobs(sessions, 40)
    leases = []
    for _ in ids:
        job = claim_one(sessions, "racer", lease_seconds=0.3)
        assert job is not None
        leases.append(Lease.of(job))
    rescued: set[str] = set()
    stop = threading.Event()

    def sweeper() -> None:
        while not stop.is_set():
            with transaction(sessions) as session:
                rescued.update(job_id for job_id, _ in sweep_expired(session))

    thread = threading.Thread(target=sweeper)
    thread.start()
    finished: set[str] = set()
    start = time.monotonic()
    for lease in leases:
        # Land each finish in a window around the lease's end.
        time.sleep(max(0.0, start + random.uniform(0.2, 0.4) - time.monotonic()))
        try:
            with transaction(sessions) as session:
                finish(session, lease, result={})
            finished.add(lease.job_id)
        except LeaseLost:
            pass
    time.sleep(0.5)
    stop.set()
    thread.join()
    assert finished | rescued == set(ids)
    assert finished.isdisjoint(rescued)
    for job_id in ids:
        job = load(sessions, job_id)
        if job_id in finished:
            assert (job.status, job.attempt) == (JobStatus.succeeded, 1)
        else:
            assert (job.status, job.owner) == (JobStatus.queued, None)


def test_heartbeats_keep_a_long_job_from_being_rescued(sessions: Sessions) -> None:
    [job_id] = add_jobs(sessions, 1)
    job = claim_one(sessions, "steady", lease_seconds=0.5)
    assert job is not None
    lease = Lease.of(job)
    for step in range(8):  # 1.6 s: three times the lease
        time.sleep(0.2)
        with transaction(sessions) as session:
            heartbeat(session, lease, lease_seconds=0.5, progress={"epoch": step})
            assert sweep_expired(session) == []
    with transaction(sessions) as session:
        finish(session, lease, result={"ok": True})
    job = load(sessions, job_id)
    assert (job.status, job.attempt, job.progress) == (JobStatus.succeeded, 1, {"epoch": 7})


def test_a_worker_whose_lease_lapsed_cannot_finish_fail_or_heartbeat(sessions: Sessions) -> None:
    [job_id] = add_jobs(sessions, 1)
    first = claim_one(sessions, "slow", lease_seconds=0.2)
    assert first is not None
    stale = Lease.of(first)
    time.sleep(0.4)
    for action in (
        lambda s: finish(s, stale, result={}),
        lambda s: fail(s, stale, error="x", retryable=True, backoff_seconds=0),
        lambda s: heartbeat(s, stale, lease_seconds=10, progress=None),
        lambda s: release(s, stale),
    ):
        with pytest.raises(LeaseLost), transaction(sessions) as session:
            action(session)
    with transaction(sessions) as session:
        assert sweep_expired(session) == [(job_id, JobStatus.queued)]
    second = claim_one(sessions, "fresh")
    assert second is not None and second.attempt == 2
    with pytest.raises(LeaseLost), transaction(sessions) as session:
        finish(session, stale, result={"from": "stale"})
    with transaction(sessions) as session:
        finish(session, Lease.of(second), result={"from": "fresh"})
    job = load(sessions, job_id)
    assert (job.status, job.result, job.attempt) == (JobStatus.succeeded, {"from": "fresh"}, 2)


def test_retry_waits_out_its_backoff_then_fails_after_max_attempts(sessions: Sessions) -> None:
    [job_id] = add_jobs(sessions, 1, max_attempts=2)
    job = claim_one(sessions, "w")
    assert job is not None
    with transaction(sessions) as session:
        fail(
            session, Lease.of(job), error="RuntimeError: boom", retryable=True, backoff_seconds=0.5
        )
    assert load(sessions, job_id).status == JobStatus.queued
    assert claim_one(sessions, "w") is None  # still backing off
    time.sleep(0.6)
    job = claim_one(sessions, "w")
    assert job is not None and job.attempt == 2
    with transaction(sessions) as session:
        fail(session, Lease.of(job), error="RuntimeError: boom", retryable=True, backoff_seconds=0)
    job = load(sessions, job_id)
    assert job.status == JobStatus.failed
    assert job.error is not None and "boom" in job.error and "2 of 2" in job.error
    assert job.finished_at is not None


def test_non_retryable_failure_ends_the_job_at_once(sessions: Sessions) -> None:
    [job_id] = add_jobs(sessions, 1, max_attempts=5)
    job = claim_one(sessions, "w")
    assert job is not None
    with transaction(sessions) as session:
        fail(session, Lease.of(job), error="bad data", retryable=False, backoff_seconds=0)
    job = load(sessions, job_id)
    assert (job.status, job.error, job.attempt) == (JobStatus.failed, "bad data", 1)


def test_sweeper_fails_a_job_out_of_attempts_and_cancels_a_cancelled_one(
    sessions: Sessions,
) -> None:
    [exhausted] = add_jobs(sessions, 1, max_attempts=1)
    [cancelled] = add_jobs(sessions, 1)
    for _ in range(2):
        assert claim_one(sessions, "doomed", lease_seconds=0.1) is not None
    with transaction(sessions) as session:
        request_cancel(session, cancelled)
    time.sleep(0.3)
    with transaction(sessions) as session:
        outcome = dict(sweep_expired(session))
    assert outcome == {exhausted: JobStatus.failed, cancelled: JobStatus.cancelled}
    assert "no retries left" in (load(sessions, exhausted).error or "")


def test_cancel_queued_at_once_running_through_heartbeat_finished_is_conflict(
    sessions: Sessions,
) -> None:
    queued, running = add_jobs(sessions, 2)
    job = claim_one(sessions, "w")
    assert job is not None and job.id == queued
    queued, running = running, queued  # the first one is now running
    with transaction(sessions) as session:
        assert request_cancel(session, queued).status == JobStatus.cancelled
        flagged = request_cancel(session, running)
    assert (flagged.status, flagged.cancel_requested) == (JobStatus.running, True)
    lease = Lease.of(job)
    with transaction(sessions) as session:
        assert heartbeat(session, lease, lease_seconds=60, progress=None) is True
        mark_cancelled(session, lease)
    assert load(sessions, running).status == JobStatus.cancelled
    with pytest.raises(JobStateConflict), transaction(sessions) as session:
        request_cancel(session, running)
    assert claim_one(sessions, "w") is None  # a cancelled job is never claimed


def test_release_returns_the_job_for_another_worker(sessions: Sessions) -> None:
    [job_id] = add_jobs(sessions, 1)
    job = claim_one(sessions, "leaving")
    assert job is not None
    with transaction(sessions) as session:
        release(session, Lease.of(job))
    again = claim_one(sessions, "staying")
    assert again is not None and (again.id, again.owner) == (job_id, "staying")


def test_idempotency_key_replays_the_same_job_and_refuses_another_body(
    sessions: Sessions,
) -> None:
    with transaction(sessions) as session:
        first, created = enqueue(session, spec(), idempotency_key="k-1")
    with transaction(sessions) as session:
        again, created_again = enqueue(session, spec(), idempotency_key="k-1")
    assert (created, created_again, again.id) == (True, False, first.id)
    with pytest.raises(IdempotencyConflict), transaction(sessions) as session:
        enqueue(session, spec(priority=3), idempotency_key="k-1")
    with transaction(sessions) as session:
        assert len(session.scalars(select(Job)).all()) == 1


def test_a_diverged_run_s_nan_metrics_are_stored_as_null(sessions: Sessions) -> None:
    [job_id] = add_jobs(sessions, 1)
    job = claim_one(sessions, "w")
    assert job is not None
    lease = Lease.of(job)
    with transaction(sessions) as session:
        heartbeat(session, lease, lease_seconds=60, progress={"metrics": {"loss": float("inf")}})
        finish(session, lease, result={"history": [{"val_loss": float("nan")}], "ok": 1.0})
    job = load(sessions, job_id)
    assert job.status == JobStatus.succeeded
    assert job.result == {"history": [{"val_loss": None}], "ok": 1.0}
    assert job.progress == {"metrics": {"loss": None}}
