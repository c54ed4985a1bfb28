"""Rescuing jobs whose worker went silent (killed, machine lost).

One UPDATE decides every expired job at once; its WHERE clause is evaluated
under the row lock (Postgres) or the write lock (SQLite), so a job that its
worker finishes or heartbeats concurrently is never rescued by mistake.

An attempt lost this way counts against max_attempts only if the job made no
progress during it: no epoch finished (and checkpointed) beyond where the attempt
started, as the heartbeats reported it (`progress_epoch` against
`attempt_start_epoch`). A job that keeps getting further, or that finished but
lost its worker before reporting, is re-queued without using up its attempts;
one that kills its worker before finishing an epoch (a poison job: out of memory,
a crash in native code) fails after max_attempts such tries. Each forgiven attempt
raised `progress_epoch`, which never exceeds the epochs, so a job is claimed at
most max_attempts + epochs times.
"""

from __future__ import annotations

from sqlalchemy import case, literal, not_, update
from sqlalchemy.orm import Session

from counterweight.service.store.clock import db_now
from counterweight.service.store.models import Job, JobStatus
from counterweight.service.store.queue.events import record_status_of

LEASE_EXPIRED = "worker stopped heartbeating (lease expired)"
FORGIVEN = f"{LEASE_EXPIRED} after the job made progress; not counted as an attempt"
EXHAUSTED = f"{LEASE_EXPIRED} before an epoch finished in this attempt; no retries left"


def sweep_expired(session: Session) -> list[tuple[str, JobStatus]]:
    """Re-queue (or fail, or cancel) running jobs whose lease expired; returns what changed."""
    status_type = Job.__table__.c.status.type
    cancelled = Job.cancel_requested.is_(True)
    progressed = Job.progress_epoch > Job.attempt_start_epoch
    # Every SET expression reads the row as it was before this UPDATE.
    exhausted = not_(progressed) & (Job.attempt - Job.forgiven_attempts >= Job.max_attempts)
    terminal = cancelled | exhausted
    statement = (
        update(Job)
        .where(Job.status == JobStatus.running, Job.lease_expires_at <= db_now())
        .values(
            status=case(
                (cancelled, literal(JobStatus.cancelled, status_type)),
                (exhausted, literal(JobStatus.failed, status_type)),
                else_=literal(JobStatus.queued, status_type),
            ),
            error=case(
                (cancelled, Job.error),
                (exhausted, literal(EXHAUSTED)),
                (progressed, literal(FORGIVEN)),
                else_=literal(LEASE_EXPIRED),
            ),
            forgiven_attempts=Job.forgiven_attempts + case((progressed, 1), else_=0),
            owner=case((terminal, Job.owner), else_=None),
            lease_expires_at=None,
            # Lost workers say nothing about the job itself: retry at once, no backoff.
            run_after=db_now(),
            finished_at=case((terminal, db_now()), else_=None),
            waiting=None,  # what the silent worker said it waited for is no longer known
        )
        .returning(Job.id, Job.status, Job.attempt, Job.error)
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(statement).all()
    for row in rows:
        record_status_of(session, row.id, row.status, attempt=row.attempt, error=row.error)
    return [(row.id, row.status) for row in rows]
