"""Chaos on the artifact store: the S3 server refused (killed) or hung (SIGSTOP) while
workers claim jobs, checkpoint them and store their results.

An API and N workers, each process on its own home (its own disk), share a database
(SQLite, or a private Postgres server as in bench.chaos) and an S3-compatible server
(moto's, in its own process). Two short seed jobs run first, undisturbed (their logs
shipped too), so that the store holds finished jobs' cards that the API has never read.
Then three outages of `outage` seconds each, all of one mode (`refused`: the server is
SIGKILLed and a new one started on the same port afterwards, its bucket empty, since
moto keeps objects in memory; `hung`: SIGSTOP, then SIGCONT):

- claims: the store fails, then the jobs are submitted; every worker claims one and
  must fetch its checkpoint;
- checkpoints: once a job has checkpointed an epoch and still trains;
- results: once a job trains its last epoch, so that its final checkpoint and its
  results meet the outage.

Throughout, three probe threads ask the API for /healthz, /readyz and a job's status
every 0.2 s, and during each outage `card_clients` threads ask for the seed jobs' model
cards, which the API has to read from the store (the issue's attack: 45 of them hung
every API thread). At the end the database says whether every job succeeded and how
many attempts went on the outages (attempts beyond the first that counted; the store
is the only fault here).

    .venv/bin/python -m bench.chaos_store [--backend sqlite|postgres|both]
        [--mode refused|hung|both] [--jobs 6] [--outage 20] [--card-clients 45]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bench.chaos import SETTINGS, _database
from counterweight.service.store.engine import make_engine, make_session_factory
from counterweight.service.store.models import Job, JobStatus
from tests.processes import Service
from tests.s3server import S3Server

MOMENTS = ("claims", "checkpoints", "results")
# Beats often enough that a job's epoch is seen while it trains it: an outage is aimed
# at a job's next checkpoint, or at its results, from its reported epoch.
HOSTS = {**SETTINGS, "heartbeat_seconds": "0.25"}


def store_job(epochs: int) -> dict[str, Any]:
    """Epochs of a second or more on an idle 2-core machine (bench.chaos's job takes a
    fraction of one there): long enough for an outage to be aimed inside one."""
    return {
        "dataset": {"name": "digits"},
        "model": {"arch": "mlp", "width": 256, "depth": 2},
        "train": {"epochs": epochs, "batch_size": 8, "seed": 1},
    }


PROBES = ("/healthz", "/readyz", "status")
PROBE_EVERY = 0.2
PROBE_TIMEOUT = 30.0


@dataclass
class Window:
    moment: str
    started: float  # monotonic
    ended: float = 0.0
    jobs_waiting: int = 0  # jobs whose `waiting` named the store during the outage
    # store back -> none of those jobs waits for it any more (None: the next outage came first)
    recovery_seconds: float | None = None


@dataclass
class StoreChaosReport:
    backend: str
    mode: str
    workers: int
    jobs: int
    outage_seconds: float
    succeeded: int = 0
    lost: int = 0  # not succeeded at the end: should be none
    attempts: int = 0
    forgiven_attempts: int = 0  # given back by a worker stopped while it waited
    attempts_spent_on_outages: int = 0  # counted attempts beyond the first: should be none
    outages: list[dict[str, Any]] = field(default_factory=list)
    # During the outages: per probe, answers, median and slowest seconds, failures
    # (no answer within PROBE_TIMEOUT, or not 200).
    latency_during_outages: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_otherwise: dict[str, dict[str, float]] = field(default_factory=dict)
    card_answers: dict[str, int] = field(default_factory=dict)  # status -> count
    card_slowest_seconds: float = 0.0
    wall_seconds: float = 0.0


class Sampler(threading.Thread):
    """Asks one URL again and again, noting (when, seconds, status; 0 = no answer)."""

    def __init__(self, url: str, path: str, stop: threading.Event, every: float) -> None:
        super().__init__(daemon=True)
        self.url, self.path, self.stop, self.every = url, path, stop, every
        self.samples: list[tuple[float, float, int]] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=PROBE_TIMEOUT) as http:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    status = http.get(self.path).status_code
                except httpx.HTTPError:
                    status = 0
                self.samples.append((started, time.monotonic() - started, status))
                self.stop.wait(self.every)


class StoreChaos:
    def __init__(self, report: StoreChaosReport, root: Path, url: str) -> None:
        self.report = report
        self.root = root
        self.store = S3Server(root)
        self.windows: list[Window] = []
        self.card_samplers: list[Sampler] = []
        self.waiting: list[tuple[float, set[str]]] = []  # (when, jobs waiting for the store)
        self.engine = make_engine(url)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        self.url = url

    def host(self, name: str) -> Service:
        home = self.root / name
        home.mkdir()
        return Service(home, self.url, **HOSTS, **self.store.settings())

    def fail_store(self) -> None:
        if self.report.mode == "refused":
            self.store.kill()
        else:
            self.store.pause()

    def restore_store(self) -> None:
        if self.report.mode == "refused":
            self.store.restart()
        else:
            self.store.resume()

    def jobs(self) -> list[Job]:
        try:
            with self.sessions() as session:
                return list(session.scalars(select(Job)))
        except SQLAlchemyError:
            return []

    def watch(self, stop: threading.Event) -> None:
        """Note every 0.2 s which jobs wait for the store (a thread of its own, so that
        an outage's recovery is measured while the run goes on to the next moment), and
        once more at the end of the run."""
        while True:
            stopping = stop.wait(0.2)
            waiting = {job.id for job in self.jobs() if _waits_for_store(job)}
            self.waiting.append((time.monotonic(), waiting))
            if stopping:
                return

    def outage(self, moment: str, api: Service, seeds: list[str], cards: int) -> None:
        window = Window(moment, time.monotonic())
        self.windows.append(window)
        stop = threading.Event()
        paths = [f"/v1/jobs/{seeds[i % len(seeds)]}/model/card" for i in range(cards)]
        # Each asks again a second after its answer: clients retrying, not a flood.
        samplers = [Sampler(api.url, path, stop, 1.0) for path in paths]
        for sampler in samplers:
            sampler.start()
        time.sleep(self.report.outage_seconds)
        self.restore_store()
        window.ended = time.monotonic()
        stop.set()
        for sampler in samplers:
            sampler.join()
        self.card_samplers += samplers

    def wait_until(self, done: Callable[[list[Job]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(self.jobs()):
                return True
            time.sleep(0.2)
        return False

    def settle_windows(self) -> None:
        """Each outage's jobs that waited for the store, and how long after its end until
        none of them did; None if the next outage began first."""
        for k, window in enumerate(self.windows):
            later = self.windows[k + 1 :]
            until = later[0].started if later else float("inf")
            during = [ids for when, ids in self.waiting if window.started <= when <= window.ended]
            waited: set[str] = set().union(*during)
            window.jobs_waiting = len(waited)
            back = [w for w, ids in self.waiting if window.ended < w < until and not ids & waited]
            if back:
                window.recovery_seconds = round(back[0] - window.ended, 1)


def _wait_until_log_shipped(api: Service, job_id: str) -> None:
    """Until the job's log is whole in the store. Its worker copies it once more after
    the job ended (workers.job_logs) and waits for that copy before it claims again: an
    outage that began meanwhile would hold the worker for as long as the S3 client's
    timeouts, and its first claim would come after the claims outage ended."""

    def shipped(_job: dict[str, Any]) -> bool:
        logs = api.http.get(f"/v1/jobs/{job_id}/logs").json()
        return bool(logs["attempts"]) and all(a["complete"] for a in logs["attempts"])

    api.wait_for(job_id, shipped, timeout=60)


def _waits_for_store(job: Job) -> bool:
    return job.status != JobStatus.queued and "artifact store" in (job.waiting or "")


def _epoch(job: Job) -> int:
    epoch = (job.progress or {}).get("epoch", 0)
    return epoch if isinstance(epoch, int) else 0


def run_store_chaos(
    backend: str,
    *,
    mode: str,
    workers: int = 2,
    jobs: int = 6,
    epochs: int = 3,
    outage: float = 20.0,
    card_clients: int = 45,
    timeout: float = 600.0,
) -> StoreChaosReport:
    report = StoreChaosReport(backend, mode, workers, jobs, outage)
    root = Path(tempfile.mkdtemp(prefix="cw-store-chaos-"))
    started = time.monotonic()
    try:
        with _database(backend, root) as (url, _postgres):
            _run(report, root, url, epochs, card_clients, timeout)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.wall_seconds = round(time.monotonic() - started, 1)
    return report


def _run(
    report: StoreChaosReport, root: Path, url: str, epochs: int, cards: int, timeout: float
) -> None:
    chaos = StoreChaos(report, root, url)
    hosts: list[Service] = []
    stop = threading.Event()
    probes: list[Sampler] = []
    threads: list[threading.Thread] = []
    with chaos.store:
        try:
            api = chaos.host("api")
            hosts.append(api)
            api.start_api()
            for i in range(report.workers):
                hosts.append(chaos.host(f"worker{i}"))
                hosts[-1].start_worker()
            seeds = [api.submit(store_job(1)) for _ in range(2)]
            for seed in seeds:
                assert api.wait_until_ended(seed, timeout=300)["status"] == "succeeded"
                _wait_until_log_shipped(api, seed)
            probes = [
                Sampler(api.url, path if path != "status" else f"/v1/jobs/{seeds[0]}", stop, 0.2)
                for path in PROBES
            ]
            threads = [*probes, threading.Thread(target=chaos.watch, args=(stop,), daemon=True)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + timeout

            chaos.fail_store()  # claims: every worker takes a job and needs the store
            ids = [api.submit(store_job(epochs)) for _ in range(report.jobs)]
            chaos.outage("claims", api, seeds, cards)

            def ours(jobs: list[Job]) -> list[Job]:
                return [job for job in jobs if job.id in ids]

            # With 5 epochs or more, each moment spans two epochs: seen however fast they go.
            def training(jobs: list[Job]) -> bool:  # checkpoints are coming
                running = [j for j in ours(jobs) if j.status == JobStatus.running]
                return any(1 <= _epoch(job) <= max(1, epochs - 3) for job in running)

            def last_epoch(jobs: list[Job]) -> bool:  # its results are coming
                running = [j for j in ours(jobs) if j.status == JobStatus.running]
                return any(_epoch(job) >= max(2, epochs - 2) for job in running)

            def ended(jobs: list[Job]) -> bool:
                return all(JobStatus(job.status).is_terminal for job in ours(jobs))

            def coming_or_ended(coming: Callable[[list[Job]], bool]) -> Callable[[list[Job]], bool]:
                # Every job may have ended before the moment came (failed, as before the fix).
                return lambda jobs: coming(jobs) or ended(jobs)

            for moment, coming in (("checkpoints", training), ("results", last_epoch)):
                came = chaos.wait_until(coming_or_ended(coming), deadline - time.monotonic())
                if came and not ended(chaos.jobs()):
                    chaos.fail_store()
                    chaos.outage(moment, api, seeds, cards)

            chaos.wait_until(ended, deadline - time.monotonic())
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            for host in hosts:
                host.stop()
    chaos.settle_windows()
    _check(report, chaos, ids, probes)
    chaos.engine.dispose()


def _summary(samples: list[tuple[float, float, int]]) -> dict[str, float]:
    if not samples:
        return {"answers": 0}
    seconds = [s for _, s, _ in samples]
    return {
        "answers": len(samples),
        "median_seconds": round(statistics.median(seconds), 4),
        "slowest_seconds": round(max(seconds), 3),
        "failed": sum(status != 200 for _, _, status in samples),
    }


def _check(
    report: StoreChaosReport, chaos: StoreChaos, ids: list[str], probes: list[Sampler]
) -> None:
    for job in chaos.jobs():
        if job.id not in ids:
            continue
        report.attempts += job.attempt
        report.forgiven_attempts += job.forgiven_attempts
        report.attempts_spent_on_outages += max(0, job.attempt - job.forgiven_attempts - 1)
        report.succeeded += job.status == JobStatus.succeeded
        report.lost += job.status != JobStatus.succeeded
    for window in chaos.windows:
        outage = dataclasses.asdict(window)
        outage["seconds"] = round(window.ended - window.started, 1)
        del outage["started"], outage["ended"]
        report.outages.append(outage)

    def during(when: float) -> bool:
        return any(w.started <= when <= w.ended for w in chaos.windows)

    for name, probe in zip(PROBES, probes, strict=True):
        report.latency_during_outages[name] = _summary([s for s in probe.samples if during(s[0])])
        report.latency_otherwise[name] = _summary([s for s in probe.samples if not during(s[0])])
    cards = [s for sampler in chaos.card_samplers for s in sampler.samples]
    report.card_answers = dict(sorted(Counter(str(status) for _, _, status in cards).items()))
    report.card_slowest_seconds = round(max((s for _, s, _ in cards), default=0.0), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--mode", choices=["refused", "hung", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--outage", type=float, default=20.0, help="seconds each")
    parser.add_argument("--card-clients", type=int, default=45)
    args = parser.parse_args()
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    modes = ["refused", "hung"] if args.mode == "both" else [args.mode]
    for backend in backends:
        for mode in modes:
            report = run_store_chaos(
                backend,
                mode=mode,
                workers=args.workers,
                jobs=args.jobs,
                epochs=args.epochs,
                outage=args.outage,
                card_clients=args.card_clients,
            )
            print(json.dumps(dataclasses.asdict(report)), flush=True)


if __name__ == "__main__":
    main()
