"""Claims per second with 8 concurrent worker processes, and a duplicate check.

Each process claims and finishes jobs (no training) until the queue is empty;
the clock runs from a shared start barrier, so process start-up is not counted.

    .venv/bin/python -m bench.queue_throughput [--jobs 4000] [--workers 8]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from multiprocessing.synchronize import Barrier

from sqlalchemy import func, select

from counterweight.service.spec import JobSpec
from counterweight.service.store.engine import (
    SqliteSynchronous,
    make_engine,
    make_session_factory,
    transaction,
    upgrade,
)
from counterweight.service.store.models import Job
from counterweight.service.store.queue.claim import claim
from counterweight.service.store.queue.enqueue import enqueue
from counterweight.service.store.queue.lease import Lease, finish
from tests.databases import drop_postgres_database, new_postgres_database


def claim_until_empty(
    url: str, name: str, start: Barrier, out: mp.Queue[list[str]], synchronous: SqliteSynchronous
) -> None:
    sessions = make_session_factory(make_engine(url, sqlite_synchronous=synchronous))
    claimed = []
    start.wait()
    while True:
        with transaction(sessions) as session:
            job = claim(session, worker_id=name, lease_seconds=60)
            if job is None:
                break
            finish(session, Lease.of(job), result={})
        claimed.append(job.id)
    out.put(claimed)


def measure(
    url: str, jobs: int, workers: int, synchronous: SqliteSynchronous = "full"
) -> tuple[float, int, int]:
    """(claims per second, jobs claimed, duplicates); `synchronous`: SQLite's pragma."""
    upgrade(url)
    sessions = make_session_factory(make_engine(url, sqlite_synchronous=synchronous))
    spec = JobSpec.model_validate({"dataset": {"name": "digits"}})
    with transaction(sessions) as session:
        for _ in range(jobs):
            enqueue(session, spec)
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(workers + 1)
    out: mp.Queue[list[str]] = ctx.Queue()
    procs = [
        ctx.Process(target=claim_until_empty, args=(url, f"w{i}", start, out, synchronous))
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    start.wait()
    began = time.perf_counter()
    claimed = [job_id for _ in procs for job_id in out.get()]
    elapsed = time.perf_counter() - began
    for proc in procs:
        proc.join()
    with transaction(sessions) as session:
        finished = session.scalar(select(func.count()).where(Job.status == "succeeded"))
    assert finished == jobs, (finished, jobs)
    return len(claimed) / elapsed, len(claimed), len(claimed) - len(set(claimed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = measure(f"sqlite:///{tmp}/bench.db", args.jobs, args.workers)
    url = new_postgres_database()
    try:
        results["postgres"] = measure(url, args.jobs, args.workers)
    finally:
        drop_postgres_database(url)
    print(f"claim + finish, {args.workers} worker processes, {args.jobs} jobs")
    print(f"{'backend':<10} {'claims/s':>9} {'claimed':>8} {'duplicates':>11}")
    for backend, (rate, claimed, duplicates) in results.items():
        print(f"{backend:<10} {rate:9.0f} {claimed:8d} {duplicates:11d}")


if __name__ == "__main__":
    main()
