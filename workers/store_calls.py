"""A worker's calls to the artifact store: a job's inputs before it trains, each
checkpoint as it is written, the results before the job is marked succeeded; and how an
outage of the store is ridden out (DESIGN.md section 2, "Store outage").

A store that does not answer (StoreUnavailable: refused, timed out, a 5xx) is an
outage, not the job's fault. The worker keeps the job it holds (its heartbeat keeps the
lease), says in the job's `waiting` what it waits for, and tries again after 1, 2, 4 ...
s (at most MAX_BACKOFF_SECONDS) until the store answers: the attempt goes on, none is
spent. What was trained stays on this host's disk meanwhile and is published once the
store is back. Should the job have to stop while it waits, `until_stored` raises
StoppedWaiting and the worker ends the wait as the job's state says: given back
without counting the attempt (shutdown), cancelled, or dropped (lease lost).

Checkpoints are not waited for: training goes on without them (CheckpointMirror).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from counterweight.service.artifacts import CARD, CHECKPOINT, MODEL, job_key, plot_name
from counterweight.service.data.uploads import upload_key, upload_path
from counterweight.service.errors import StorageError, StoreUnavailable
from counterweight.service.spec import JobSpec
from counterweight.service.storage import Storage
from counterweight.service.storage.jobs import fetch, upload
from counterweight.workers.heartbeat import Heartbeat

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0

T = TypeVar("T")


def backoff(failures: int) -> float:
    """Seconds to wait after `failures` calls in a row found the store unreachable."""
    return min(MAX_BACKOFF_SECONDS, 2.0 ** (failures - 1))


class StoppedWaiting(Exception):
    """The job must stop (shutdown, cancel, lease lost) while it waits for the store."""

    def __init__(self, waiting: str) -> None:
        super().__init__(waiting)
        self.waiting = waiting  # what the job was waiting for, as its `waiting` said


def until_stored(beat: Heartbeat, doing: str, call: Callable[[], T]) -> T:
    """`call()`, a call to the store made to `doing` ("store the results"), made again
    while the store is unreachable; StoppedWaiting if the job must stop meanwhile. Any
    other StorageError (no such bucket, no permission) is raised at once."""
    failures, since = 0, None
    while True:
        try:
            with beat.store_call(doing):
                result = call()
        except StoreUnavailable as exc:
            since = since or datetime.now(UTC)  # the first failure's
            failures += 1
            delay = backoff(failures)
            # Said to API clients: no endpoint, bucket or path (the log has the error).
            waiting = (
                f"the artifact store is unreachable (since {since:%H:%M:%S} UTC, {failures} "
                f"tries): waiting to {doing}; this uses none of the job's attempts"
            )
            beat.set_waiting(waiting)
            log.warning(
                "job=%s cannot %s: %s; trying again in %.0f s", beat.job_id, doing, exc, delay
            )
            if beat.wait_unless_stopped(delay):
                raise StoppedWaiting(waiting) from exc
            continue
        if failures:
            log.info("job=%s the artifact store answers again (%s)", beat.job_id, doing)
            beat.set_waiting(None)
        return result


class CheckpointMirror:
    """Sends each checkpoint to the store as it is written (workers.training.checkpoint
    `mirrored`), without waiting for the store: a checkpoint that cannot be stored is
    logged and training goes on; a host that resumes the job meanwhile starts from the
    previous one (work redone, not lost). After the store was found unreachable, the
    next checkpoints are not tried until the backoff passed, and at least twice as long
    as the failed try took: each try of a store that does not answer stalls training
    for the S3 client's timeouts, so training goes on at least two thirds of the time.
    The one written as the job stops (shutdown, cancel) is always tried."""

    def __init__(self, storage: Storage, job_id: str, beat: Heartbeat) -> None:
        self._storage = storage
        self._job_id = job_id
        self._beat = beat
        self._failures = 0
        self._next_try = 0.0  # monotonic

    def __call__(self, path: Path) -> None:
        if time.monotonic() < self._next_try and not self._beat.should_stop():
            log.info("job=%s checkpoint not stored: the artifact store is away", self._job_id)
            return
        started = time.monotonic()
        try:
            with self._beat.store_call("store the checkpoint"):
                self._storage.upload(job_key(self._job_id, CHECKPOINT), path)
        except StoreUnavailable as exc:
            self._failures += 1
            now = time.monotonic()
            delay = max(backoff(self._failures), 2 * (now - started))
            self._next_try = now + delay
            log.warning(
                "job=%s checkpoint not stored: %s; training goes on, the next checkpoint "
                "is tried in %.0f s",
                self._job_id,
                exc,
                delay,
            )
        except StorageError as exc:
            log.warning("job=%s checkpoint not stored: %s", self._job_id, exc)
        else:
            self._failures = 0


def fetch_inputs(storage: Storage, home: Path, job_id: str, spec: JobSpec, beat: Heartbeat) -> None:
    """Bring from the store what this host may lack: the uploaded dataset (cached: an
    upload never changes) and the job's latest checkpoint, which another host may have
    written since this one last ran the job. Waits while the store is away."""
    dataset_id = spec.dataset.id
    if dataset_id is not None and not upload_path(home, dataset_id).is_file():
        # Not a key (so no upload's id): the dataset loader reports the bad id.
        with suppress(ValueError):
            get = partial(storage.download, upload_key(dataset_id), upload_path(home, dataset_id))
            until_stored(beat, "fetch the uploaded dataset", get)
    until_stored(
        beat, "fetch the job's checkpoint", partial(fetch, storage, home, job_id, CHECKPOINT)
    )


def publish(storage: Storage, home: Path, job_id: str, plots: list[str], beat: Heartbeat) -> None:
    """The results the API serves, weights before card as on disk: a card in the store
    means its weights are there. Waits while the store is away: the trained model stays
    on this host's disk until it is stored."""
    for name in [MODEL, CARD, *map(plot_name, plots)]:
        until_stored(beat, "store the results", partial(upload, storage, home, job_id, name))
