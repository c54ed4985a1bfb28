"""What a worker does with a job it holds: heartbeat, finish, fail, release.

Each update matches on (id, owner, attempt, status=running) and on a lease that
has not yet expired by the database's clock; zero rows updated means the worker
lost the job, and it is told so with LeaseLost instead of overwriting someone
else's run. The statements are built once, with bound parameters: building
one costs more than running it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, Text, bindparam, case, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase

from counterweight.service.errors import LeaseLost
from counterweight.service.store.clock import db_now
from counterweight.service.store.models import Job, JobStatus
from counterweight.service.store.queue.events import record_event, record_status

MAX_BACKOFF_SECONDS = 300.0


@dataclass(frozen=True)
class Lease:
    """A worker's hold on one attempt of one job."""

    job_id: str
    owner: str
    attempt: int  # the claim's number: with the owner, what names this attempt
    max_attempts: int
    forgiven_attempts: int  # earlier attempts that do not count (service.store.queue.sweeper)

    @classmethod
    def of(cls, job: Job) -> Lease:
        assert job.owner is not None, "only a claimed job has a lease"
        return cls(job.id, job.owner, job.attempt, job.max_attempts, job.forgiven_attempts)

    @property
    def counted(self) -> int:
        """Which attempt this is, of the max_attempts the job may use."""
        return self.attempt - self.forgiven_attempts


def _update_held(**values: Any) -> UpdateBase:
    return (
        update(Job)
        .where(
            # Parameter names differ from the columns': update() reserves those for SET.
            Job.id == bindparam("held_id", type_=String()),
            Job.owner == bindparam("held_owner", type_=String()),
            Job.attempt == bindparam("held_attempt", type_=Integer()),
            Job.status == JobStatus.running,
            Job.lease_expires_at > db_now(),
        )
        .values(**values)
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


_RENEW = {
    "lease_expires_at": db_now(bindparam("lease_seconds", type_=Float())),
    "heartbeat_at": db_now(),
    # Each beat says what the job waits for now, if anything (workers.heartbeat).
    "waiting": bindparam("new_waiting", type_=Text()),
}
HEARTBEAT = _update_held(**_RENEW)
_NEW_EPOCH = bindparam("new_epoch", type_=Integer())
HEARTBEAT_WITH_PROGRESS = _update_held(
    **_RENEW,
    progress=bindparam("new_progress", type_=JSON()),
    # Never lowered (a rerun from an older checkpoint reports lower epochs again), so
    # that each forgiven attempt raises it: forgiveness is bounded by the epochs.
    progress_epoch=case((Job.progress_epoch < _NEW_EPOCH, _NEW_EPOCH), else_=Job.progress_epoch),
)
_ENDED = {"lease_expires_at": None, "finished_at": db_now(), "waiting": None}
FINISH = _update_held(
    status=JobStatus.succeeded, result=bindparam("new_result", type_=JSON()), error=None, **_ENDED
)
MARK_CANCELLED = _update_held(status=JobStatus.cancelled, **_ENDED)
FAIL = _update_held(status=JobStatus.failed, error=bindparam("new_error", type_=Text()), **_ENDED)
RETRY = _update_held(
    status=JobStatus.queued,
    error=bindparam("new_error", type_=Text()),
    owner=None,
    lease_expires_at=None,
    run_after=db_now(bindparam("delay", type_=Float())),
    waiting=None,
)
RELEASE = _update_held(status=JobStatus.queued, owner=None, lease_expires_at=None, waiting=None)
# Given back while it waited for the artifact store: an outage, not the job's doing.
RELEASE_FORGIVEN = _update_held(
    status=JobStatus.queued,
    owner=None,
    lease_expires_at=None,
    forgiven_attempts=Job.forgiven_attempts + 1,
    waiting=bindparam("new_waiting", type_=Text()),
)


def _run(session: Session, statement: UpdateBase, lease: Lease, **params: Any) -> Job:
    held = {"held_id": lease.job_id, "held_owner": lease.owner, "held_attempt": lease.attempt}
    job: Job | None = session.scalars(statement, {**held, **params}).one_or_none()
    if job is None:
        raise LeaseLost(lease.job_id, lease.owner, lease.attempt)
    return job


def heartbeat(
    session: Session,
    lease: Lease,
    *,
    lease_seconds: float,
    progress: dict[str, Any] | None,
    epochs: Sequence[dict[str, Any]] = (),
    waiting: str | None = None,
) -> bool:
    """Renew the lease and store progress and what the job waits for (None: nothing);
    returns whether cancellation was requested.

    `epochs` are the history rows of epochs finished since the last heartbeat: each
    becomes an "epoch" event, then `progress` a "progress" event. Written only after
    the UPDATE succeeded, so a lost lease records nothing.
    """
    if progress is None:
        job = _run(session, HEARTBEAT, lease, lease_seconds=lease_seconds, new_waiting=waiting)
    else:
        job = _run(
            session,
            HEARTBEAT_WITH_PROGRESS,
            lease,
            lease_seconds=lease_seconds,
            new_waiting=waiting,
            new_progress=progress,
            new_epoch=_epochs_done(progress),
        )
    for row in epochs:
        record_event(session, lease.job_id, "epoch", row)
    if progress is not None:
        record_event(session, lease.job_id, "progress", progress)
    return job.cancel_requested


def _epochs_done(progress: dict[str, Any]) -> int:
    """progress.epoch, the epochs completed and checkpointed (workers.training.loop), or 0."""
    epoch = progress.get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else 0


def finish(session: Session, lease: Lease, *, result: dict[str, Any]) -> Job:
    return _with_status(session, _run(session, FINISH, lease, new_result=result))


def mark_cancelled(session: Session, lease: Lease) -> Job:
    """The worker stopped a job whose cancellation was requested."""
    return _with_status(session, _run(session, MARK_CANCELLED, lease))


def fail(
    session: Session, lease: Lease, *, error: str, retryable: bool, backoff_seconds: float
) -> Job:
    """Fail this attempt: retry after a backoff while attempts remain, else fail the job.
    A failure the worker reports always counts against max_attempts."""
    if retryable and lease.counted < lease.max_attempts:
        delay = min(backoff_seconds * 2 ** (lease.counted - 1), MAX_BACKOFF_SECONDS)
        return _with_status(session, _run(session, RETRY, lease, new_error=error, delay=delay))
    if retryable:
        error = f"{error} (attempt {lease.counted} of {lease.max_attempts}; no retries left)"
    return _with_status(session, _run(session, FAIL, lease, new_error=error))


def release(session: Session, lease: Lease) -> Job:
    """Give a job back to the queue untouched (worker shutting down): it resumes elsewhere."""
    return _with_status(session, _run(session, RELEASE, lease))


def release_forgiven(session: Session, lease: Lease, *, waiting: str) -> Job:
    """Give back a job whose worker stops while it waits for the artifact store (worker
    shutting down): unlike `release`, this attempt does not count against max_attempts,
    since a store outage is not the job's fault. `waiting` stays on the job, saying
    so, until a worker claims it again."""
    return _with_status(session, _run(session, RELEASE_FORGIVEN, lease, new_waiting=waiting))


def _with_status(session: Session, job: Job) -> Job:
    """Record the status `job` was just moved to, in the transaction that moved it."""
    record_status(session, job)
    return job
