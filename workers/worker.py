"""The worker process: claim a job, train it, report, repeat (DESIGN.md section 2).

One job at a time per process; run one process per GPU. A failure inside a job
fails or retries that job and never ends the worker. SIGTERM (or SIGINT) makes
the worker stop claiming, checkpoint the running job, put it back on the queue
and exit.

Workers on many hosts share only the database and the artifact store
(service.storage): a job's uploaded dataset and latest checkpoint are fetched
from the store into this host's home before it trains, each checkpoint goes to
the store as it is written, and the model, card and plots before the job is
marked succeeded (workers.store_calls). While the store does not answer, the
worker keeps the job and waits, spending none of the job's attempts. Each worker
registers itself (GET /v1/workers) under a fresh id, which is also the owner of the
jobs it leases, with the CUDA devices it has: it claims only jobs whose train.device
it can run (service.store.queue.devices).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from counterweight.service.artifacts import job_dir
from counterweight.service.data.paths import without_roots
from counterweight.service.errors import DatasetError, LeaseLost, StorageError
from counterweight.service.logs import job_logging
from counterweight.service.settings import Settings
from counterweight.service.spec import JobSpec
from counterweight.service.storage import storage_for
from counterweight.service.store.availability import describe_failure
from counterweight.service.store.engine import (
    make_engine,
    make_session_factory,
    transaction,
    upgrade,
)
from counterweight.service.store.models import Job, JobStatus, new_job_id
from counterweight.service.store.queue.cancel import settle_unless_cancelled
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.lease import (
    Lease,
    fail,
    finish,
    mark_cancelled,
    release,
    release_forgiven,
)
from counterweight.service.store.queue.notify import JobWaiter
from counterweight.service.store.queue.sweeper import sweep_expired
from counterweight.service.store.queue.workers import mark_stopped, register
from counterweight.workers.heartbeat import Heartbeat, Presence
from counterweight.workers.job_logs import ShippedLog
from counterweight.workers.plots import render_plots
from counterweight.workers.store_calls import (
    CheckpointMirror,
    StoppedWaiting,
    fetch_inputs,
    publish,
)
from counterweight.workers.training.checkpoint import mirrored
from counterweight.workers.training.engine import train_job
from counterweight.workers.training.loop import Progress, TrainingDiverged, TrainingResult

log = logging.getLogger(__name__)

# After database calls fail n times in a row the worker waits 2^(n-1) s, at most this:
# an outage that lasts (a read-only file system, a failover) costs a log line a while.
MAX_DATABASE_BACKOFF_SECONDS = 30.0


class JobInputError(ValueError):
    """The job cannot run as specified (bad spec, no such device): retrying won't help."""


def resolve_device(worker_device: str, requested: str) -> str:
    """The device a job runs on: the worker's own unless the spec insists on the CPU."""
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda") and not worker_device.startswith("cuda"):
        raise JobInputError(
            f"train.device is {requested!r} but this worker runs on {worker_device!r}"
        )
    if requested.startswith("cuda:"):
        return requested
    return worker_device


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cuda_devices(device: str) -> int:
    """What a worker on `device` advertises: the CUDA devices torch sees, or 0 on the CPU
    (a worker told to train on the CPU runs no cuda job, whatever the host has)."""
    return torch.cuda.device_count() if device.startswith("cuda") else 0


def describe_device(device: str) -> str:
    """The device as GET /v1/workers shows it: "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"."""
    if not device.startswith("cuda"):
        return device
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


