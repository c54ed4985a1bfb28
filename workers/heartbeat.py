"""The thread that keeps a running job's lease alive and carries news both ways.

Out: the latest progress, written with each heartbeat, and the history row of
every epoch finished since the last one (progress coalesces, epochs must not:
each becomes an event that subscribers see); and what the job waits for, if
anything: the artifact store, unreachable (`set_waiting`) or silent for
SLOW_STORE_SECONDS during a call (`store_call`). In: whether the job was cancelled,
and whether this worker lost the lease. Training polls `should_stop`
between batches, so either reaches it within one heartbeat interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.errors import LeaseLost
from counterweight.service.store.availability import describe_failure
from counterweight.service.store.engine import transaction
from counterweight.service.store.queue import workers
from counterweight.service.store.queue.lease import Lease, heartbeat

log = logging.getLogger(__name__)

# A call to the artifact store that has not ended after this long shows in the job's
# `waiting`: a store that accepts connections and never answers stalls the job silently.
SLOW_STORE_SECONDS = 5.0


class Heartbeat(threading.Thread):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        lease: Lease,
        *,
        interval: float,
        lease_seconds: float,
        shutdown: threading.Event,
    ) -> None:
        super().__init__(name=f"heartbeat-{lease.job_id}", daemon=True)
        self._sessions = sessions
        self._lease = lease
        self._interval = interval
        self._lease_seconds = lease_seconds
        self._shutdown = shutdown
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._progress: dict[str, Any] | None = None
        self._epochs: list[dict[str, Any]] = []  # finished epochs' rows not yet written
        self._waiting: str | None = None
        self._store_call: tuple[str, float] | None = None  # (what for, since: monotonic)
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()

    def set_progress(self, progress: dict[str, Any]) -> None:
        """Take a report (workers.training.loop.Progress as a dict) for the next beat."""
        progress = dict(progress)
        row = progress.pop("history_row", None)
        with self._lock:
            self._progress = progress
            if row is not None:
                self._epochs.append(row)

    @property
    def job_id(self) -> str:
        return self._lease.job_id

    def set_waiting(self, waiting: str | None) -> None:
        """What the job waits for, written with each beat from the next on; None: nothing."""
        with self._lock:
            self._waiting = waiting

    @contextmanager
    def store_call(self, doing: str) -> Iterator[None]:
        """Around a call to the artifact store made to `doing` ("store the checkpoint"):
        should it go unanswered for SLOW_STORE_SECONDS, the job shows it waits."""
        with self._lock:
            self._store_call = (doing, time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                self._store_call = None

    def _waiting_now(self) -> str | None:
        with self._lock:
            waiting, call = self._waiting, self._store_call
        if waiting is None and call is not None:
            doing, since = call
            taken = time.monotonic() - since
            if taken >= SLOW_STORE_SECONDS:
                # "so far": a large file streams this long too; a hung store, for ever.
                waiting = (
                    f"a call to the artifact store has taken {taken:.0f} s so far: "
                    f"waiting to {doing}"
                )
        return waiting

    def should_stop(self) -> bool:
        return self.cancel_requested.is_set() or self.lease_lost.is_set() or self._shutdown.is_set()

    def wait_unless_stopped(self, seconds: float) -> bool:
        """Sleep `seconds`, or less if the job must stop meanwhile; whether it must."""
        deadline = time.monotonic() + seconds
        while not self.should_stop():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # The flags are set by this thread's beats, the shutdown by a signal handler.
            self._shutdown.wait(min(left, self._interval))
        return True

    def run(self) -> None:
        while not self._done.wait(self._interval) and self._beat():
            pass

    def _beat(self) -> bool:
        """One heartbeat carrying the pending progress and epochs; False once the lease is lost."""
        with self._lock:
            progress, self._progress = self._progress, None
            epochs, self._epochs = self._epochs, []
        try:
            with transaction(self._sessions) as session:
                cancelled = heartbeat(
                    session,
                    self._lease,
                    lease_seconds=self._lease_seconds,
                    progress=progress,
                    epochs=epochs,
                    waiting=self._waiting_now(),
                )
        except LeaseLost as exc:
            log.warning("job=%s %s; stopping it", self._lease.job_id, exc)
            self.lease_lost.set()
            return False
        except SQLAlchemyError as exc:
            # The database may be restarting; keep trying until the lease would lapse.
            log.warning("job=%s heartbeat failed: %s", self._lease.job_id, describe_failure(exc))
            with self._lock:
                self._progress = self._progress or progress
                # Rolled back: these rows come first again, before any newer epoch.
                self._epochs = epochs + self._epochs
            return True
        if cancelled and not self.cancel_requested.is_set():
            log.info("job=%s cancellation requested", self._lease.job_id)
            self.cancel_requested.set()
        return True

    def stop(self) -> None:
        """End the thread, then write the last progress and epochs so the job's record
        (and its event stream, before the outcome's status event) is current."""
        self._done.set()
        self.join()
        pending = self._progress is not None or bool(self._epochs)
        if pending and not self.lease_lost.is_set():
            self._beat()


class Presence(threading.Thread):
    """Keeps this worker's row in the registry (service.store.queue.workers) fresh, with the
    job it is running; `set_job` writes a change at once rather than at the next beat."""

    def __init__(self, sessions: sessionmaker[Session], worker_id: str, *, interval: float) -> None:
        super().__init__(name=f"presence-{worker_id}", daemon=True)
        self._sessions = sessions
        self._worker_id = worker_id
        self._interval = interval
        self._job_id: str | None = None
        self._wake = threading.Event()
        self._done = threading.Event()

    def set_job(self, job_id: str | None) -> None:
        self._job_id = job_id
        self._wake.set()

    def run(self) -> None:
        failing = False
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._done.is_set():
                return
            try:
                with transaction(self._sessions) as session:
                    workers.beat(session, self._worker_id, self._job_id)
            except SQLAlchemyError as exc:
                # Only the listing goes stale meanwhile; the job's own lease is renewed apart.
                # Said once an outage, not every beat: the worker's loop reports it too.
                if not failing:
                    log.warning(
                        "worker %s: registry heartbeat failed: %s; retrying quietly",
                        self._worker_id,
                        describe_failure(exc),
                    )
                failing = True
                continue
            if failing:
                log.info("worker %s: registry heartbeat works again", self._worker_id)
            failing = False

    def stop(self) -> None:
        self._done.set()
        self._wake.set()
        if self.is_alive():
            self.join()
