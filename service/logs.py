"""Log lines as text or as one JSON object a line, with the job id on a worker's lines.

`COUNTERWEIGHT_LOG_FORMAT=json` makes every process (API, worker, serve) write
JSON lines that a log shipper can index without parsing; `text` (the default)
is for people. While a worker works on a job (`with job_logging(job_id):`),
every line it writes carries `job_id`, whichever module or thread wrote it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")

# Not a contextvar: a worker runs one job at a time, and the lines about it come
# from several threads (the heartbeat's among them), which a contextvar set in the
# main thread would not reach. In the API no job is ever set.
_current_job: str | None = None


@contextmanager
def job_logging(job_id: str) -> Iterator[None]:
    """Stamp every log line written inside the block with `job_id`."""
    global _current_job
    previous, _current_job = _current_job, job_id
    try:
        yield
    finally:
        _current_job = previous


class JobIdFilter(logging.Filter):
    """Puts the current job's id on each record as `job_id` (None outside a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = _current_job
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, pid, message,
    job_id when there is one, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            line["job_id"] = job_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """The plain format, with `job=<id>` after the level on a job's lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        job_id = getattr(record, "job_id", None)
        if job_id is None or f"job={job_id}" in record.getMessage():
            return text
        return f"{text} [job={job_id}]"


def end_of_log(job_id: str, attempt: int) -> str:
    """The message of the last line of an attempt's log (workers.job_logs): a reader that
    sees it knows the attempt's log is whole."""
    return f"job={job_id} attempt {attempt}: end of log"


def configure_logging(level: str | None = None, log_format: str | None = None) -> None:
    """Set up the root logger from the arguments or COUNTERWEIGHT_LOG_LEVEL / _LOG_FORMAT.
    (`counterweight api` runs uvicorn without its own logging config, so that its
    access and error lines come out through this handler, as JSON in JSON mode.)"""
    level = level or os.environ.get("COUNTERWEIGHT_LOG_LEVEL", "INFO")
    log_format = (log_format or os.environ.get("COUNTERWEIGHT_LOG_FORMAT", "text")).lower()
    if log_format not in LOG_FORMATS:
        raise ValueError(f"COUNTERWEIGHT_LOG_FORMAT is {log_format!r}; expected text or json")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(JobIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request drowns the bar
