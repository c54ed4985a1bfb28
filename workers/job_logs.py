"""Each attempt's log lines in the artifact store, so that GET /v1/jobs/{id}/logs serves
them from any host (DESIGN.md section 3, "Logs").

While a worker runs an attempt, every line stamped with the job's id (service.logs),
whichever thread wrote it, also goes to <home>/artifacts/jobs/<id>/logs/attempt-<n>.log,
in the text format whatever COUNTERWEIGHT_LOG_FORMAT says. A thread copies the file to
the store every COUNTERWEIGHT_LOG_UPLOAD_SECONDS when it grew, and the attempt's end
writes a last line (service.logs.end_of_log) and copies it once more (three tries, on
that thread; the worker waits for them at most FINAL_WAIT_SECONDS). A store that does
not answer costs log lines only: never the job.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from types import TracebackType

from counterweight.service.artifacts import job_key, log_name
from counterweight.service.errors import StorageError
from counterweight.service.logs import JobIdFilter, TextFormatter, end_of_log
from counterweight.service.storage import Storage

log = logging.getLogger(__name__)

FINAL_UPLOAD_TRIES = 3
FINAL_WAIT_SECONDS = 10.0


class ShippedLog:
    """`with ShippedLog(...):` around one attempt of a job."""

    def __init__(
        self, storage: Storage, home: Path, job_id: str, attempt: int, interval: float
    ) -> None:
        self.storage = storage
        self.job_id = job_id
        self.attempt = attempt
        self.interval = interval
        self.key = job_key(job_id, log_name(attempt))
        self.path = home / self.key
        self._handler: logging.FileHandler | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ship, name="job-log", daemon=True)
        self._shipped_size = -1

    def __enter__(self) -> ShippedLog:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(self.path, encoding="utf-8")
        except OSError as exc:
            # Log lines, never the job: it runs (and fails with its own error if it cannot
            # write to the home either); its lines still go to the worker's own log.
            log.warning(
                "job=%s: its log is not kept for GET /v1/jobs/{id}/logs: %s", self.job_id, exc
            )
            return self
        handler.setFormatter(TextFormatter())
        handler.addFilter(JobIdFilter())
        handler.addFilter(lambda record: getattr(record, "job_id", None) == self.job_id)
        logging.getLogger().addHandler(handler)
        self._handler = handler
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handler is None:  # the log file could not be opened
            return
        log.info("%s", end_of_log(self.job_id, self.attempt))
        logging.getLogger().removeHandler(self._handler)
        self._handler.close()
        self._stop.set()
        # The last copy is waited for a while, not for as long as a hung store takes
        # (the S3 client's timeouts, each try): the worker has jobs to run.
        self._thread.join(timeout=FINAL_WAIT_SECONDS)

    def _ship(self) -> None:
        while not self._stop.wait(self.interval):
            self._upload()
        for attempt in range(1, FINAL_UPLOAD_TRIES + 1):
            if self._upload() or attempt == FINAL_UPLOAD_TRIES:
                return
            time.sleep(attempt)

    def _upload(self) -> bool:
        """Copy the file to the store if it grew since the last copy; False if that failed."""
        try:
            size = self.path.stat().st_size
            if size != self._shipped_size:
                self.storage.upload(self.key, self.path)
                self._shipped_size = size
        except (StorageError, OSError) as exc:
            # Debug only: a warning would go into the very log it is about, each try.
            logging.getLogger(__name__).debug("log of job %s not shipped: %s", self.job_id, exc)
            return False
        return True
