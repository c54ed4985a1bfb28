"""What SQLite's synchronous=FULL (a commit is on disk before it is answered) costs
against NORMAL (synced only at checkpoints), in one run on one machine.

Two figures, each measured in `--rounds` rounds that alternate NORMAL and FULL, so
that a noisy machine weighs on both alike; medians, and FULL / NORMAL:

- submit: POST /v1/jobs to a real API process (`counterweight api`) from `--clients`
  threads, each sending as fast as it is answered; a fresh home per round.
- claim + finish: bench.queue_throughput's 8 worker processes emptying a queue.

It also prints how long an fsync takes on the disk under the temporary folder: what
FULL adds to every commit, and what decides its cost on another machine.

    .venv/bin/python -m bench.sqlite_durability [--rounds 3] [--submits 600] [--jobs 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.queue_throughput import measure
from counterweight.service.store.engine import SqliteSynchronous
from tests.processes import Service

MODES: tuple[SqliteSynchronous, ...] = ("normal", "full")
JOB = {"dataset": {"name": "digits"}, "train": {"epochs": 1}}


def submits_per_second(synchronous: SqliteSynchronous, submits: int, clients: int) -> float:
    with tempfile.TemporaryDirectory(prefix="cw-sync-") as home:
        service = Service(Path(home), f"sqlite:///{home}/counterweight.db")
        service.env["COUNTERWEIGHT_SQLITE_SYNCHRONOUS"] = synchronous
        try:
            service.start_api()
            assert service.http.post("/v1/jobs", json=JOB).status_code == 202  # warm: digits
            each = submits // clients
            failures: list[int] = []

            def client() -> None:
                with httpx.Client(base_url=service.url, timeout=60) as http:
                    for _ in range(each):
                        status = http.post("/v1/jobs", json=JOB).status_code
                        if status != 202:
                            failures.append(status)

            threads = [threading.Thread(target=client) for _ in range(clients)]
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - began
            assert not failures, failures
            return each * clients / elapsed
        finally:
            service.stop()


def claims_per_second(synchronous: SqliteSynchronous, jobs: int, workers: int) -> float:
    with tempfile.TemporaryDirectory(prefix="cw-sync-") as tmp:
        rate, claimed, duplicates = measure(f"sqlite:///{tmp}/bench.db", jobs, workers, synchronous)
    assert (claimed, duplicates) == (jobs, 0), (claimed, duplicates)
    return rate


def fsync_milliseconds(samples: int = 200) -> float:
    """Median time to write and fsync 4 KiB where the benchmark's files live: what FULL
    adds to each commit (a virtual disk whose host caches writes makes it cheap)."""
    times = []
    with tempfile.TemporaryDirectory(prefix="cw-sync-") as tmp, open(f"{tmp}/f", "wb") as out:
        for _ in range(samples):
            began = time.perf_counter()
            out.write(b"x" * 4096)
            out.flush()
            os.fsync(out.fileno())
            times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--submits", type=int, default=600)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    rates: dict[tuple[str, SqliteSynchronous], list[float]] = {}
    for round_ in range(args.rounds):
        # Alternate which mode goes first, so that neither always runs on a warmer machine.
        for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
            submit = submits_per_second(mode, args.submits, args.clients)
            claim = claims_per_second(mode, args.jobs, args.workers)
            rates.setdefault(("submit", mode), []).append(submit)
            rates.setdefault(("claim", mode), []).append(claim)
            print(f"round {round_ + 1} {mode:<6}: {submit:6.0f} submits/s {claim:6.0f} claims/s")
    print(f"\nmedians of {args.rounds} rounds; fsync of 4 KiB here: {fsync_milliseconds():.2f} ms")
    print(f"{'':<26} {'NORMAL':>8} {'FULL':>8} {'FULL / NORMAL':>14}")
    labels = {
        "submit": f"POST /v1/jobs/s, {args.clients} clients",
        "claim": f"claim + finish/s, {args.workers} procs",
    }
    for what, label in labels.items():
        normal = statistics.median(rates[(what, "normal")])
        full = statistics.median(rates[(what, "full")])
        print(f"{label:<26} {normal:8.0f} {full:8.0f} {full / normal:14.2f}")


if __name__ == "__main__":
    main()
