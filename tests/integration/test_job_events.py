"""The job event stream at the queue level, on SQLite and Postgres alike."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.errors import LeaseLost
from counterweight.service.spec import JobSpec
from counterweight.service.store.engine import transaction
from counterweight.service.store.models import Job, JobEvent
from counterweight.service.store.queue.cancel import request_cancel
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.enqueue import enqueue
from counterweight.service.store.queue.events import events_after
from counterweight.service.store.queue.lease import (
    Lease,
    fail,
    finish,
    heartbeat,
    mark_cancelled,
    release,
)
from counterweight.service.store.queue.sweeper import LEASE_EXPIRED, sweep_expired

pytestmark = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)

Sessions = sessionmaker[Session]


def add_job(sessions: Sessions) -> str:
    with transaction(sessions) as session:
        return enqueue(session, JobSpec.model_validate({"dataset": {"name": "digits"}}))[0].id


def claim_job(sessions: Sessions, job_id: str, lease_seconds: float = 60) -> Lease:
    with transaction(sessions) as session:
        job = claim(session, worker_id="w", lease_seconds=lease_seconds)
    assert job is not None and job.id == job_id
    return Lease.of(job)


def events(sessions: Sessions, job_id: str, after: int = 0) -> list[tuple[int, str, Any]]:
    with transaction(sessions) as session:
        return [(e.seq, e.type, e.data) for e in events_after(session, job_id, after, 1000)]


def statuses(sessions: Sessions, job_id: str) -> list[tuple[str, int, str | None]]:
    return [
        (data["status"], data["attempt"], data["error"])
        for _, kind, data in events(sessions, job_id)
        if kind == "status"
    ]


def test_each_transition_of_a_job_records_its_status_event(sessions: Sessions) -> None:
    job_id = add_job(sessions)
    lease = claim_job(sessions, job_id)
    row = {"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "val": {"accuracy": 0.9}}
    with transaction(sessions) as session:
        heartbeat(session, lease, lease_seconds=60, progress={"epoch": 1}, epochs=[row])
        heartbeat(session, lease, lease_seconds=60, progress=None)  # nothing new: no event
        fail(session, lease, error="boom", retryable=True, backoff_seconds=0)
    lease = claim_job(sessions, job_id)
    with transaction(sessions) as session:
        release(session, lease)
    lease = claim_job(sessions, job_id)
    with transaction(sessions) as session:
        finish(session, lease, result={"final": {}})

    stream = events(sessions, job_id)
    assert [seq for seq, _, _ in stream] == list(range(1, len(stream) + 1))
    assert [kind for _, kind, _ in stream[2:4]] == ["epoch", "progress"]
    assert (stream[2][2], stream[3][2]) == (row, {"epoch": 1})
    assert statuses(sessions, job_id) == [
        ("queued", 0, None),
        ("running", 1, None),
        ("queued", 1, "boom"),  # waiting for its retry, with the reason
        ("running", 2, "boom"),
        ("queued", 2, "boom"),  # released by a worker shutting down
        ("running", 3, "boom"),
        ("succeeded", 3, None),
    ]
    assert events(sessions, job_id, after=7) == stream[7:]  # Last-Event-ID resumes here


def test_cancels_failures_and_rescues_end_with_their_status(sessions: Sessions) -> None:
    queued = add_job(sessions)
    with transaction(sessions) as session:
        request_cancel(session, queued)
    assert statuses(sessions, queued)[-1] == ("cancelled", 0, None)

    running = add_job(sessions)
    lease = claim_job(sessions, running)
    with transaction(sessions) as session:
        request_cancel(session, running)  # only flags it: the job is still running
    assert statuses(sessions, running)[-1][0] == "running"
    with transaction(sessions) as session:
        mark_cancelled(session, lease)
    assert statuses(sessions, running)[-1][0] == "cancelled"

    broken = add_job(sessions)
    lease = claim_job(sessions, broken)
    with transaction(sessions) as session:
        fail(session, lease, error="bad spec", retryable=False, backoff_seconds=0)
    assert statuses(sessions, broken)[-1] == ("failed", 1, "bad spec")

    silent = add_job(sessions)
    lease = claim_job(sessions, silent, lease_seconds=0.05)
    time.sleep(0.2)
    with transaction(sessions) as session:
        assert sweep_expired(session) != []
    assert statuses(sessions, silent)[-1] == ("queued", 1, LEASE_EXPIRED)
    # The worker that lost it writes no event: its statement matches no row.
    with pytest.raises(LeaseLost), transaction(sessions) as session:
        heartbeat(session, lease, lease_seconds=60, progress={"epoch": 9}, epochs=[{"epoch": 9}])
    assert [kind for _, kind, _ in events(sessions, silent)] == ["status"] * 3


def test_concurrent_heartbeats_and_cancel_keep_seq_gapless_and_in_commit_order(
    sessions: Sessions,
) -> None:
    jobs = [add_job(sessions) for _ in range(3)]
    leases = [claim_job(sessions, job_id) for job_id in jobs]
    beats, threads_per_job = 8, 3
    errors: list[BaseException] = []

    def beat(lease: Lease, thread: int) -> None:
        try:
            for i in range(beats):
                with transaction(sessions) as session:
                    heartbeat(
                        session,
                        lease,
                        lease_seconds=60,
                        progress={"thread": thread, "beat": i},
                        epochs=[{"thread": thread, "epoch": i}],
                    )
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    def cancel(lease: Lease) -> None:
        try:
            with transaction(sessions) as session:
                request_cancel(session, lease.job_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=beat, args=(lease, t))
        for lease in leases
        for t in range(threads_per_job)
    ] + [threading.Thread(target=cancel, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for lease in leases:
        with transaction(sessions) as session:
            mark_cancelled(session, lease)

    with transaction(sessions) as session:
        rows = session.scalars(select(JobEvent).order_by(JobEvent.id)).all()
        by_job = {
            job_id: [(e.id, e.seq, e.type) for e in rows if e.job_id == job_id] for job_id in jobs
        }
        assert all(job.cancel_requested for job in session.scalars(select(Job)))
    expected = 2 + 2 * beats * threads_per_job + 1  # queued, running, beats, cancelled
    for job_id, stream in by_job.items():
        seqs = [seq for _, seq, _ in stream]
        # In id order (the order the inserts happened) the seqs run 1, 2, 3 ... with
        # no gap and no repeat: each writer saw the previous one's committed event.
        assert seqs == list(range(1, expected + 1)), job_id
        assert [kind for _, _, kind in stream].count("epoch") == beats * threads_per_job
        assert stream[-1][2] == "status"
        # Every thread's epochs arrive in the order that thread wrote them.
        for thread in range(threads_per_job):
            epochs = [
                data["epoch"]
                for _, kind, data in events(sessions, job_id)
                if kind == "epoch" and data["thread"] == thread
            ]
            assert epochs == list(range(beats))
