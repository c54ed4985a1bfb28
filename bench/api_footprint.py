"""The API process's footprint: how long importing the app takes, and its resident memory
at start, after admitting jobs, and after its first predict (which loads torch).

- import: `python -c "import <app module>"` in a fresh interpreter, timed inside it
  (interpreter start-up excluded), `--imports` times; the median and the range. The
  same for the frameworks the app is built on alone (FRAMEWORKS): the floor no
  layout of ours can go below.
- memory: a real `counterweight api` on an empty SQLite home; VmRSS of its process
  (from /proc) once /readyz answers, after validating and submitting a digits job
  with every arch, and after one predict on a job a worker trained (1 epoch).

`--cli-module` and `--app-module` point it at another checkout's names (the layout
before the restructure was `service.cli` and `service.api.app`), run from that
checkout with PYTHONPATH set to it, so that before and after are measured alike.

    .venv/bin/python -m bench.api_footprint [--imports 7] [--no-predict]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ARCHS = ({"arch": "mlp"}, {"arch": "small_cnn"}, {"arch": "resnet18"}, {"arch": "resnet32"})
FRAMEWORKS = "fastapi.responses, sqlalchemy.orm, pydantic_settings, prometheus_client, numpy"


def import_seconds(modules: str, runs: int) -> list[float]:
    code = f"import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        times.append(float(out.stdout))
    return times


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def torch_loaded(pid: int) -> bool:
    """Whether the process has mapped torch's shared library."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def wait_ready(http: httpx.Client, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the API exited")
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the API did not start")


def measure_memory(cli_module: str, predict: bool) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="cw-footprint-"))
    env = {**os.environ, "COUNTERWEIGHT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    port = 18000 + os.getpid() % 1000
    command = [sys.executable, "-m", cli_module]
    log = (home / "api.log").open("wb")
    api = subprocess.Popen(
        [*command, "api", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    figures: dict[str, Any] = {}
    worker = None
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            started = time.monotonic()
            wait_ready(http, api)
            figures["start_seconds"] = round(time.monotonic() - started, 2)
            figures["rss_at_start_mib"] = round(rss_mib(api.pid), 1)
            for model in ARCHS:
                spec = {"dataset": {"name": "digits"}, "model": model, "train": {"epochs": 1}}
                assert http.post("/v1/jobs/validate", json=spec).status_code == 200
                assert http.post("/v1/jobs", json=spec).status_code == 202
            figures["rss_after_submits_mib"] = round(rss_mib(api.pid), 1)
            figures["torch_before_predict"] = torch_loaded(api.pid)
            if predict:
                spec = {"dataset": {"name": "digits"}, "train": {"epochs": 1}, "priority": 1}
                job = http.post("/v1/jobs", json=spec).json()["id"]
                worker = subprocess.Popen(
                    [*command, "worker", "--device", "cpu"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                while http.get(f"/v1/jobs/{job}").json()["status"] != "succeeded":
                    time.sleep(0.2)
                body = {"inputs": [[[[0.5] * 8] * 8]]}
                assert http.post(f"/v1/jobs/{job}/predict", json=body).status_code == 200
                figures["rss_after_predict_mib"] = round(rss_mib(api.pid), 1)
                figures["torch_after_predict"] = torch_loaded(api.pid)
    finally:
        for proc in (api, worker):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=60)
        log.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cli-module", default="counterweight.service.cli")
    parser.add_argument("--app-module", default="counterweight.service.api.app")
    parser.add_argument("--imports", type=int, default=7)
    parser.add_argument("--no-predict", action="store_true")
    args = parser.parse_args()
    times = import_seconds(args.app_module, args.imports)
    floor = import_seconds(FRAMEWORKS, args.imports)
    result = {
        "app_module": args.app_module,
        "import_seconds_median": round(statistics.median(times), 3),
        "import_seconds_range": [round(min(times), 3), round(max(times), 3)],
        "frameworks_import_seconds_median": round(statistics.median(floor), 3),
        **measure_memory(args.cli_module, predict=not args.no_predict),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
