"""The thread that keeps a running job's lease alive and carries news both ways.

Out: the latest progress, written with each heartbeat. In: whether the job was
cancelled, and whether this worker lost the lease. Training polls `should_stop`
between batches, so either reaches it within one heartbeat interval.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import transaction
from service.queue.errors import LeaseLost
from service.queue.lease import Lease, heartbeat

log = logging.getLogger(__name__)


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
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()

    def set_progress(self, progress: dict[str, Any]) -> None:
        with self._lock:
            self._progress = progress

    def should_stop(self) -> bool:
        return self.cancel_requested.is_set() or self.lease_lost.is_set() or self._shutdown.is_set()

    def run(self) -> None:
        while not self._done.wait(self._interval) and self._beat():
            pass

    def _beat(self) -> bool:
        """One heartbeat carrying the pending progress; False once the lease is lost."""
        with self._lock:
            progress, self._progress = self._progress, None
        try:
            with transaction(self._sessions) as session:
                cancelled = heartbeat(
                    session, self._lease, lease_seconds=self._lease_seconds, progress=progress
                )
        except LeaseLost as exc:
            log.warning("job=%s %s; stopping it", self._lease.job_id, exc)
            self.lease_lost.set()
            return False
        except SQLAlchemyError as exc:
            # The database may be restarting; keep trying until the lease would lapse.
            log.warning("job=%s heartbeat failed: %s", self._lease.job_id, exc)
            with self._lock:
                self._progress = self._progress or progress
            return True
        if cancelled and not self.cancel_requested.is_set():
            log.info("job=%s cancellation requested", self._lease.job_id)
            self.cancel_requested.set()
        return True

    def stop(self) -> None:
        """End the thread, then write the last progress so the job's record is current."""
        self._done.set()
        self.join()
        if self._progress is not None and not self.lease_lost.is_set():
            self._beat()
