"""Removing files from the artifact store, and measuring what each tenant keeps there.

- A job's files (model, card, plots, checkpoint, logs: everything under
  artifacts/jobs/<id>/, in the store and this host's copies) go once the job is deleted
  and has ended, and with COUNTERWEIGHT_RETENTION_DAYS once it ended that long ago.
  Never a queued or running job's: its checkpoint is how it resumes.
- An upload's file goes with DELETE /v1/datasets/{id} (remove_upload).
- Every pass also lists the store and records each tenant's bytes and files
  (service.store.lifecycle.record_usage), which GET /metrics shows.

The janitor runs in every API process, every COUNTERWEIGHT_JANITOR_SECONDS, on a thread
of its own. Several processes may run a pass at once: removing files is idempotent and
the database's marks are conditional, so the worst case is work done twice.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import defaultdict
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.api.tasks import stopped_within
from counterweight.service.artifacts import job_dir
from counterweight.service.data.uploads import upload_key, upload_path
from counterweight.service.errors import StorageError
from counterweight.service.settings import Settings
from counterweight.service.storage import storage_for
from counterweight.service.store.engine import transaction
from counterweight.service.store.lifecycle import jobs_to_clear, mark_cleared, owners, record_usage

log = logging.getLogger(__name__)

JOBS_A_PASS = 200
NO_OWNER = "-"  # files of a job or upload the database does not know (left behind)


def remove_job_files(settings: Settings, job_id: str) -> int:
    """Every file of the job: in the store, and this host's copies. The number removed
    from the store; StorageError if the store would not."""
    removed = storage_for(settings).delete_folder(job_dir(Path("artifacts"), job_id).as_posix())
    shutil.rmtree(job_dir(settings.artifacts_dir, job_id), ignore_errors=True)
    return removed


def remove_upload(settings: Settings, dataset_id: str) -> None:
    """An upload's file, in the store and this host's copy; StorageError if the store
    would not."""
    storage_for(settings).delete(upload_key(dataset_id))
    upload_path(settings.home, dataset_id).unlink(missing_ok=True)


def clear_jobs(
    sessions: sessionmaker[Session], settings: Settings, job_id: str | None = None
) -> list[str]:
    """Remove the files of the jobs that are due (deleted, or past retention; only
    `job_id`, if given); returns their ids. A store that fails ends the pass: the rest
    wait for the next."""
    with transaction(sessions) as session:
        due = jobs_to_clear(
            session,
            retention_days=settings.retention_days,
            settle_seconds=settings.lease_seconds,
            limit=JOBS_A_PASS,
            job_id=job_id,
        )
    cleared = []
    for job_id in due:
        try:
            removed = remove_job_files(settings, job_id)
        except StorageError as exc:
            log.warning("job=%s files not removed yet: %s", job_id, exc)
            break
        log.info("job=%s files removed from the artifact store (%d)", job_id, removed)
        cleared.append(job_id)
    with transaction(sessions) as session:
        mark_cleared(session, cleared)
    return cleared


def measure_usage(
    sessions: sessionmaker[Session], settings: Settings
) -> dict[str, tuple[int, int]]:
    """Each tenant's (bytes, files) in the store, recorded for GET /metrics."""
    storage = storage_for(settings)
    by_job: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_upload: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key, size in storage.list_files("artifacts/jobs"):
        _add(by_job[key.split("/")[2]], size)
    for key, size in storage.list_files("datasets"):
        _add(by_upload[key.split("/")[1].removesuffix(".npz")], size)
    with transaction(sessions) as session:
        tenants = owners(session, set(by_job), set(by_upload))
        usage: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for owned in (by_job, by_upload):
            for object_id, (size, files) in owned.items():
                total = usage[tenants.get(object_id, NO_OWNER)]
                total[0] += size
                total[1] += files
        measured = {tenant: (size, files) for tenant, (size, files) in usage.items()}
        record_usage(session, measured)
    return measured


def _add(total: list[int], size: int) -> None:
    total[0] += size
    total[1] += 1


def run_pass(sessions: sessionmaker[Session], settings: Settings) -> None:
    """One pass; what fails is logged and tried again at the next."""
    try:
        clear_jobs(sessions, settings)
        measure_usage(sessions, settings)
    except (StorageError, SQLAlchemyError) as exc:
        log.warning("janitor: pass not finished: %s", exc)
    except Exception:  # a bug in one pass must not end the janitor for the process
        log.exception("janitor: pass failed")


class Janitor:
    """The API process's janitor task (started and stopped with the app)."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="janitor")

    async def stop(self) -> None:
        """Stop after the pass in flight, if any (service.api.tasks says why)."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.to_thread(run_pass, self._sessions, self._settings)
            if await stopped_within(self._stopping, self._settings.janitor_seconds):
                return
