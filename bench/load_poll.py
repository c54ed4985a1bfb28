"""Load: 100 clients polling GET /v1/jobs/{id} for 30 s while a worker trains.

Starts the API and one worker as separate processes, makes an API key (the
clients authenticate, as in production), queues training jobs so that the
worker trains throughout, and points `wrk` (C, event loop: the load generator
must not be the bottleneck, which a Python client on these 2 cores would be)
at one of the jobs.

Each of wrk's connections is one client that polls, waits `--interval-ms`
after each answer, and polls again: 100 clients every 50 ms offer up to 2,000
requests a second, and get 1,000 or more only if answers come within ~50 ms.
`--interval-ms 0` is a closed loop (every connection asks again at once): it
measures capacity, and its latency is by Little's law connections / rate.

A Lua hook has wrk print its figures as JSON: requests per second, latency
percentiles, and errors (socket errors and non-2xx answers). Needs `wrk` on
the PATH (Debian: apt-get install wrk).

    .venv/bin/python -m bench.load_poll [--backend postgres|sqlite] [--interval-ms 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.databases import drop_postgres_database, new_postgres_database
from tests.processes import Service

# Long enough to train for the whole run (~0.3 s an epoch here with the CPU to itself).
TRAINING_JOB = {
    "dataset": {"name": "digits"},
    "model": {"arch": "mlp", "width": 512, "depth": 3},
    "train": {"epochs": 1000, "batch_size": 32},
}

REPORT_LUA = """
local interval_ms = tonumber(os.getenv("POLL_INTERVAL_MS") or "0")
if interval_ms > 0 then
  delay = function() return interval_ms end
end
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, ' ..
    '"max_ms": %.3f, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"timeouts": %d, "non_2xx": %d}\\n',
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3,
    errors.connect, errors.read, errors.write, errors.timeout, errors.status))
end
"""


def run_wrk(
    url: str, *, key: str, connections: int, seconds: int, threads: int, interval_ms: int
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(REPORT_LUA)
    try:
        command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", script.name]
        command += ["-H", f"Authorization: Bearer {key}", url]
        env = {**os.environ, "POLL_INTERVAL_MS": str(interval_ms)}
        out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    finally:
        os.unlink(script.name)
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    figures["requests_per_second"] = round(figures["requests"] / figures["seconds"], 1)
    figures["errors"] = sum(
        figures[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts", "non_2xx")
    )
    return figures


def create_key(service: Service) -> str:
    made = subprocess.run(
        [sys.executable, "-m", "counterweight.service.cli", "keys", "create", "--tenant", "bench"],
        env=service.env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = made.stdout.strip()
    service.http.headers["Authorization"] = f"Bearer {key}"
    return key


def epoch(job: dict[str, Any]) -> int:
    return int((job["progress"] or {}).get("epoch", 0))


def measure(database_url: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        service = Service(Path(home), database_url)
        try:
            key = create_key(service)
            service.start_api(processes=args.api_processes)
            service.start_worker()
            ids = [service.submit(TRAINING_JOB) for _ in range(2)]
            service.wait_for(ids[0], lambda job: job["status"] == "running", timeout=120)
            time.sleep(2)  # into the first epochs, heartbeats and all
            epoch_before = epoch(service.job(ids[0]))
            figures = run_wrk(
                f"{service.url}/v1/jobs/{ids[0]}",
                key=key,
                connections=args.connections,
                seconds=args.seconds,
                threads=args.threads,
                interval_ms=args.interval_ms,
            )
            after = service.job(ids[0])
            figures["job_status_after"] = after["status"]
            figures["epochs_trained_during_run"] = epoch(after) - epoch_before
            return figures
        finally:
            service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="wrk's threads")
    parser.add_argument("--api-processes", type=int, default=1)
    parser.add_argument(
        "--interval-ms",
        type=int,
        default=50,
        help="each client's pause between an answer and its next poll; 0: a closed loop",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    if args.backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            figures = measure(f"sqlite:///{tmp}/load.db", args)
    else:
        url = new_postgres_database()
        try:
            figures = measure(url, args)
        finally:
            drop_postgres_database(url)
    run = {"backend": args.backend, "api_processes": args.api_processes}
    run["connections"] = args.connections
    print(json.dumps({**run, "interval_ms": args.interval_ms, **figures}))


if __name__ == "__main__":
    main()
