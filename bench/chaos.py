"""Chaos: workers SIGKILLed at random and restarted, the API and Postgres restarted once.

Submits short training jobs, then until all have ended: every few seconds
SIGKILLs a worker that is running a job and starts a replacement at once
(every other kill aims at a worker whose job has checkpointed an epoch, so that
resuming is exercised for sure); once the first job has succeeded, restarts
the database server and then the API (SIGKILL, then a new process on the same
port), while most jobs still run.
Postgres runs as a private server of this run (initdb in a temporary folder,
on a free port), so that restarting it disturbs no one else's databases.

At the end the database says whether every job succeeded exactly once (one
`succeeded` status event each), none was lost or stuck, and every job that lost
a worker after checkpointing an epoch resumed from its checkpoint.

    .venv/bin/python -m bench.chaos [--backend postgres|sqlite|both] [--jobs 30]

`--fault filesystem` runs another fault instead: the home's file system failing
while clients submit and upload (bench.chaos_filesystem).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.store.engine import make_engine, make_session_factory
from counterweight.service.store.models import Job, JobEvent, JobStatus, WorkerRecord
from tests.processes import Service, free_port


def chaos_job(epochs: int) -> dict[str, Any]:
    """A job of a few seconds an epoch on a busy 2-core machine: kills land mid-job."""
    return {
        "dataset": {"name": "digits"},
        "model": {"arch": "mlp", "width": 128, "depth": 2},
        "train": {"epochs": epochs, "batch_size": 32, "seed": 1},
        # The default 3 attempts: a kill after the job checkpointed an epoch costs none
        # (DESIGN.md section 2), so a job is not failed for the kills it survives.
    }


# Short leases so that a killed worker's job is back on the queue within seconds.
SETTINGS = {
    "lease_seconds": "4",
    "heartbeat_seconds": "0.5",
    "sweep_seconds": "0.5",
    "retry_backoff_seconds": "0.5",
}


MAX_KILLS_PER_JOB = 2


class PrivatePostgres:
    """A Postgres server of our own in a temporary folder, started and restarted with
    pg_ctl. As root, its commands run as the `postgres` user (initdb refuses root)."""

    def __init__(self, root: Path) -> None:
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        self._bindir = Path(bindir)
        self.datadir = root / "pgdata"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_user: list[str] = []
        self.datadir.mkdir()
        if os.geteuid() == 0:
            root.chmod(0o755)  # the postgres user must reach its data folder
            shutil.chown(self.datadir, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _pg_ctl(self, *command: str) -> None:
        # The server's output goes to its log file, never to a pipe of ours: a server
        # holding our pipe open would keep subprocess.run waiting for ever.
        log = str(self.datadir / "server.log")
        subprocess.run(
            [
                *self._as_user,
                str(self._bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                log,
                *command,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        subprocess.run(
            [
                *self._as_user,
                str(self._bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
            ],
            check=True,
            capture_output=True,
        )
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1"
        self._pg_ctl("-o", options, "-w", "start")

    def restart(self) -> None:
        # fast: every client connection is cut, as when a server restarts for real.
        self._pg_ctl("-m", "fast", "-w", "restart")

    def stop(self) -> None:
        self._pg_ctl("-m", "immediate", "-w", "stop")


@dataclass
class ChaosReport:
    backend: str
    workers: int
    jobs: int
    succeeded: int = 0
    lost: int = 0  # ended otherwise, or never ended
    duplicates: int = 0  # jobs that reported success more than once
    kills: int = 0
    worker_restarts: int = 0
    worker_exits: int = 0  # workers that ended without being killed: should be none
    api_restarts: int = 0
    database_restarts: int = 0
    attempts: int = 0  # over all jobs; 1 per job is a run without any interruption
    jobs_interrupted: int = 0  # more than one attempt
    killed_after_checkpoint: int = 0  # an earlier attempt had finished an epoch
    resumed_from_checkpoint: int = 0  # ... and the last attempt started from it
    incomplete_history: int = 0  # a job whose per-epoch history is not 1..epochs
    api_mismatches: int = 0  # succeeded in the database, not so through the API
    wall_seconds: float = 0.0


def _status_counts(sessions: sessionmaker[Session]) -> Counter[str] | None:
    """Jobs by status, or None while the database is away (it is being restarted)."""
    try:
        with sessions() as session:
            return Counter(status.value for status in session.scalars(select(Job.status)))
    except SQLAlchemyError:
        return None


def _at_work(sessions: sessionmaker[Session], *, checkpointed: bool) -> list[tuple[int, str]]:
    """(pid, job id) of the workers in the registry that are running a job; with
    `checkpointed`, only those whose job has finished an epoch. Empty while the
    database is away."""
    try:
        with sessions() as session:
            rows = session.execute(
                select(WorkerRecord.pid, Job.id, Job.progress)
                .join(Job, Job.id == WorkerRecord.current_job_id)
                .where(WorkerRecord.stopped_at.is_(None), Job.status == JobStatus.running)
            ).all()
    except SQLAlchemyError:
        return []
    return [
        (pid, job_id)
        for pid, job_id, progress in rows
        if not checkpointed or (progress or {}).get("epoch", 0) >= 1
    ]


class Chaos:
    def __init__(self, service: Service, report: ChaosReport, sessions: sessionmaker[Session]):
        self.service = service
        self.report = report
        self.sessions = sessions
        self.workers = [service.start_worker() for _ in range(report.workers)]
        self.kills_per_job: Counter[str] = Counter()

    def kill_one_worker(self, *, aim: bool) -> bool:
        """SIGKILL a worker that is running a job (one still starting up has nothing
        to lose) and start another; False if there is none to kill. A job is hit at
        most MAX_KILLS_PER_JOB times, so that on a slow machine, where an epoch can
        outlast the time between kills, every job still gets to the end."""
        by_pid = {proc.pid: proc for proc in self.workers if proc.poll() is None}
        candidates = [
            (by_pid[pid], job_id)
            for pid, job_id in _at_work(self.sessions, checkpointed=aim)
            if pid in by_pid and self.kills_per_job[job_id] < MAX_KILLS_PER_JOB
        ]
        if not candidates:
            return False
        victim, job_id = random.choice(candidates)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.kills_per_job[job_id] += 1
        self.report.kills += 1
        self._replace(victim)
        return True

    def replace_exited_workers(self) -> None:
        for proc in [p for p in self.workers if p.poll() is not None]:
            self.report.worker_exits += 1
            self._replace(proc)

    def _replace(self, proc: subprocess.Popen[bytes]) -> None:
        self.workers.remove(proc)
        self.workers.append(self.service.start_worker())
        self.report.worker_restarts += 1

    def restart_api(self) -> None:
        api = next(p for p in self.service.processes if "api" in p.args)
        api.send_signal(signal.SIGKILL)
        api.wait()
        self.service.processes.remove(api)
        self.service.start_api()
        self.report.api_restarts += 1


def _check(report: ChaosReport, sessions: sessionmaker[Session], epochs: int) -> None:
    with sessions() as session:
        jobs = session.scalars(select(Job)).all()
        events = session.scalars(select(JobEvent).order_by(JobEvent.job_id, JobEvent.seq)).all()
    by_job: dict[str, list[JobEvent]] = {}
    for event in events:
        by_job.setdefault(event.job_id, []).append(event)
    for job in jobs:
        report.attempts += job.attempt
        report.jobs_interrupted += job.attempt > 1
        if job.status != JobStatus.succeeded:
            report.lost += 1
            continue
        report.succeeded += 1
        mine = by_job.get(job.id, [])
        successes = [e for e in mine if e.type == "status" and e.data["status"] == "succeeded"]
        report.duplicates += len(successes) > 1
        assert job.result is not None
        history = [row["epoch"] for row in job.result["history"]]
        report.incomplete_history += history != list(range(1, epochs + 1))
        # Events before the last attempt's start: did an earlier attempt finish an epoch?
        starts = [
            i for i, e in enumerate(mine) if e.type == "status" and e.data["status"] == "running"
        ]
        earlier = mine[: starts[-1]] if starts else []
        if any(e.type == "epoch" for e in earlier):
            report.killed_after_checkpoint += 1
            report.resumed_from_checkpoint += job.result.get("resumed_from_epoch", 0) >= 1


@contextmanager
def _database(backend: str, root: Path) -> Iterator[tuple[str, PrivatePostgres | None]]:
    if backend == "sqlite":
        yield f"sqlite:///{root / 'chaos.db'}", None
        return
    server = PrivatePostgres(root)
    server.start()
    try:
        yield server.url, server
    finally:
        server.stop()


def run_chaos(
    backend: str,
    *,
    workers: int,
    jobs: int,
    epochs: int = 4,
    kill_every: tuple[float, float] = (2.0, 5.0),
    timeout: float = 900.0,
) -> ChaosReport:
    report = ChaosReport(backend=backend, workers=workers, jobs=jobs)
    root = Path(tempfile.mkdtemp(prefix="cw-chaos-"))
    started = time.monotonic()
    try:
        with _database(backend, root) as (url, postgres):
            home = root / "home"
            home.mkdir()
            service = Service(home, url, **SETTINGS)
            engine = make_engine(url)
            sessions = make_session_factory(engine)
            try:
                service.start_api()
                ids = [service.submit(chaos_job(epochs)) for _ in range(jobs)]
                chaos = Chaos(service, report, sessions)
                _unleash(chaos, postgres, jobs, kill_every, started + timeout)
                _check(report, sessions, epochs)
                # The API that came back serves every job as the database has it.
                served = Counter(service.job(job_id)["status"] for job_id in ids)
                report.api_mismatches = jobs - served["succeeded"] - report.lost
            finally:
                service.stop()
                engine.dispose()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.wall_seconds = round(time.monotonic() - started, 1)
    return report


def _unleash(
    chaos: Chaos,
    postgres: PrivatePostgres | None,
    jobs: int,
    kill_every: tuple[float, float],
    deadline: float,
) -> None:
    """Kill, restart and replace until every job has ended or the deadline passed."""
    next_kill = time.monotonic() + random.uniform(*kill_every)
    aim = True
    # The database once the first job has succeeded, the API at the next look after
    # that (SQLite: at the first success): early, while jobs still run, because a
    # restart scheduled for later may never come: the last jobs run side by side
    # and can all end between two looks (or while the API restarts).
    while time.monotonic() < deadline:
        counts = _status_counts(chaos.sessions)
        if counts is not None:
            done = counts["succeeded"]
            if sum(counts[s.value] for s in JobStatus if s.is_terminal) == jobs:
                return
            if postgres is not None and done >= 1 and chaos.report.database_restarts == 0:
                postgres.restart()
                chaos.report.database_restarts += 1
            elif done >= 1 and chaos.report.api_restarts == 0:
                chaos.restart_api()
        # Every other kill aims at a job with a checkpoint, so resuming is exercised.
        if time.monotonic() >= next_kill and chaos.kill_one_worker(aim=aim):
            aim = not aim
            next_kill = time.monotonic() + random.uniform(*kill_every)
        chaos.replace_exited_workers()
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--fault",
        choices=["kills", "filesystem"],
        default="kills",
        help="kills: the run above; filesystem: the home's file system fails under "
        "clients that submit and upload (bench.chaos_filesystem; root only)",
    )
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--synchronous",
        choices=["full", "normal", "both"],
        default="both",
        help="filesystem: SQLite's synchronous pragma (full, the default, or normal)",
    )
    args = parser.parse_args()
    random.seed(args.seed)
    if args.fault == "filesystem":
        from bench.chaos_filesystem import run_filesystem_fault

        modes = ["full", "normal"] if args.synchronous == "both" else [args.synchronous]
        for mode in modes:
            fs_report = run_filesystem_fault(synchronous=mode)
            print(json.dumps(dataclasses.asdict(fs_report)), flush=True)
        return
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    for backend in backends:
        workers = 3 if backend == "postgres" else 2
        report = run_chaos(backend, workers=workers, jobs=args.jobs, epochs=args.epochs)
        print(json.dumps(dataclasses.asdict(report)), flush=True)


if __name__ == "__main__":
    main()
