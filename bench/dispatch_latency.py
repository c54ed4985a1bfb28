"""Dispatch latency: from POST /v1/jobs to `running`, with one idle worker.

Starts the API and one worker as separate processes (as `counterweight serve`
does) on SQLite and on Postgres, submits jobs one at a time, and reads both
ends from the database's own clock: created_at (the POST's insert) and
started_at (the claim). Jobs are sent at random moments so they land
anywhere in the worker's polling cycle.

    .venv/bin/python -m bench.dispatch_latency [--jobs 40]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from tests.databases import drop_postgres_database, new_postgres_database
from tests.processes import Service

TINY_JOB = {
    "dataset": {"name": "digits"},
    "model": {"width": 8, "depth": 1},
    "train": {"epochs": 1},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(database_url: str, jobs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as home:
        service = Service(Path(home), database_url)
        try:
            service.start_api()
            service.start_worker()
            service.wait_until_ended(service.submit(TINY_JOB))  # warm-up: imports, data cache
            latencies = []
            for _ in range(jobs):
                time.sleep(random.uniform(0.0, 0.5))
                job = service.wait_until_ended(service.submit(TINY_JOB))
                assert job["status"] == "succeeded", job
                started = datetime.fromisoformat(job["started_at"])
                created = datetime.fromisoformat(job["created_at"])
                latencies.append((started - created).total_seconds() * 1000)
            return latencies
        finally:
            service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=40)
    args = parser.parse_args()
    random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        results = {"sqlite": measure(f"sqlite:///{tmp}/bench.db", args.jobs)}
    url = new_postgres_database()
    try:
        results["postgres"] = measure(url, args.jobs)
    finally:
        drop_postgres_database(url)
    print(f"dispatch latency, POST -> running, {args.jobs} jobs, one idle worker")
    print(f"{'backend':<10} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'max ms':>8}")
    for backend, values in results.items():
        print(
            f"{backend:<10} {percentile(values, 0.5):8.1f} {percentile(values, 0.95):8.1f} "
            f"{statistics.mean(values):8.1f} {max(values):8.1f}"
        )


if __name__ == "__main__":
    main()