class Worker:
    def __init__(self, settings: Settings, *, device: str | None = None) -> None:
        self.settings = settings
        self.device = device or default_device()
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"--device {self.device} given but CUDA is not available")
        self.id = new_job_id()  # fresh on every start; the registry row says where it runs
        self.engine = make_engine(
            settings.resolved_database_url,
            sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        self.sessions = make_session_factory(self.engine)
        self.storage = storage_for(settings)
        self.cuda_devices = cuda_devices(self.device)
        self.presence = Presence(self.sessions, self.id, interval=settings.heartbeat_seconds)
        self.shutdown = threading.Event()
        self._waiter = JobWaiter(settings.resolved_database_url, self.shutdown)
        self._next_sweep = 0.0

    def install_signal_handlers(self) -> None:
        def _stop(signum: int, frame: FrameType | None) -> None:
            log.info("worker %s: signal %d, finishing up", self.id, signum)
            self.shutdown.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def run(self) -> None:
        hostname = socket.gethostname()
        with transaction(self.sessions) as session:
            register(
                session,
                self.id,
                hostname=hostname,
                pid=os.getpid(),
                device=describe_device(self.device),
                cuda_devices=self.cuda_devices,
            )
        log.info("worker %s started on %s, host %s", self.id, self.device, hostname)
        self.presence.start()
        failures = 0  # database calls failed in a row
        try:
            while not self.shutdown.is_set():
                try:
                    self._sweep_if_due()
                    claimed = self.run_one()
                except SQLAlchemyError as exc:
                    failures += 1
                    delay = min(MAX_DATABASE_BACKOFF_SECONDS, 2.0 ** (failures - 1))
                    log.warning(
                        "worker %s: %s; retrying in %.0f s", self.id, describe_failure(exc), delay
                    )
                    self.shutdown.wait(delay)
                    continue
                if failures:
                    log.info("worker %s: the database works again", self.id)
                    failures = 0
                if not claimed:
                    self._waiter.wait(self.settings.resolved_poll_seconds)
        finally:
            self.presence.stop()
            self._unregister()
            self._waiter.close()
            self.engine.dispose()
            log.info("worker %s stopped", self.id)

    def _unregister(self) -> None:
        try:
            with transaction(self.sessions) as session:
                mark_stopped(session, self.id)
        except SQLAlchemyError as exc:
            # Harmless: the registry drops a silent worker once its heartbeat is stale.
            log.warning("worker %s: not marked stopped (%s)", self.id, describe_failure(exc))

    def _sweep_if_due(self) -> None:
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + self.settings.sweep_seconds
        with transaction(self.sessions) as session:
            swept = sweep_expired(session)
        # Told once committed: a sweep whose commit fails (a read-only file system fails
        # only there) re-queued nothing, however often it is tried.
        for job_id, status in swept:
            log.warning("job=%s lease expired; now %s", job_id, status.value)

    def run_one(self) -> bool:
        """Claim and run one job; False if the queue had none."""
        with transaction(self.sessions) as session:
            job = claim(
                session,
                worker_id=self.id,
                lease_seconds=self.settings.lease_seconds,
                cuda_devices=self.cuda_devices,
            )
        if job is None:
            return False
        shipped = ShippedLog(
            self.storage, self.settings.home, job.id, job.attempt, self.settings.log_upload_seconds
        )
        with job_logging(job.id), shipped:  # every line about this job carries its id
            self._run(job)
        return True

    def _run(self, job: Job) -> None:
        lease = Lease.of(job)
        log.info("job=%s attempt %d/%d started", job.id, job.attempt, job.max_attempts)
        beat = Heartbeat(
            self.sessions,
            lease,
            interval=self.settings.heartbeat_seconds,
            lease_seconds=self.settings.lease_seconds,
            shutdown=self.shutdown,
        )
        beat.start()
        self.presence.set_job(job.id)
        try:
            record_outcome = self._train(job, lease, beat)
        finally:
            beat.stop()
        record_outcome()
        self.presence.set_job(None)

    def _train(self, job: Job, lease: Lease, beat: Heartbeat) -> Callable[[], object]:
        """Run the training; returns how to record its outcome once the heartbeat stopped."""

        def report(progress: Progress) -> None:
            beat.set_progress(dataclasses.asdict(progress))

        workdir = job_dir(self.settings.artifacts_dir, job.id)
        try:
            spec = JobSpec.model_validate(job.spec)
            device = resolve_device(self.device, spec.train.device)
            fetch_inputs(self.storage, self.settings.home, job.id, spec, beat)
            with mirrored(workdir, CheckpointMirror(self.storage, job.id, beat)):
                result = train_job(
                    spec,
                    workdir,
                    device=device,
                    data_root=self.settings.resolved_data_root,
                    home=self.settings.home,
                    report=report,
                    should_stop=beat.should_stop,
                )
        except StoppedWaiting as exc:
            return self._stopped(lease, beat, waiting=exc.waiting)
        except (DatasetError, JobInputError, ValidationError, TrainingDiverged) as exc:
            log.warning("job=%s cannot run: %s", job.id, exc)
            return partial(self._fail, lease, str(exc), retryable=False)
        except Exception as exc:  # one job's crash must not end the worker
            log.error(
                "job=%s attempt %d crashed:\n%s", job.id, lease.attempt, traceback.format_exc()
            )
            return partial(self._fail, lease, f"{type(exc).__name__}: {exc}", retryable=True)
        if result is not None:
            # Rendered and stored while the heartbeat still holds the lease.
            plots = result.metrics["plots"] = render_plots_safely(job.id, result, workdir)
            if beat.cancel_requested.is_set():
                # A cancel wins until the success is recorded (DESIGN.md section 2):
                # nothing is published for a job that will end cancelled.
                log.info("job=%s cancelled after training; results not published", job.id)
                return partial(self._settle, lease, mark_cancelled)
            try:
                publish(self.storage, self.settings.home, job.id, plots, beat)
            except StoppedWaiting as exc:
                return self._stopped(lease, beat, waiting=exc.waiting)
            except StorageError as exc:
                log.error("job=%s results not stored: %s", job.id, exc)
                return partial(self._fail, lease, str(exc), retryable=True)
            return partial(self._record_success, lease, result.metrics)
        return self._stopped(lease, beat)

    def _stopped(
        self, lease: Lease, beat: Heartbeat, *, waiting: str | None = None
    ) -> Callable[[], object]:
        """How to record a job that stopped before its end: lease lost, cancelled, or
        the worker shutting down; `waiting` if it stopped while waiting for the store."""
        job_id = lease.job_id
        if beat.lease_lost.is_set():
            log.warning("job=%s abandoned: lease lost", job_id)
            return lambda: None
        if beat.cancel_requested.is_set():
            log.info("job=%s cancelled", job_id)
            return partial(self._settle, lease, mark_cancelled)
        if waiting is not None:
            # An outage is not the job's fault: unlike any other release, not counted.
            log.info("job=%s returned to the queue while the store is away", job_id)
            return partial(self._settle, lease, release_forgiven, waiting=waiting)
        log.info("job=%s checkpointed; returning it to the queue", job_id)
        return partial(self._settle, lease, release)

    def _record_success(self, lease: Lease, result: dict[str, Any]) -> None:
        job = self._settle(lease, finish, result=result)
        if job is not None and job.status == JobStatus.cancelled:
            # The cancel came while the results were being published: they stay in the
            # store, unserved (the API serves a job's files only once it has succeeded).
            log.info("job=%s cancelled after training, before its success was recorded", job.id)
        elif job is not None:
            log.info("job=%s succeeded", job.id)

    def _fail(self, lease: Lease, error: str, *, retryable: bool) -> None:
        # The API serves the error: files named relative to the data root or the home, as
        # everywhere in its answers (service.data.paths); the log keeps them absolute.
        settings = self.settings
        roots = (settings.resolved_data_root, settings.resolved_storage_dir, settings.home)
        error = without_roots(error, *roots)
        backoff = self.settings.retry_backoff_seconds
        self._settle(lease, fail, error=error, retryable=retryable, backoff_seconds=backoff)

    def _settle(self, lease: Lease, action: Callable[..., Job], **kwargs: Any) -> Job | None:
        """Record a job's outcome, retrying while the database is unreachable for as long
        as the lease would last; a worker that lost the lease records nothing (None). A job
        whose cancel was requested ends cancelled whatever the outcome (DESIGN.md section 2)."""
        deadline = time.monotonic() + self.settings.lease_seconds
        while True:
            try:
                with transaction(self.sessions) as session:
                    return settle_unless_cancelled(session, lease, action, **kwargs)
            except LeaseLost as exc:
                log.warning("job=%s outcome not recorded: %s", lease.job_id, exc)
                return None
            except SQLAlchemyError as exc:
                if time.monotonic() > deadline:
                    raise  # the sweeper re-queues it; the checkpoint makes the rerun short
                log.warning(
                    "job=%s recording the outcome failed (%s); retrying",
                    lease.job_id,
                    describe_failure(exc),
                )
                time.sleep(1.0)


def render_plots_safely(job_id: str, result: TrainingResult, workdir: Path) -> list[str]:
    """The job's plots, or none if drawing them failed: a plot is not worth a trained model."""
    try:
        return render_plots(result.metrics, result.card["class_names"], workdir)
    except Exception:
        log.error("job=%s plots not rendered:\n%s", job_id, traceback.format_exc())
        return []


def lower_cpu_priority(nice: int) -> None:
    """Take the CPU after an API or database on the same host: training on the CPU
    keeps every core busy, and status polls would queue behind it (BENCHMARKS.md,
    "Load"). Linux sets niceness per thread, and importing torch has already started
    threads, so each thread is set; threads started later inherit it. Never raises a
    priority the process was given."""
    if nice <= os.getpriority(os.PRIO_PROCESS, 0):
        return
    tasks = Path("/proc/self/task")
    for thread_id in [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]:
        with suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.setpriority(os.PRIO_PROCESS, thread_id, nice)


def run_worker(settings: Settings, device: str | None) -> None:
    lower_cpu_priority(settings.worker_nice)
    upgrade(settings.resolved_database_url)
    worker = Worker(settings, device=device)
    worker.install_signal_handlers()
    worker.run()
